"""The dashboard's last hour: snapshots of the engine's /metrics kept in a ring buffer, and the
rates and percentiles between consecutive snapshots.

Why a history of our own: Prometheus counters and histograms are cumulative, so one page says
nothing about "req/s over the last 5 minutes"; a rate or a p99 needs two readings. The server
extension reads the page every few seconds while Jupyter runs, so a dashboard opened later
still shows the last hour without a Prometheus server.

A snapshot keeps only the numbers the dashboard draws (a few dozen floats per model), so an
hour at a 5 s interval is 720 small dicts. `series()` turns the snapshots into long-form rows
(one row per time, series and value), the shape Vega-Lite plots without reshaping.

Names read (engine/metrics.py): `jts_inference_latency_seconds` (histogram: count -> req/s,
buckets -> p50/p99 of predictions), `jts_batch_size`, `jts_queue_size`, `jts_workers`,
`jts_autoscale_events_total`, `jts_http_responses_total` (api="inference", errors by status),
`jts_worker_cpu_seconds` / `jts_worker_memory_bytes` and `jts_gpu_memory_*_bytes`. A TorchServe
without the `jts_*` families still gives req/s from `ts_inference_requests_total`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from jupyter_torchserve.prometheus import Family, model_of

from .metrics import _quantile_from_buckets

#: The ranges the dashboard offers, in minutes (the route refuses others).
RANGES = (5, 15, 60)
#: How long snapshots are kept, in seconds.
KEEP_SECONDS = 60 * 60

Key = tuple[str, str]  # (model name, version)


@dataclass
class Snapshot:
    """The cumulative counters and the gauges of one /metrics page, at `time` (epoch s)."""

    time: float
    requests: dict[Key, float] = field(default_factory=dict)  # answered requests, all kinds
    latency: dict[Key, dict[float, float]] = field(default_factory=dict)  # le (s) -> cumulative
    batch: dict[Key, tuple[float, float]] = field(default_factory=dict)  # (sum, count)
    queue: dict[Key, float] = field(default_factory=dict)
    workers: dict[Key, float] = field(default_factory=dict)  # live workers, all statuses
    autoscale: dict[tuple[str, str, str], float] = field(default_factory=dict)  # + action
    responses: dict[str, float] = field(default_factory=dict)  # inference answers by status
    worker_cpu: dict[tuple[str, str, str], float] = field(default_factory=dict)  # + worker id
    worker_memory: dict[tuple[str, str, str], float] = field(default_factory=dict)
    gpu_used: dict[str, float] = field(default_factory=dict)  # "0 (NVIDIA H200)" -> bytes
    gpu_total: dict[str, float] = field(default_factory=dict)


def _version(labels: dict[str, str]) -> str:
    return labels.get("model_version") or labels.get("Version") or "default"


def _add(d: dict[Any, float], key: Any, value: float) -> None:
    d[key] = d.get(key, 0.0) + value


def snapshot(families: list[Family], now: float) -> Snapshot:
    """Pick the dashboard's numbers out of a parsed page (prometheus.parse)."""
    snap = Snapshot(now)
    ts_requests: dict[Key, float] = {}
    for fam in families:
        fname = fam["name"]
        for s in fam["samples"]:
            value, labels, sname = s["value"], s["labels"], s["name"]
            if value is None:
                continue
            model = model_of(labels)
            key = (model, _version(labels)) if model else None
            if fname == "jts_inference_latency_seconds" and key:
                if sname.endswith("_count"):
                    _add(snap.requests, key, value)
                elif sname.endswith("_bucket") and labels.get("kind", "prediction") == "prediction":
                    le = float(labels.get("le", "inf"))
                    _add(snap.latency.setdefault(key, {}), le, value)
            elif fname == "jts_batch_size" and key:
                total, count = snap.batch.get(key, (0.0, 0.0))
                if sname.endswith("_sum"):
                    snap.batch[key] = (total + value, count)
                elif sname.endswith("_count"):
                    snap.batch[key] = (total, count + value)
            elif fname == "jts_queue_size" and key:
                _add(snap.queue, key, value)
            elif fname == "jts_workers" and key:
                _add(snap.workers, key, value)
            elif fname == "jts_autoscale_events" and key:
                _add(snap.autoscale, (*key, labels.get("action", "?")), value)
            elif fname == "jts_http_responses" and labels.get("api") == "inference":
                _add(snap.responses, labels.get("code", "?"), value)
            elif fname in ("jts_worker_cpu_seconds", "jts_worker_memory_bytes") and key:
                target = (
                    snap.worker_cpu if fname == "jts_worker_cpu_seconds" else snap.worker_memory
                )
                target[(*key, labels.get("worker_id", "?"))] = value
            elif fname in ("jts_gpu_memory_used_bytes", "jts_gpu_memory_total_bytes"):
                gpu = f"GPU {labels.get('gpu', '?')} ({labels.get('name', '')})"
                target = snap.gpu_used if fname.endswith("used_bytes") else snap.gpu_total
                target[gpu] = value
            elif sname == "ts_inference_requests_total" and model:
                # TorchServe labels its counter with the version asked for in the URL
                _add(ts_requests, (model, _version(labels)), value)
    for key, value in ts_requests.items():
        if not any(k[0] == key[0] for k in snap.requests):
            snap.requests[key] = value
    return snap


