"""`bench`: a load test of one model from the kernel, measured from both ends.

For each worker count (`workers`, scaled to and restored afterwards) and each concurrency
level, one `loadgen` process drives the engine for `duration` seconds (or `requests`
answers) while this module reads, around it, what the engine itself saw: its request
counter for the model, the batch sizes its batcher formed (the `jts_batch_size`
histogram) and the CPU time of the engine's process tree. The generator reports its own CPU,
so a row says whether the server or the generator was the limit.

Nothing here draws: `loadtest_view` turns the levels into a table and a picture, and shows the
progress that `run` reports through its `progress` callback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import contract, payloads, prometheus
from .client import Client, _encode
from .loadtest_view import BenchResult, Level

#: Protocols a bench can speak (gRPC joins when the engine's gRPC client does).
PROTOCOLS = ("torchserve", "v1", "v2")

Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BenchRequest:
    """The one request every connection of the test sends, as the client would send it."""

    path: str
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def build_request(
    name: str,
    data: Any,
    protocol: str = "torchserve",
    version: str | None = None,
    content_type: str | None = None,
) -> BenchRequest:
    """The path, body and headers of `data` on `protocol`, made by the same contract calls
    (and body encoders) as `predict`, so a bench sends what a single call sends."""
    if protocol == "torchserve":
        body, ctype = _encode(data, content_type)
        call = contract.predict(name, body, ctype, version)
    elif protocol == "v1":
        call = contract.kserve_v1(name, payloads.v1_instances(data))
    elif protocol == "v2":
        call = contract.kserve_v2_infer(name, payloads.v2_inputs(data), version)
    else:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    headers = dict(call.headers)
    ctype = headers.pop("Content-Type", "") or "application/octet-stream"
    return BenchRequest(call.path, call.body or b"", ctype, headers)


def run_level(
    address: str,
    request: BenchRequest,
    connections: int,
    duration: float,
    requests: int | None = None,
    token: str | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """One `loadgen` process against `address` (the inference URL); its result line."""
    parts = urlsplit(address)
    headers = dict(request.headers)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with tempfile.TemporaryDirectory(prefix="jts-bench-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(request.body)
        plan = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 80,
            "path": request.path,
            "body_file": str(body_file),
            "content_type": request.content_type,
            "headers": headers,
            "connections": connections,
            "duration": duration,
            "requests": requests,
            "timeout": timeout,
        }
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps(plan))
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_torchserve.loadgen", str(plan_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        result = None
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                msg = json.loads(line)
                if msg.get("type") == "result":
                    result = msg
                elif progress is not None:
                    progress(msg)
        finally:
            err = proc.stderr.read() if proc.stderr else ""
            proc.wait()
    if result is None:
        raise RuntimeError(f"the load generator failed (exit {proc.returncode}): {err[-2000:]}")
    return result


# -- what the engine saw --------------------------------------------------------------------------
class EngineProbe:
    """Reads the engine's own figures around a level: its request counter and batch sizes for
    the model (from /metrics) and its process tree's CPU time (when it runs on this machine)."""

    def __init__(self, client: Client, name: str, version: str | None) -> None:
        self.client = client
        self.name = name
        self.url_version = version or "default"  # how ts_inference_requests_total labels it
        self.pid = self._local_pid()

    def _local_pid(self) -> int | None:
        try:
            pid = int(self.client.engine_status().get("pid"))
        except Exception:  # noqa: BLE001 - a TorchServe without /engine: no CPU figures
            return None
        host = urlsplit(self.client.inference_address).hostname or ""
        local = host in ("127.0.0.1", "localhost", "::1") and _alive(pid)
        return pid if local else None

    def sample(self) -> dict[str, Any]:
        text = self.client.metrics(["ts_inference_requests_total", "jts_batch_size_bucket"])
        requests = 0.0
        batches: dict[str, float] = {}
        for name, labels, value in prometheus.samples(text):
            if prometheus.model_of(labels) != self.name:
                continue
            if name == "ts_inference_requests_total":
                if labels.get("model_version") == self.url_version:
                    requests += value
            elif name == "jts_batch_size_bucket":
                le = labels.get("le", "+Inf")
                batches[le] = batches.get(le, 0.0) + value
        return {"requests": requests, "batches": batches, "cpu": _tree_cpu(self.pid)}

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        cpu = None
        if before["cpu"] is not None and after["cpu"] is not None:
            cpu = sum(v - before["cpu"].get(pid, 0.0) for pid, v in after["cpu"].items())
        return {
            "engine_requests": int(round(after["requests"] - before["requests"])),
            "batch_sizes": _bucket_counts(before["batches"], after["batches"]),
            "server_cpu_seconds": cpu,
        }


