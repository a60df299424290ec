"""Prometheus metrics with TorchServe's names, plus worker and GPU gauges.

`ts_inference_requests_total` and the families of frontend_metrics.py (`Requests2XX`...,
the microsecond counters, host gauges) keep TorchServe's names, types and labels so existing
dashboards work. Histograms (ours, `jts_*`) give the sidebar its p50 latency.
The `jts_*` histograms carry a `kind` label (`prediction` or `explanation`, `Job.kind`):
an explanation costs about `n_steps` predictions and would otherwise pass for a slow
prediction. TorchServe's own families count both kinds together, as TorchServe does.
"""

from __future__ import annotations

import functools
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from .frontend_metrics import BACKEND, FrontendMetrics
from .jobs import Job


class Labelled(Protocol):
    """A model version, as its metrics are labelled."""

    name: str
    version: str


class WorkerView(Protocol):
    status: str
    pid: int | None
    id: str
    device: str
    load_ms: float | None  # TorchServe's WorkerLoadTime, once the worker is ready
    thread_ms: float | None  # TorchServe's WorkerThreadTime of its last batch
    thread_at: float  # when that was measured (perf_counter)


class VersionView(Labelled, Protocol):
    """A model version, as the scrape-time gauges read it."""

    queue: Sized
    workers: Sequence[WorkerView]


# TorchServe exposes no `*_created` samples; neither do we (this runs in the engine process only)
disable_created_metrics()

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


