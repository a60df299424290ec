"""Worker processes as the engine sees them: spawn, attach, send batches, notice death.

Workers are forked from a multiprocessing *forkserver* that has preloaded torch and our
handler runtime but never initialised CUDA: a new worker costs a fork instead of a fresh
interpreter plus `import torch` (most of a cold start, docs/performance.md), and CUDA is only
ever initialised in the worker that uses it.

A Worker knows its model version and the pool only through the two Protocols below, so this
module imports nothing above it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable, Sized
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Protocol

from . import deaths, forkserver, protocol
from .errors import ApiError
from .jobs import Job, Reply

log = logging.getLogger("jupyter_torchserve.engine")

_batch_ids = itertools.count(1)

# A worker's status, as TorchServe's describe shows it (and the jts_workers gauge counts it)
STARTING: Final = "STARTING"  # forked, loading its archive
READY: Final = "READY"  # loaded: takes batches
UNLOADING: Final = "UNLOADING"  # told to stop: answers what it has, then exits
FAILED: Final = "FAILED"  # its archive did not load
STOPPED: Final = "STOPPED"  # its process or connection is gone
LIVE: Final = frozenset({STARTING, READY})  # counted against min_workers


class WorkerModel(Protocol):
    """What a worker reads of its model version, and the two events it reports to it."""

    name: str
    version: str
    model_dir: str
    handler_override: str | None
    batch_size: int
    response_timeout: float
    log_path: Path
    queue: Sized

    def batch_done(self, worker: Worker, jobs: list[Job]) -> None:
        """The worker answered (or failed) a batch and has room again."""

    def worker_lost(self, worker: Worker, pending: list[Job]) -> None:
        """The worker is gone; `pending` are the jobs it had not answered."""


class WorkerPolicy(Protocol):
    """The engine-wide rules a worker follows (kept by `pool.WorkerPool`)."""

    def note_busy(self, worker: Worker) -> None:
        """The worker's batches out changed (it is busy while it has one)."""

    def worker_poll_us(self, worker: Worker) -> int:
        """The `poll` for the batch just sent to `worker` (busypoll.py)."""


#: Seconds a worker whose connection closed has to exit before it is killed (and its
#: batches, with no exit status of its own to judge by, are retried).
EXIT_GRACE_S = 2.0


class WorkerLost(Exception):
    pass


def error_status(status: Any) -> int:
    """The HTTP status of a failed batch: the one the worker's error frame names (the
    handler's `HandlerError.status`: a `PredictionException`'s code, 507 when out of
    memory), as TorchServe answers it; 503 "Prediction failed" when it names none we can
    send (a worker predating the field, a bug in our runtime)."""
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return status
    return 503


