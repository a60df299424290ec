"""TorchServe's frontend metric families, written as TorchServe 0.12 writes them.

Dashboards and alerts built on TorchServe read `Requests2XX{Level="Host",Hostname=...}`,
`ts_inference_latency_microseconds` with `# TYPE ... counter`, the host gauges of
ts/configs/metrics.yaml, and so on. prometheus_client cannot write those: it renames every
counter family to `*_total` in its HELP/TYPE lines, and TorchServe's sample names have no such
suffix. So this module keeps their values and writes their text itself, beside the families
prometheus_client writes for ours (`jts_*`, and `ts_inference_requests_total`, whose name
already ends in `_total`).

Families here are the ones the engine can measure truthfully; `WorkerThreadTime` (time in
TorchServe's Java worker thread) has no counterpart and `WorkerLoadTime` is not kept yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import psutil

from .gpu import GpuInfo

HOST = {"Level": "Host"}

# each family's unit, as TorchServe's HELP line names it (ts/configs/metrics.yaml)
UNITS = {
    "Requests2XX": "Count",
    "Requests4XX": "Count",
    "Requests5XX": "Count",
    "ts_inference_latency_microseconds": "Microseconds",
    "ts_queue_latency_microseconds": "Microseconds",
    "QueueTime": "Milliseconds",
    "CPUUtilization": "Percent",
    "MemoryUsed": "Megabytes",
    "MemoryAvailable": "Megabytes",
    "MemoryUtilization": "Percent",
    "DiskUsage": "Gigabytes",
    "DiskUtilization": "Percent",
    "DiskAvailable": "Gigabytes",
    "GPUMemoryUtilization": "Percent",
    "GPUMemoryUsed": "Megabytes",
    "GPUUtilization": "Percent",
}

Sample = tuple[dict[str, str], float]


class FrontendMetrics:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.responses = {"Requests2XX": 0, "Requests4XX": 0, "Requests5XX": 0}
        # cumulative microseconds by (model, URL version or "default")
        self.inference_us: dict[tuple[str, str], float] = defaultdict(float)
        self.queue_us: dict[tuple[str, str], float] = defaultdict(float)
        self.queue_ms_last: float | None = None
        psutil.cpu_percent(None)  # CPUUtilization at a scrape: the CPU since the last one

    def response(self, code: int) -> None:
        """TorchServe counts each answer of its inference and management APIs by class."""
        family = {2: "Requests2XX", 4: "Requests4XX", 5: "Requests5XX"}.get(code // 100)
        if family is not None:
            self.responses[family] += 1

    def answered(self, key: tuple[str, str], total_s: float, queued_s: float | None) -> None:
        self.inference_us[key] += total_s * 1e6
        if queued_s is not None:
            self.queue_us[key] += queued_s * 1e6
            self.queue_ms_last = queued_s * 1e3

    def families(self, gpus: Sequence[GpuInfo] = ()) -> Iterator[tuple[str, str, list[Sample]]]:
        """(name, type, samples) of every family, in TorchServe's metrics.yaml order. Like
        TorchServe, a family is listed before it has samples (a counter before its first)."""
        host = {**HOST, "Hostname": self.hostname}
        for name, value in self.responses.items():
            yield name, "counter", [(host, float(value))] if value else []
        for name, sums in (
            ("ts_inference_latency_microseconds", self.inference_us),
            ("ts_queue_latency_microseconds", self.queue_us),
        ):
            samples = [
                ({"model_name": m, "model_version": v, "hostname": self.hostname}, us)
                for (m, v), us in sums.items()
            ]
            yield name, "counter", samples
        queue = self.queue_ms_last
        yield "QueueTime", "gauge", [] if queue is None else [(host, queue)]
        yield from _host_gauges(host)
        yield from _gpu_gauges(self.hostname, gpus)

    def exposition(self, names: Iterable[str] | None = None, gpus: Sequence[GpuInfo] = ()) -> str:
        wanted = set(names) if names else None
        lines: list[str] = []
        for name, kind, samples in self.families(gpus):
            if wanted is not None and name not in wanted:
                continue
            unit = UNITS[name]
            lines.append(f"# HELP {name} Torchserve prometheus {kind} metric with unit: {unit}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{text},}} {float(value)!r}")
        return "".join(line + "\n" for line in lines)


def _host_gauges(host: dict[str, str]) -> Iterator[tuple[str, str, list[Sample]]]:
    """TorchServe's system metrics (its metric collector runs psutil once a minute; here at
    scrape time), in its units: percent, megabytes, gigabytes of the root file system."""
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage("/")
    mb, gb = 1024**2, 1024**3
    for name, value in (
        ("CPUUtilization", psutil.cpu_percent(None)),
        ("MemoryUsed", mem.used / mb),
        ("MemoryAvailable", mem.available / mb),
        ("MemoryUtilization", mem.percent),
        ("DiskUsage", disk.used / gb),
        ("DiskUtilization", disk.percent),
        ("DiskAvailable", disk.free / gb),
    ):
        yield name, "gauge", [(host, float(value))]


def _gpu_gauges(hostname: str, gpus: Sequence[GpuInfo]) -> Iterator[tuple[str, str, list[Sample]]]:
    mem_pct, mem_mb, util = [], [], []
    for g in gpus:
        labels = {**HOST, "DeviceId": str(g.index), "Hostname": hostname}
        total, used = g.memory_total or 0, g.memory_used or 0
        mem_pct.append((labels, 100.0 * used / total if total else 0.0))
        mem_mb.append((labels, used / 1024**2))
        if g.utilization is not None:
            util.append((labels, float(g.utilization)))
    yield "GPUMemoryUtilization", "gauge", mem_pct
    yield "GPUMemoryUsed", "gauge", mem_mb
    yield "GPUUtilization", "gauge", util


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
