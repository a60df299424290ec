"""How many workers and models one engine takes on, and the refusals past that.

A worker is a process: a `min_worker` of 10^20 used to be accepted with 202 and forked
until the host gave out (after which even `/ping` failed). Each worker costs its torch
threads' share of the cores and its own heap, so the defaults follow the machine: per
model four workers a core, per engine eight a core but no more than one per 512 MiB of
memory. A number over the per-model cap is a bad parameter (400, naming the setting);
a total over the engine's cap is the engine out of room (507), since the same request
may fit once other models shrink. Registered versions are capped too (`max_models`): each
holds an unpacked archive and its metrics series.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from ..config import EngineConfig
from .errors import ApiError, bad_request

MIB = 1 << 20


class Scaled(Protocol):
    name: str
    version: str
    min_workers: int


def _memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - no psutil, no /proc: assume a small machine
        return 4 << 30


def per_model_cap(config: EngineConfig, cpus: int | None = None) -> int:
    if config.max_workers_per_model > 0:
        return config.max_workers_per_model
    return min(engine_cap(config, cpus), 4 * (cpus or os.cpu_count() or 1))


def engine_cap(config: EngineConfig, cpus: int | None = None) -> int:
    if config.max_workers > 0:
        return config.max_workers
    by_cores = 8 * (cpus or os.cpu_count() or 1)
    return max(2, min(by_cores, _memory_bytes() // (512 * MIB)))


def check_workers(
    config: EngineConfig,
    versions: Iterable[Scaled],
    target: Scaled | None,
    min_workers: int,
    max_workers: int,
    *,
    what: str = "min_worker",
) -> None:
    """Refuse a version's new worker counts past the caps; `target` is the version they are
    for (None for one not registered yet), `versions` every registered one."""
    cap = per_model_cap(config)
    for name, value in ((what, min_workers), ("max_worker", max_workers)):
        if value > cap:
            raise bad_request(
                f"{name}={value} is over the {cap} workers a model may have (max_workers_per_model)"
            )
    others = sum(v.min_workers for v in versions if v is not target)
    total = engine_cap(config)
    if others + min_workers > total:
        raise ApiError(
            507,
            "InsufficientResourcesException",
            f"{min_workers} workers do not fit: other models hold {others} of the "
            f"engine's {total} (max_workers); scale another model down first",
        )


def check_model_count(config: EngineConfig, registered: int) -> None:
    if registered >= config.max_models:
        raise ApiError(
            507,
            "InsufficientResourcesException",
            f"The engine holds {registered} model versions, its limit (max_models); "
            "unregister one first",
        )
