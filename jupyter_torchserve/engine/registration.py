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
from .errors import bad_request

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
    workers = reg.initial_workers
    if workers is None:
        # TorchServe's documented REST default is 0: a client that registers and then
        # scales gets what it asked for. Start-up models take default_workers_per_model.
        default = config.default_workers_per_model if reg.loaded_at_startup else 0
        workers = int(yaml_cfg.get("minWorkers", default))
    most = (
        reg.max_workers if reg.max_workers is not None else int(yaml_cfg.get("maxWorkers", workers))
    )
    return Settings(
        batch_size=reg.batch_size or int(yaml_cfg.get("batchSize", config.batch_size)),
        max_batch_delay=(
            reg.max_batch_delay
            if reg.max_batch_delay is not None
            else int(yaml_cfg.get("maxBatchDelay", config.max_batch_delay))
        ),
        response_timeout=reg.response_timeout
        or float(yaml_cfg.get("responseTimeout", config.default_response_timeout)),
        startup_timeout=reg.startup_timeout
        or float(yaml_cfg.get("startupTimeout", config.default_startup_timeout)),
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
