"""What one register call asks for, and what it gets where it asks for nothing.

Three callers register a model: the management API (`POST /models`), a snapshot being
restored and `load_models`. Each fills a `Registration`; a setting left as None comes from
the archive's model-config YAML (`configFile` in the manifest), else from the engine's
defaults, in the order TorchServe applies them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import EngineConfig
from . import params
from .errors import ApiError, bad_request

log = logging.getLogger("jupyter_torchserve.engine")


@dataclass(frozen=True)
class Registration:
    url: str
    model_name: str | None = None
    handler: str | None = None
    runtime: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    max_workers: int | None = None
    synchronous: bool = True
    response_timeout: float | None = None
    startup_timeout: float | None = None
    device_type: str | None = None
    loaded_at_startup: bool = False
    make_default: bool = False  # a restored snapshot's default is in place before any worker


@dataclass(frozen=True)
class Settings:
    """A version's settings once the YAML and the defaults have filled the gaps; min and
    max workers are the ones to start with (scale changes the version's own later)."""

    batch_size: int
    max_batch_delay: int
    response_timeout: float
    startup_timeout: float
    device_type: str | None
    min_workers: int
    max_workers: int


def resolve(reg: Registration, yaml_cfg: dict[str, Any], config: EngineConfig) -> Settings:
    """Every number checked (params.py), wherever it came from: a snapshot or a YAML file
    is as much outside input as a query string."""

    def pick(name: str, yaml_key: str, default: Any, parse: Any) -> Any:
        value = getattr(reg, name)
        if value is not None:
            return parse(params.YAML_KEYS.get(yaml_key, name), value)
        if yaml_key in yaml_cfg:
            try:
                return parse(params.YAML_KEYS[yaml_key], yaml_cfg[yaml_key])
            except ApiError as e:
                raise bad_request(f"In the model config, {yaml_key}: {e.message}") from None
        return default

    # TorchServe's documented REST default is 0: a client that registers and then scales
    # gets what it asked for. Start-up models take default_workers_per_model.
    default = config.default_workers_per_model if reg.loaded_at_startup else 0
    workers = pick("initial_workers", "minWorkers", default, params.integer)
    most = pick("max_workers", "maxWorkers", workers, params.integer)
    return Settings(
        batch_size=pick("batch_size", "batchSize", config.batch_size, params.integer),
        max_batch_delay=pick(
            "max_batch_delay", "maxBatchDelay", config.max_batch_delay, params.integer
        ),
        response_timeout=pick(
            "response_timeout", "responseTimeout", config.default_response_timeout, params.seconds
        ),
        startup_timeout=pick(
            "startup_timeout", "startupTimeout", config.default_startup_timeout, params.seconds
        ),
        device_type=reg.device_type or yaml_cfg.get("deviceType"),
        min_workers=workers,
        max_workers=max(workers, most),
    )


def model_yaml(model_dir: str, config_file: str | None) -> dict[str, Any]:
    """Frontend keys of an archive's model-config YAML (minWorkers, batchSize, ...)."""
    if not config_file:
        return {}
    path = Path(model_dir) / config_file
    try:
        import yaml
    except ImportError:
        log.warning("%s needs PyYAML to be read; its settings are ignored", config_file)
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise bad_request(f"Cannot read the model config {config_file}: {e}") from None
    return data if isinstance(data, dict) else {}
