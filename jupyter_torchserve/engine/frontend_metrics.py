"""TorchServe's frontend metric families, written as TorchServe 0.12 writes them.

Dashboards and alerts built on TorchServe read `Requests2XX{Level="Host",Hostname=...}`,
`ts_inference_latency_microseconds` with `# TYPE ... counter`, the host gauges of
ts/configs/metrics.yaml, and so on. prometheus_client cannot write those: it renames every
counter family to `*_total` in its HELP/TYPE lines, and TorchServe's sample names have no such
suffix. So this module keeps their values and writes their text itself, beside the families
prometheus_client writes for ours (`jts_*`, and `ts_inference_requests_total`, whose name
already ends in `_total`).

The worker families are measured as TorchServe measures them, on our side of the same
boundary: `WorkerLoadTime` from a worker's creation to its "ready" (workers.py), and
`WorkerThreadTime` as the frontend's own time around one worker call (encoding the batch and
sending it, then reading the answer and finishing its jobs), the backend's time left out, as
TorchServe's worker thread subtracts its wait for the backend. `HandlerTime` and
`PredictionTime` are the handler's (jts_base.py, handlers/service.py), brought in the
worker's frames like any `context.metrics` record and kept here under TorchServe's labels
(`ModelName`, `Level="Model"`, `Hostname`) instead of as a custom family.
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
    "WorkerLoadTime": "Milliseconds",
    "WorkerThreadTime": "Milliseconds",
    "HandlerTime": "ms",
    "PredictionTime": "ms",
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

#: the backend's families: a handler's `context.metrics` records of these names are kept here
BACKEND = frozenset({"HandlerTime", "PredictionTime"})
#: at most this many workers' load times are kept (ids grow with every restart and scale-up)
MAX_WORKERS_KEPT = 1024

Sample = tuple[dict[str, str], float]


class FrontendMetrics:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.responses = {"Requests2XX": 0, "Requests4XX": 0, "Requests5XX": 0}
        # cumulative microseconds by (model, URL version or "default")
        self.inference_us: dict[tuple[str, str], float] = defaultdict(float)
        self.queue_us: dict[tuple[str, str], float] = defaultdict(float)
        self.queue_ms_last: float | None = None
        # TorchServe's gauges keep the last value: of each model's handler, and of the host
        self.backend: dict[tuple[str, str], float] = {}
        self.thread_ms_last: float | None = None
        self._thread_at = 0.0
        self.load_ms: dict[str, float] = {}  # WorkerName -> ms
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

    def backend_time(self, name: str, model: str, ms: float) -> None:
        """A handler's `HandlerTime` / `PredictionTime` (ms), as its worker sent it."""
        self.backend[(name, model)] = ms

    def worker_thread(self, ms: float, at: float) -> None:
        """A worker call's frontend time `ms`, measured at `at` (perf_counter): the latest
        of all workers' wins, as TorchServe's host-level gauge shows its last write."""
        if at > self._thread_at:
            self._thread_at, self.thread_ms_last = at, ms

    def worker_loaded(self, worker_name: str, ms: float) -> None:
        """`worker_name` as TorchServe names it (`W-9000-mnist_1.0`) loaded in `ms`."""
        self.load_ms.pop(worker_name, None)
        self.load_ms[worker_name] = ms
        while len(self.load_ms) > MAX_WORKERS_KEPT:
            del self.load_ms[next(iter(self.load_ms))]

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
        yield (
            "WorkerLoadTime",
            "gauge",
            [({"WorkerName": w, **host}, ms) for w, ms in self.load_ms.items()],
        )
        thread = self.thread_ms_last
        yield "WorkerThreadTime", "gauge", [] if thread is None else [(host, thread)]
        for family in ("HandlerTime", "PredictionTime"):
            yield (
                family,
                "gauge",
                [
                    ({"ModelName": m, "Level": "Model", "Hostname": self.hostname}, ms)
                    for (name, m), ms in self.backend.items()
                    if name == family
                ],
            )
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