def _alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.pid_exists(pid)
    except ImportError:  # pragma: no cover - psutil is a dependency
        return False


def _tree_cpu(pid: int | None) -> dict[int, float] | None:
    """CPU seconds of the engine and every process under it (forkserver, workers)."""
    if pid is None:
        return None
    import psutil

    out: dict[int, float] = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def _bucket_counts(before: dict[str, float], after: dict[str, float]) -> dict[int, int]:
    """Batches per size bound seen between two readings of the cumulative histogram: `{1: n,
    2: n, 4: n, ...}`, each key the upper bound of its bucket."""
    bounds = sorted((float(le), le) for le in after)
    out: dict[int, int] = {}
    below = 0.0
    for value, le in bounds:
        cumulative = after[le] - before.get(le, 0.0)
        n = int(round(cumulative - below))
        below = cumulative
        if n > 0:
            out[int(value) if value != float("inf") else -1] = n
    return out


# -- the whole test -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchOptions:
    """What one load test does, apart from the model and its data.

    Why an object: `api.bench`, `%torchserve bench` and `run` all speak of the same eight
    settings; they are told (and checked) here once, and each caller passes them on whole.
    Bad values are a `ValueError` at construction, before anything is sent or scaled.
    """

    concurrency: Sequence[int] = (1, 8, 32)
    duration: float = 10.0
    requests: int | None = None
    protocol: str = "torchserve"
    #: worker counts to repeat the levels at (scaled to, restored afterwards); None: as it is
    workers: Sequence[int] | None = None
    version: str | None = None
    content_type: str | None = None
    #: a p99 target (ms): the result recommends a worker count that meets it
    slo_ms: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", tuple(_positive(self.concurrency, "concurrency")))
        if self.workers:
            object.__setattr__(self, "workers", tuple(_positive(self.workers, "workers")))
        if self.duration <= 0 and not self.requests:
            raise ValueError("duration must be positive (or give requests)")


def run(
    client: Client,
    name: str,
    data: Any,
    options: BenchOptions | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Every (workers, concurrency) level in turn; the worker count is put back afterwards."""
    o = options or BenchOptions()
    levels_w: list[int | None] = list(o.workers) if o.workers else [None]
    request = build_request(name, data, o.protocol, o.version, o.content_type)
    described = client.describe(name, o.version)[0]
    before_scale = (described.get("minWorkers"), described.get("maxWorkers"))
    probe = EngineProbe(client, name, o.version)
    plan = [(w, c) for w in levels_w for c in o.concurrency]
    started = time.time()
    levels: list[Level] = []
    try:
        for i, (w, c) in enumerate(plan):
            if w is not None and (i == 0 or plan[i - 1][0] != w):
                client.scale(name, w, w, version=o.version, synchronous=True)
            if progress is not None:
                progress({"type": "level", "index": i, "of": len(plan), "workers": w, "c": c})
            before = probe.sample()
            result = run_level(
                client.inference_address,
                request,
                c,
                o.duration,
                o.requests,
                client.inference_token,
                _tagged(progress, i, len(plan), w, c, o.duration),
            )
            seen = EngineProbe.delta(before, probe.sample())
            levels.append(Level.from_run(w, c, result, seen))
            if progress is not None:
                progress({"type": "level_done", "level": levels[-1], "index": i, "of": len(plan)})
    finally:
        if o.workers and before_scale[0] is not None:
            lo, hi = before_scale
            client.scale(name, int(lo), int(hi or lo), version=o.version, synchronous=True)
    return BenchResult(
        model=name,
        version=o.version,
        protocol=o.protocol,
        levels=levels,
        slo_ms=o.slo_ms,
        started=started,
        duration=o.duration,
        requests=o.requests,
    )


def _tagged(
    progress: Progress | None, i: int, n: int, w: int | None, c: int, duration: float
) -> Progress | None:
    if progress is None:
        return None

    def tag(msg: dict[str, Any]) -> None:
        progress({**msg, "index": i, "of": n, "workers": w, "c": c, "plan_duration": duration})

    return tag


def _positive(values: Iterable[int] | None, what: str) -> list[int]:
    out = [int(v) for v in (values or [])]
    if not out or any(v < 1 for v in out):
        raise ValueError(f"{what} must be one or more positive integers, got {values!r}")
    return out