def _label(key: tuple[str, ...]) -> str:
    """How a model version is named in legends: `mnist 1.0`."""
    return " ".join(key[:2])


def _delta(after: float, before: float | None) -> float | None:
    """A counter's growth, or None across a reset (engine restarted, version re-registered)."""
    if before is None or after < before:
        return None
    return after - before


def _quantiles_ms(
    after: dict[float, float], before: dict[float, float] | None
) -> tuple[float, float] | None:
    """p50 and p99 in ms of the requests answered between two readings of a histogram."""
    before = before or {}
    buckets = []
    for le, count in after.items():
        d = _delta(count, before.get(le, 0.0))
        if d is None:
            return None
        buckets.append((le * 1000.0, d))
    p50 = _quantile_from_buckets(buckets, 0.5)
    p99 = _quantile_from_buckets(buckets, 0.99)
    if p50 is None or p99 is None:
        return None
    return p50, p99


def series(snaps: list[Snapshot]) -> dict[str, list[dict[str, Any]]]:
    """Long-form rows per chart from consecutive snapshots (`t` in epoch milliseconds).

    Rates (req/s, errors/s, CPU cores) and percentiles are between a snapshot and the one
    before it, stamped at the later one; gauges are the snapshot's own values.
    """
    out: dict[str, list[dict[str, Any]]] = {
        name: []
        for name in (
            "throughput", "latency", "queue", "workers", "autoscale", "errors",
            "batch", "worker_cpu", "worker_memory", "gpu_memory",
        )
    }  # fmt: skip
    for prev, snap in zip(snaps, snaps[1:], strict=False):
        dt = snap.time - prev.time
        if dt <= 0:
            continue
        t = round(snap.time * 1000)
        for key, value in snap.requests.items():
            d = _delta(value, prev.requests.get(key, 0.0))
            if d is not None:
                out["throughput"].append(
                    {"t": t, "model": _label(key), "rps": d / dt, "requests": d}
                )
        for key, buckets in snap.latency.items():
            q = _quantiles_ms(buckets, prev.latency.get(key))
            if q is not None:
                for name, ms in zip(("p50", "p99"), q, strict=True):
                    out["latency"].append({"t": t, "model": _label(key), "q": name, "ms": ms})
        for key, (total, count) in snap.batch.items():
            p_total, p_count = prev.batch.get(key, (0.0, 0.0))
            dc, ds = _delta(count, p_count), _delta(total, p_total)
            if dc and ds is not None:
                out["batch"].append({"t": t, "model": _label(key), "mean": ds / dc})
        for key, value in snap.queue.items():
            out["queue"].append({"t": t, "model": _label(key), "depth": value})
        for key, value in snap.workers.items():
            out["workers"].append({"t": t, "model": _label(key), "workers": value})
        for akey, value in snap.autoscale.items():
            d = _delta(value, prev.autoscale.get(akey, 0.0))
            if d:
                out["autoscale"].append(
                    {"t": t, "model": _label(akey), "action": akey[2], "count": d}
                )
        for code, value in snap.responses.items():
            d = _delta(value, prev.responses.get(code, 0.0))
            if d is not None and code[:1] in ("4", "5"):
                out["errors"].append({"t": t, "status": code, "per_s": d / dt})
        for wkey, value in snap.worker_cpu.items():
            d = _delta(value, prev.worker_cpu.get(wkey))
            if d is not None:
                out["worker_cpu"].append(
                    {"t": t, "model": _label(wkey), "worker": _worker(wkey), "cores": d / dt}
                )
        for wkey, value in snap.worker_memory.items():
            out["worker_memory"].append(
                {"t": t, "model": _label(wkey), "worker": _worker(wkey), "mb": value / 2**20}
            )
        for gpu, used in snap.gpu_used.items():
            total = snap.gpu_total.get(gpu)
            row = {"t": t, "gpu": gpu, "used_mb": used / 2**20}
            row["total_mb"] = total / 2**20 if total is not None else None
            out["gpu_memory"].append(row)
    return out


