"""Numeric parameters, checked once where they enter: the query, a JSON body, a model's YAML.

Every number the management API takes ends up in state that outlives the request (a
version's settings, the snapshot, timers). One `nan` accepted there broke every later call
that formats the snapshot, for every model; `1_000`, `+1`, `١٢` (Arabic-Indic) and `１２`
(full-width) all pass Python's `int()`. So a parameter is taken only as plain ASCII digits
(an optional `-`, for the values where it means something, and for seconds one `.`
fraction), and only inside its range below. The ranges are what the engine can honour;
the worker caps (`limits.py`) are checked on top, against the engine's configuration.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_INT = re.compile(r"-?[0-9]{1,19}")
_SECONDS = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{1,9})?")

WEEK = 7 * 24 * 3600


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    unit: str = ""


#: Every numeric parameter of the management API (and the model YAML key it mirrors).
RANGES: dict[str, Range] = {
    "batch_size": Range(1, 4096),
    "max_batch_delay": Range(0, 3_600_000, " ms"),
    "initial_workers": Range(0, 1 << 31),  # the worker caps come on top
    "min_worker": Range(0, 1 << 31),
    "max_worker": Range(0, 1 << 31),
    "response_timeout": Range(0.001, WEEK, " s"),
    "startup_timeout": Range(0.001, WEEK, " s"),
    "timeout": Range(-1, WEEK, " s"),  # scale: -1 waits for ever, 0 kills at once
    "limit": Range(-(1 << 31), 1 << 31),  # list: out of 0..100 means 100, as TorchServe
    "next_page_token": Range(0, 1 << 31),
    "tail": Range(1, 100_000, " lines"),
}

#: The model-config YAML's keys for the same settings (registration.resolve reads them).
YAML_KEYS = {
    "batchSize": "batch_size",
    "maxBatchDelay": "max_batch_delay",
    "minWorkers": "initial_workers",
    "maxWorkers": "max_worker",
    "responseTimeout": "response_timeout",
    "startupTimeout": "startup_timeout",
}


def integer(name: str, raw: Any) -> int:
    """`raw` (text from a query or body, or a YAML/JSON number) as parameter `name`."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise _not(name, raw, "an integer")
    text = str(raw)
    if not _INT.fullmatch(text):
        raise _not(name, raw, "an integer (ASCII digits)")
    return int(_in_range(name, int(text)))


def seconds(name: str, raw: Any) -> float:
    """`raw` as a finite number of seconds (or other decimal) for parameter `name`."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise _not(name, raw, "a number")
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise _not(name, raw, "a finite number")
        return float(_in_range(name, raw))
    text = str(raw)
    if not _SECONDS.fullmatch(text):
        raise _not(name, raw, "a number (ASCII digits, one optional '.')")
    return float(_in_range(name, float(text)))


def _in_range(name: str, value: float) -> float:
    r = RANGES.get(name)
    if r is not None and not r.lo <= value <= r.hi:
        lo = int(r.lo) if float(r.lo).is_integer() else r.lo
        hi = int(r.hi) if float(r.hi).is_integer() else r.hi
        raise bad_request(f"Parameter {name} must be between {lo} and {hi}{r.unit}, got {value:g}")
    return value


def _not(name: str, raw: Any, what: str) -> Exception:
    shown = repr(raw) if len(repr(raw)) <= 60 else repr(raw)[:57] + "..."
    return bad_request(f"Parameter {name} must be {what}, got {shown}")
