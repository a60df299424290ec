"""TorchServe's `model_snapshot` layout, to and from JSON, so either server restores the
other's: `{"name", "created", "modelCount", "models": {name: {version: {"defaultVersion",
"marName", "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout",
"startupTimeout", "handler", "deviceType"}}}}`.

Pure functions: the registry decides when to save and restore, and writes the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from .registration import Registration


class Saved(Protocol):
    """What a snapshot keeps of a model version."""

    url: str
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay: int
    response_timeout: float
    startup_timeout: float
    handler_override: str | None
    device_type: str | None


def to_json(
    models: Iterable[tuple[str, str | None, Mapping[str, Saved]]], created_ms: int
) -> dict[str, Any]:
    """The snapshot of `models`: (name, default version, {version: its settings})."""
    out: dict[str, dict[str, Any]] = {}
    count = 0
    for name, default, versions in models:
        out[name] = {}
        for v, mv in versions.items():
            out[name][v] = {
                "defaultVersion": v == default,
                "marName": mv.url,
                "minWorkers": mv.min_workers,
                "maxWorkers": mv.max_workers,
                "batchSize": mv.batch_size,
                "maxBatchDelay": mv.max_batch_delay,
                # whole seconds, as TorchServe keeps them; rounded up, so 0.5 s is not 0
                "responseTimeout": math.ceil(mv.response_timeout),
                "startupTimeout": math.ceil(mv.startup_timeout),
                "handler": mv.handler_override,
                "deviceType": mv.device_type,
            }
            count += 1
    return {"name": "snapshot", "created": created_ms, "modelCount": count, "models": out}


def from_json(snap: Mapping[str, Any]) -> Iterator[tuple[str, str, Registration]]:
    """(name, version, how to register it again) for each version in a snapshot, one at a
    time: a malformed entry stops the restore there, after the ones before it."""
    for name, versions in (snap.get("models") or {}).items():
        for version, spec in versions.items():
            yield (
                name,
                version,
                Registration(
                    spec["marName"],
                    model_name=name,
                    handler=spec.get("handler"),
                    batch_size=spec.get("batchSize"),
                    max_batch_delay=spec.get("maxBatchDelay"),
                    response_timeout=spec.get("responseTimeout"),
                    startup_timeout=spec.get("startupTimeout"),
                    device_type=spec.get("deviceType"),
                    initial_workers=int(spec.get("minWorkers", 1)),
                    max_workers=spec.get("maxWorkers"),
                    loaded_at_startup=True,
                    make_default=bool(spec.get("defaultVersion")),
                ),
            )