def _worker(wkey: tuple[str, str, str]) -> str:
    return f"{_label(wkey)} #{wkey[2]}"


class History:
    """The ring buffer: snapshots of the last hour, and the autoscaler's decisions that
    `describe` reported (with their reasons, which the counter does not carry)."""

    def __init__(self, interval: float = 5.0, keep: float = KEEP_SECONDS) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"the sampling interval must be a positive number, not {interval!r}")
        self.interval = interval
        self.keep = keep
        self.snapshots: deque[Snapshot] = deque(maxlen=int(keep / interval) + 2)
        self.decisions: deque[dict[str, Any]] = deque(maxlen=500)
        self._seen: set[tuple[Any, ...]] = set()
        self.last_error: str | None = None

    def add(self, snap: Snapshot) -> None:
        self.snapshots.append(snap)

    def add_decisions(self, name: str, version: str, events: list[dict[str, Any]]) -> None:
        """Autoscale events of one version from describe; each is kept once."""
        for e in events:
            if not isinstance(e.get("time"), (int, float)):
                continue
            ident = (f"{name} {version}", round(float(e["time"]) * 1000), str(e.get("action")))
            if ident in self._seen:
                continue
            self._seen.add(ident)
            self.decisions.append(
                {
                    "t": ident[1],
                    "model": ident[0],
                    "action": str(e.get("action", "")),
                    "workers_before": e.get("workers_before"),
                    "workers_after": e.get("workers_after"),
                    "reason": str(e.get("reason", "")),
                }
            )
        if len(self._seen) > 4 * (self.decisions.maxlen or 500):
            self._seen = {(d["model"], d["t"], d["action"]) for d in self.decisions}

    def view(self, minutes: int, now: float) -> dict[str, Any]:
        """What the route answers for the last `minutes`."""
        if minutes not in RANGES:
            raise ValueError(f"minutes must be one of {', '.join(map(str, RANGES))}")
        since = now - minutes * 60
        # one snapshot before the window, so the first rate in it has a reading to start from
        snaps = [s for s in self.snapshots if s.time >= since - 2 * self.interval]
        rows = series(snaps)
        since_ms = since * 1000
        for name in rows:
            rows[name] = [r for r in rows[name] if r["t"] >= since_ms]
        decisions = [d for d in self.decisions if d["t"] >= since_ms]
        models = sorted({r["model"] for name in rows for r in rows[name] if "model" in r})
        return {
            "minutes": minutes,
            "interval_s": self.interval,
            "now": round(now * 1000),
            "since": round(since_ms),
            "samples": sum(1 for s in snaps if s.time >= since),
            "models": models,
            "series": rows,
            "decisions": decisions,
            "error": self.last_error,
        }