class Worker:
    def __init__(
        self,
        version: WorkerModel,
        policy: WorkerPolicy,
        worker_id: str,
        gpu_id: int | None,
        on_metrics: Callable[[list[dict[str, Any]]], None],
    ) -> None:
        self.version = version
        self.policy = policy
        self.on_metrics = on_metrics  # the handler's custom metrics, as each frame brings them
        self.id = worker_id
        self.gpu_id = gpu_id
        self.status = STARTING
        self.pid: int | None = None
        self.start_time = datetime.now(timezone.utc)
        # TorchServe's WorkerLoadTime and WorkerThreadTime (frontend_metrics.py), read at a
        # scrape: ms from this object's creation to "ready"; the frontend's ms around the
        # last batch (sending it, then finishing its jobs), at `thread_at` (perf_counter)
        self.created = time.perf_counter()
        self.load_ms: float | None = None
        self.thread_ms: float | None = None
        self.thread_at = 0.0
        self._send_s = 0.0
        self.device = "cpu" if gpu_id is None else f"cuda:{gpu_id}"
        self.proc: Any = None
        self.link: protocol.FrameLink | None = None
        self.inflight: dict[int, tuple[list[Job], asyncio.TimerHandle | None]] = {}
        self.describe_waiters: dict[int, asyncio.Future[Any]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.load_error: str | None = None
        self.on_exit: Callable[[Worker], None] | None = None
        self.batches_served = 0
        # when the worker began its current batch, and an average of how long one takes:
        # together, when its answer is due (the engine busy-polls around that moment)
        self.busy_since = 0.0
        self.batch_seconds = 0.0
        # a dead worker's batches wait for its exit status to learn their fate (deaths.py)
        self.killed_by_engine = False
        self.exit_code: int | None = None
        self.death: deaths.Death | None = None  # why it died, once it has (model.worker_lost)
        # CUDA out-of-memory errors its handler raised, and when the last one was
        self.cuda_ooms = 0
        self.last_cuda_oom = 0.0
        self._held: list[list[Job]] | None = None
        self._grace: asyncio.TimerHandle | None = None

    @property
    def n_inflight(self) -> int:
        return len(self.inflight)

    @property
    def queued(self) -> int:
        return len(self.version.queue)

    def answer_expected_at(self) -> float:
        """`perf_counter()` time at which the batch the worker is on should be answered."""
        return self.busy_since + self.batch_seconds

    def _batch_ended(self, now: float) -> None:
        """After an answer (or error) popped a batch: learn its duration, start the next."""
        took = now - self.busy_since
        # follow a drop fast (the first batches include warm-up), a rise more slowly
        weight = 1.0 if self.batch_seconds == 0.0 else 0.5 if took < self.batch_seconds else 0.2
        self.batch_seconds += (took - self.batch_seconds) * weight
        self.busy_since = now
        self.policy.note_busy(self)

    # -- lifecycle ------------------------------------------------------------------------
    async def spawn(self, sock_path: str, threads: int, requirements_dir: str | None) -> None:
        v = self.version
        self.proc = forkserver.context_for(v.model_dir).Process(
            target=_run_worker_entry,
            kwargs=dict(
                sock_path=sock_path,
                worker_id=self.id,
                model_name=v.name,
                model_version=v.version,
                model_dir=v.model_dir,
                handler=v.handler_override,
                gpu_id=self.gpu_id,
                batch_size=v.batch_size,
                log_path=str(v.log_path),
                threads=threads,
                requirements_dir=requirements_dir,
            ),
            name=f"jts-worker-{v.name}-{self.id}",
        )
        loop = asyncio.get_running_loop()
        started = loop.run_in_executor(None, self.proc.start)
        try:
            await asyncio.shield(started)
        except asyncio.CancelledError:
            # cancelled mid-start (the engine stopping while it restores its snapshot): the
            # thread cannot be stopped, so the process comes up all the same, with nobody to
            # stop it. Let the start end, then kill what it started.
            await asyncio.wait([started])
            if started.exception() is None:
                self.proc.kill()
                await loop.run_in_executor(None, self.proc.join, 5)
            raise
        self.pid = self.proc.pid
        loop.add_reader(self.proc.sentinel, self._on_sentinel)

    def attach(self, link: protocol.FrameLink) -> None:
        self.link = link
        link.on_frame = self._on_frame_checked
        link.on_lost = self._on_link_lost
        if self.status == UNLOADING:
            # scaled down while it was starting: it reads this right after loading
            link.send(protocol.encode({"op": "stop"}))

    async def wait_ready(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        except asyncio.TimeoutError:
            self.kill()
            v = self.version
            raise ApiError(
                500,
                "InternalServerException",
                f"Failed to start workers for model {v.name} version: {v.version} "
                f"(worker {self.id} did not load within {timeout:g} s, startup_timeout)",
            ) from None

    def stop(self) -> None:
        """Ask the worker to exit after the batches it already has."""
        self.status = UNLOADING
        if self.link is not None and not self.link.is_closing():
            self.link.send(protocol.encode({"op": "stop"}))

    def kill(self) -> None:
        self.killed_by_engine = True
        if self.pid and not self.exited.done():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _on_sentinel(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.proc.sentinel)
        code = self.proc.exitcode
        try:
            self.proc.close()
        except ValueError:
            pass
        self.exit_code = code
        self._lost(f"exited with code {code}")
        if self._held is not None:
            self._settle()
        if not self.exited.done():
            self.exited.set_result(code)

    # -- traffic --------------------------------------------------------------------------
    def send_batch(self, jobs: list[Job]) -> None:
        assert self.link is not None
        deaths.WATCH.refresh()
        batch_id = next(_batch_ids)
        bodies: list[bytes] = []
        reqs = []
        offset = 0
        now = time.perf_counter()
        for job in jobs:
            spans = []
            for name, ctype, value in job.params:
                spans.append([name, ctype, offset, len(value)])
                offset += len(value)
                bodies.append(value)
            reqs.append({"id": job.id, "h": job.headers, "p": spans})
            job.dispatched = now
        timer = None
        timeout = self.version.response_timeout
        if timeout and timeout > 0:
            timer = asyncio.get_running_loop().call_later(timeout, self._on_timeout, batch_id)
        if not self.inflight:
            self.busy_since = now
        self.inflight[batch_id] = (jobs, timer)
        self.policy.note_busy(self)
        header: dict[str, Any] = {"op": "infer", "batch": batch_id, "reqs": reqs}
        poll_us = self.policy.worker_poll_us(self)
        if poll_us:
            header["poll"] = poll_us
        self.link.send(protocol.encode(header, bodies))
        self._send_s = time.perf_counter() - now

    async def describe(self, timeout: float) -> Any:
        assert self.link is not None
        batch_id = next(_batch_ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.describe_waiters[batch_id] = fut
        self.link.send(protocol.encode({"op": "describe", "batch": batch_id}))
        return await asyncio.wait_for(fut, timeout)

    def _on_timeout(self, batch_id: int) -> None:
        entry = self.inflight.pop(batch_id, None)
        if entry is None:
            return
        self.policy.note_busy(self)
        jobs, _ = entry
        t = self.version.response_timeout
        log.warning(
            "worker %s of %s exceeded response_timeout (%.0f s); replacing it",
            self.id,
            self.version.name,
            t,
        )
        for job in jobs:
            job.fail(
                ApiError(
                    408,
                    "RequestTimeoutException",
                    f"Model {self.version.name} did not answer within {t:g} s (response_timeout); "
                    "its worker was killed and is being replaced",
                )
            )
        self.kill()

    def _on_link_lost(self) -> None:
        if self.link is not None and self.link.broken:
            self.kill()  # it sent garbage: it cannot be trusted with the next batch
        self._lost("closed its connection")

    def _on_frame_checked(self, header: dict[str, Any], payload: memoryview) -> None:
        try:
            self._on_frame(header, payload)
        except Exception:  # noqa: BLE001 - a garbled frame must not kill the engine
            log.exception("bad frame from worker %s", self.id)
            self.kill()
            if self.link is not None:
                self.link.close()

    def _failure(self, frame: dict[str, Any]) -> ApiError:
        """The answer to a failed request or batch, from the worker's error fields."""
        message = frame.get("message", "Prediction failed")
        if frame.get("oom") is True:  # "Out of resources: CUDA out of memory on ..."
            self.cuda_ooms += 1
            self.last_cuda_oom = time.monotonic()
            log.warning("worker %s of %s: %s", self.id, self.version.name, message)
        else:
            message = f"Prediction failed: {message}"
        return ApiError(
            error_status(frame.get("status")),
            "InternalServerException",
            message,
            traceback=str(frame.get("traceback") or ""),
        )

    def _on_frame(self, header: dict[str, Any], payload: memoryview) -> None:
        op = header["op"]
        if header.get("m"):
            self.on_metrics(header["m"])
        if op == "result" or op == "stream":
            if op == "result":
                entry = self.inflight.pop(header["batch"], None)
            else:
                entry = self.inflight.get(header["batch"])
            if entry is None:
                return  # timed out already
            jobs, timer = entry
            began = time.perf_counter()
            if op == "result":
                if timer is not None:
                    timer.cancel()
                self._batch_ended(began)
            for idx, meta in enumerate(header["resps"]):
                place = meta.get("i", idx)  # a chunk of a request retried alone names it
                if not 0 <= place < len(jobs):
                    continue
                job = jobs[place]
                if "e" in meta:  # it failed alone (handlers/service.predict_each)
                    job.fail(self._failure(meta["e"]))
                    continue
                off, n = meta["o"], meta["n"]
                reply = Reply(
                    meta["s"],
                    meta["ct"],
                    bytes(payload[off : off + n]),
                    meta.get("r") or "OK",
                    meta.get("h") or {},
                )
                if op == "stream":
                    if job.on_chunk is not None:
                        job.on_chunk(reply)
                else:
                    job.finish(reply)
            if op == "result":
                self.batches_served += 1
                self.thread_at = time.perf_counter()
                self.thread_ms = (self._send_s + self.thread_at - began) * 1e3
                self.version.batch_done(self, jobs)
        elif op == "error":
            entry = self.inflight.pop(header["batch"], None)
            waiter = self.describe_waiters.pop(header["batch"], None)
            err = self._failure(header)
            if waiter is not None and not waiter.done():
                waiter.set_exception(err)
            if entry is not None:
                jobs, timer = entry
                if timer is not None:
                    timer.cancel()
                self._batch_ended(time.perf_counter())
                for job in jobs:
                    job.fail(err)
                self.version.batch_done(self, jobs)
        elif op == "describe_result":
            waiter = self.describe_waiters.pop(header["batch"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(header.get("value"))
        elif op == "ready":
            if self.status == STARTING:
                self.status = READY
            if self.load_ms is None:
                self.load_ms = (time.perf_counter() - self.created) * 1e3
            self.device = header.get("device", self.device)
            if not self.ready.done():
                self.ready.set_result(None)
        elif op == "load_failed":
            self.status = FAILED
            self.load_error = f"{header.get('error')}\n{header.get('traceback', '')}".strip()
            self._fail_start(self.load_error)

    def _fail_start(self, detail: str) -> None:
        """TorchServe's register failure, with the cause appended."""
        if not self.ready.done():
            self.ready.set_exception(
                ApiError(
                    500,
                    "InternalServerException",
                    f"Failed to start workers for model {self.version.name} version: "
                    f"{self.version.version}: {detail}",
                )
            )

    def _lost(self, why: str) -> None:
        """The process or its connection is gone: hand its batches back, once."""
        if self.status == STOPPED:
            return
        was_unloading = self.status in (UNLOADING, FAILED)
        self.status = STOPPED
        if self.link is not None:
            self.link.close()
        self._fail_start(f"worker {why} before loading (see {self.version.log_path})")
        held = []
        for jobs, timer in self.inflight.values():  # in the order sent: the first was running
            if timer is not None:
                timer.cancel()
            held.append(jobs)
        self.inflight.clear()
        self.policy.note_busy(self)
        for fut in self.describe_waiters.values():
            if not fut.done():
                fut.set_exception(WorkerLost(f"worker {self.id} {why}"))
        self.describe_waiters.clear()
        if not was_unloading:
            log.warning("worker %s of %s %s", self.id, self.version.name, why)
        if self.on_exit is not None:
            self.on_exit(self)
        self._held = held
        if was_unloading:
            self.killed_by_engine = True  # asked to go: what it held is nobody's fault
        if not any(self._held) or self.exit_code is not None or self.proc is None:
            self._settle()
        else:  # the connection went first: the exit status follows, or the worker is killed
            self._grace = asyncio.get_running_loop().call_later(EXIT_GRACE_S, self.kill)

    def _settle(self) -> None:
        """Answer the batch that killed the worker, if one did; hand the rest back."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        held, self._held = self._held or [], None
        self.death = deaths.classify(
            self.version.name,
            self.exit_code,
            self.killed_by_engine,
            str(self.version.log_path),
            gpu_oom=self._gpu_oom_evidence(),
        )
        cause = self.death.error
        if held and held[0] and cause is not None:
            log.warning("worker %s of %s: %s", self.id, self.version.name, cause.message)
            for job in held[0]:
                job.fail(cause)
            held = held[1:]
        self.version.worker_lost(self, [job for jobs in held for job in jobs])

    def _gpu_oom_evidence(self) -> str | None:
        """Why this death may be the GPU's running out of memory (deaths.py), or None."""
        if self.killed_by_engine or self.exit_code is None:
            return None
        if self.last_cuda_oom:
            ago = time.monotonic() - self.last_cuda_oom
            if ago < deaths.GPU_OOM_RECENT_S:
                return f"its handler raised CUDA out of memory {ago:.1f} s before"
        return deaths.gpu_full(self.gpu_id) if self.gpu_id is not None else None

    def describe_json(self) -> dict[str, Any]:
        from .gpu import process_gpu_memory

        mem = 0
        if self.pid and self.status != STOPPED:
            try:
                import psutil

                mem = psutil.Process(self.pid).memory_info().rss
            except Exception:  # noqa: BLE001 - the process may be gone already
                mem = 0
        gpu_usage = "N/A"
        if self.gpu_id is not None and self.pid:
            used = process_gpu_memory(self.pid)
            if used is not None:
                gpu_usage = f"gpuId::{self.gpu_id} memoryUsed::{used // (1024 * 1024)} MiB"
        return {
            "id": self.id,
            "startTime": self.start_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "status": self.status,
            "memoryUsage": mem,
            "pid": self.pid or -1,
            "gpu": self.device.startswith("cuda"),  # where the handler runs, once loaded
            "gpuUsage": gpu_usage,
            "device": self.device,
            "cudaOutOfMemoryErrors": self.cuda_ooms,
        }


def _run_worker_entry(**kwargs: Any) -> None:
    from .worker_main import run_worker

    run_worker(**kwargs)