class EngineMetrics:
    def __init__(self, versions: Callable[[], Iterable[VersionView]]) -> None:
        """`versions` lists the registered model versions when a scrape asks."""
        self.versions = versions
        self.hostname = socket.gethostname()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ts_inference_requests",
            "Torchserve prometheus counter metric with unit: Count",  # TorchServe's HELP
            ["model_name", "model_version", "hostname"],
            registry=self.registry,
        )
        # TorchServe's counter keeps TorchServe's labels; which protocol carried a request
        # (http, grpc) is this one's
        self.protocols = Counter(
            "jts_inference_requests_by_protocol",
            "Inference requests by the protocol that carried them.",
            ["model_name", "protocol"],
            registry=self.registry,
        )
        self.http = Counter(
            "jts_http_responses",
            "HTTP responses by API and status code.",
            ["api", "code"],
            registry=self.registry,
        )
        self.routes = Counter(
            "jts_route_requests",
            "Default-route requests (no version in the request) while the model has a canary, "
            "by the version they went to and its role: default or canary.",
            ["model_name", "model_version", "route"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "jts_inference_latency_seconds",
            "Time from arrival to answer of an inference request.",
            ["model_name", "model_version", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "jts_batch_size",
            "Requests per batch sent to a worker.",
            ["model_name", "model_version", "kind"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.frontend = FrontendMetrics(self.hostname)
        self.autoscale = Counter(
            "jts_autoscale_events",
            "Autoscaler decisions: up, down, failed (a worker start that did not work).",
            ["model_name", "model_version", "action"],
            registry=self.registry,
        )
        # handler metrics (context.metrics.add_*): (name, type, labels) -> [value, count]
        self._custom: dict[tuple[str, str, tuple[tuple[str, str], ...]], list[float]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}
        self.registry.register(_DynamicCollector(self))

    def _child(self, metric: Any, *labels: str) -> Any:
        """prometheus_client's `labels()` costs a lock and a dict build per call: cache it."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_received(
        self, version: Labelled, url_version: str | None, protocol: str = "http"
    ) -> None:
        self._child(self.requests, version.name, url_version or "default", self.hostname).inc()
        self._child(self.protocols, version.name, protocol).inc()

    def routed(self, version: Labelled, route: str) -> None:
        """A default-route request went to `version` as the `route` (canary.py's split)."""
        self._child(self.routes, version.name, version.version, route).inc()

    def request_answered(self, version: Labelled, url_version: str | None, job: Job) -> None:
        now = time.perf_counter()
        key = (version.name, url_version or "default")
        queued = job.dispatched - job.enqueued if job.dispatched else None
        self.frontend.answered(key, now - job.enqueued, queued)
        latency = self._child(self.latency, version.name, version.version, job.kind)
        latency.observe(now - job.enqueued)

    def batch_sent(self, version: Labelled, jobs: list[Job]) -> None:
        """`jobs` are of one kind (ModelVersion._take_batch)."""
        sizes = self._child(self.batch_size, version.name, version.version, jobs[0].kind)
        sizes.observe(len(jobs))

    def autoscale_event(self, version: Labelled, action: str) -> None:
        self._child(self.autoscale, version.name, version.version, action).inc()

    def custom(self, records: list[dict[str, Any]]) -> None:
        """Fold handler metrics in: counters add up, gauges keep the last value,
        histograms keep a sum and a count."""
        for r in records:
            name = _metric_name(str(r.get("name", "")))
            dims = r.get("dims") or {}
            if name in BACKEND:  # TorchServe's own backend families, under its labels
                self.frontend.backend_time(name, str(dims.get("ModelName", "")), float(r["value"]))
                continue
            kind = str(r.get("type", "COUNTER")).upper()
            labels = tuple(sorted((_metric_name(k), str(v)) for k, v in dims.items()))
            slot = self._custom.setdefault((name, kind, labels), [0.0, 0])
            if kind == "GAUGE":
                slot[0] = float(r["value"])
            else:
                slot[0] += float(r["value"])
            slot[1] += 1

    def response(self, api: str, code: int) -> None:
        self._child(self.http, api, str(code)).inc()
        if api != "metrics":
            self.frontend.response(code)

    def exposition(self, names: list[str] | None = None) -> bytes:
        from .gpu import list_gpus

        ours = self.registry.restricted_registry(names) if names else self.registry
        self._read_workers()
        return generate_latest(ours) + self.frontend.exposition(names, list_gpus()).encode()

    def _read_workers(self) -> None:
        """Hand the workers' load and thread times to TorchServe's families (a scrape's work:
        the request path only stores two floats on the worker)."""
        frontend = self.frontend
        for version in self.versions():
            for w in version.workers:
                if w.load_ms is not None:
                    # TorchServe's worker thread name: W-<port>-<model>_<version>
                    frontend.worker_loaded(f"W-{w.id}-{version.name}_{version.version}", w.load_ms)
                if w.thread_ms is not None:
                    frontend.worker_thread(w.thread_ms, w.thread_at)


class _DynamicCollector:
    """Values read at scrape time: handler metrics, queues, workers and GPUs."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Metric]:
        return [
            GaugeMetricFamily("jts_queue_size", "", labels=[]),
            GaugeMetricFamily("jts_workers", "", labels=[]),
            GaugeMetricFamily("jts_worker_memory_bytes", "", labels=[]),
            GaugeMetricFamily("jts_worker_cpu_seconds", "", labels=[]),
            GaugeMetricFamily("jts_gpu_memory_used_bytes", "", labels=[]),
            GaugeMetricFamily("jts_gpu_memory_total_bytes", "", labels=[]),
            GaugeMetricFamily("jts_gpu_utilization_percent", "", labels=[]),
        ]

    def _custom_families(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for (name, kind, labels), (value, count) in sorted(self.m._custom.items()):
            mtype = "gauge" if kind == "GAUGE" else "untyped"
            family = families.setdefault(
                name, Metric(name, f"Handler metric {name} ({kind.lower()})", mtype)
            )
            if kind == "HISTOGRAM":
                family.add_sample(f"{name}_sum", dict(labels), value)
                family.add_sample(f"{name}_count", dict(labels), count)
            else:
                family.add_sample(name, dict(labels), value)
        yield from families.values()

    def collect(self) -> Iterator[Metric]:
        yield from self._custom_families()

        queue = GaugeMetricFamily(
            "jts_queue_size",
            "Requests waiting for a worker.",
            labels=["model_name", "model_version"],
        )
        workers = GaugeMetricFamily(
            "jts_workers", "Workers by status.", labels=["model_name", "model_version", "status"]
        )
        mem = GaugeMetricFamily(
            "jts_worker_memory_bytes",
            "Resident memory of a worker process.",
            labels=["model_name", "model_version", "worker_id", "device"],
        )
        cpu = GaugeMetricFamily(
            "jts_worker_cpu_seconds",
            "CPU time used by a worker process.",
            labels=["model_name", "model_version", "worker_id", "device"],
        )
        for version in self.m.versions():
            queue.add_metric([version.name, version.version], len(version.queue))
            counts: dict[str, int] = defaultdict(int)
            for w in version.workers:
                counts[w.status] += 1
                stats = _process_stats(w.pid)
                if stats is not None:
                    labels = [version.name, version.version, w.id, w.device]
                    mem.add_metric(labels, stats[0])
                    cpu.add_metric(labels, stats[1])
            for status, n in counts.items():
                workers.add_metric([version.name, version.version, status], n)
        yield queue
        yield workers
        yield mem
        yield cpu

        from .gpu import list_gpus

        gpus = list_gpus()
        used = GaugeMetricFamily(
            "jts_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"]
        )
        total = GaugeMetricFamily(
            "jts_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu", "name"]
        )
        util = GaugeMetricFamily(
            "jts_gpu_utilization_percent", "GPU utilisation.", labels=["gpu", "name"]
        )
        for g in gpus:
            used.add_metric([str(g.index), g.name], g.memory_used)
            total.add_metric([str(g.index), g.name], g.memory_total)
            if g.utilization is not None:
                util.add_metric([str(g.index), g.name], g.utilization)
        yield used
        yield total
        yield util


@functools.lru_cache(maxsize=4096)
def _metric_name(name: str) -> str:
    """A Prometheus-safe name. Cached: handlers send the same few names with every batch."""
    cleaned = "".join(c if c.isalnum() or c in "_:" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"m_{cleaned}"


def _process_stats(pid: int | None) -> tuple[int, float] | None:
    if not pid:
        return None
    try:
        import psutil

        p = psutil.Process(pid)
        t = p.cpu_times()
        return p.memory_info().rss, t.user + t.system
    except Exception:  # noqa: BLE001 - the worker may have just exited
        return None
