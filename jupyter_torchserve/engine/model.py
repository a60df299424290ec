"""One model version: its request queue, its batcher and its workers.

Batching is adaptive. A request is sent at once when some worker is idle, so a lone request
never pays `max_batch_delay` (TorchServe always waits the full delay at batch size > 1).
When every worker is busy, requests wait for company: a batch goes out when `batch_size`
requests are queued, when a worker becomes idle, or when the oldest request has waited
`max_batch_delay`. A worker may hold `max_inflight` batches, so the next one is already in
its socket buffer when it finishes the current one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..config import EngineConfig
from ..handlers.resolve import served_builtin
from .autoscale import Autoscaler, Event, Policy, write_event
from .deaths import write_death
from .errors import ApiError, QueueFull
from .jobs import Job
from .metrics import EngineMetrics
from .pool import WorkerPool
from .registration import Settings
from .v2_schema import v2_metadata_tensors
from .workers import FAILED, LIVE, READY, STARTING, Worker

log = logging.getLogger("jupyter_torchserve.engine")

RESTART_BACKOFF = (0.5, 1, 2, 4, 8, 16, 30)
#: Unasked-for worker deaths kept per version for `describe`.
DEATHS_KEPT = 10
#: Seconds a rolled-back scale-up waits for the workers it started to exit.
ROLLBACK_WAIT_S = 10.0
#: Seconds an unload gives its workers to serve what is queued and exit before it kills them.
UNLOAD_WAIT_S = 10.0


class ModelVersion:
    def __init__(
        self,
        pool: WorkerPool,
        metrics: EngineMetrics,
        config: EngineConfig,
        *,
        name: str,
        version: str,
        url: str,
        model_dir: str,
        manifest: dict[str, Any],
        metadata: dict[str, Any],
        handler_override: str | None,
        settings: Settings,
        loaded_at_startup: bool,
        cache_key: str | None,
        log_path: Path,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.config = config  # read as requests come: job_queue_size, max_inflight_per_worker
        self.name = name
        self.version = version
        self.url = url
        self.model_dir = model_dir
        self.manifest = manifest
        self.metadata = metadata
        self.handler_override = handler_override
        # the built-in that serves (None: the archive's own code): the archive's record,
        # unless registration named another handler (its KServe envelopes follow this one)
        self.builtin_handler: str | None = (
            served_builtin(model_dir, handler_override)
            if handler_override
            else metadata.get("builtin_handler")
        )
        self.v2_tensors = v2_metadata_tensors(metadata, self.builtin_handler)
        self.batch_size = max(1, settings.batch_size)
        self.max_batch_delay = max(0, settings.max_batch_delay)
        self.response_timeout = settings.response_timeout
        self.startup_timeout = settings.startup_timeout
        self.device_type = settings.device_type
        self.loaded_at_startup = loaded_at_startup
        self.cache_key = cache_key
        self.min_workers = 0
        self.max_workers = 0
        self.workers: list[Worker] = []
        self.queue: deque[Job] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._restarts = 0
        self._last_restart = 0.0
        self.replacing = 0  # lost workers whose replacement is waiting or starting (/ping)
        self.unregistered = False
        self.log_path = log_path
        self.autoscaler = Autoscaler(self._autoscaled)
        self.gpu_peak = 0  # the largest GPU memory a worker of this version was seen using
        self._gpu_estimate: int | None = None
        # deaths the engine did not ask for, newest last, for describe (deaths.Death)
        self.worker_deaths: deque[dict[str, Any]] = deque(maxlen=DEATHS_KEPT)

    # -- what the APIs see ------------------------------------------------------------------
    @property
    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.status in LIVE]

    @property
    def ready_workers(self) -> list[Worker]:
        return [w for w in self.workers if w.status == READY]

    def describe_json(self) -> dict[str, Any]:
        gpu = any(w.gpu_id is not None for w in self.live_workers)
        return {
            "modelName": self.name,
            "modelVersion": self.version,
            "modelUrl": self.url,
            "runtime": self.manifest.get("runtime", "python"),
            "minWorkers": self.min_workers,
            "maxWorkers": self.max_workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay,
            "loadedAtStartup": self.loaded_at_startup,
            "workers": [w.describe_json() for w in self.live_workers],
            "jobQueueStatus": {
                "remainingCapacity": self.config.job_queue_size - len(self.queue),
                "pendingRequests": len(self.queue),
            },
            "responseTimeout": math.ceil(self.response_timeout),
            "startupTimeout": math.ceil(self.startup_timeout),
            "deviceType": "gpu" if gpu else "cpu",
            "handler": self.handler_override or self.manifest.get("model", {}).get("handler"),
            "archiveFormat": self.metadata.get("format"),
            "autoscale": self.autoscaler.describe_json(self, Policy.from_config(self.config)),
            "workerDeaths": list(self.worker_deaths),
        }

    # -- requests ---------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        if not self.live_workers:
            raise ApiError(
                503,
                "ServiceUnavailableException",
                f'Model "{self.name}" has no worker to serve inference request. '
                "Please use scale workers API to add workers.",
            )
        if len(self.queue) >= self.config.job_queue_size:
            raise QueueFull(self.name, self.version, self.config.job_queue_size)
        self.queue.append(job)
        self.dispatch()

    def dispatch(self) -> None:
        """Send whatever the adaptive batching rule allows right now."""
        limit = self.config.max_inflight_per_worker
        while self.queue:
            worker = None
            for w in self.workers:
                if (
                    w.status == READY
                    and w.n_inflight < limit
                    and (worker is None or w.n_inflight < worker.n_inflight)
                ):
                    worker = w
            if worker is None:
                return
            if (
                worker.n_inflight == 0
                or len(self.queue) >= self.batch_size
                or self._oldest_waited() >= self.max_batch_delay / 1000
            ):
                batch = self._take_batch()
                if batch:
                    self.metrics.batch_sent(self, batch)
                    worker.send_batch(batch)
                continue
            self._arm_timer()
            return

    def _take_batch(self) -> list[Job]:
        """Up to `batch_size` queued jobs of the oldest one's kind, in arrival order.

        Why one kind per batch: a handler answers a batch one way (TorchServe's BaseHandler
        reads `explain` from its first request only), and an explanation costs about
        `n_steps` predictions, so a prediction must not ride in an explanation's batch. Jobs
        of the other kind keep their places at the head of the queue, so neither kind
        starves the other. Withdrawn jobs (the client gave up) are dropped on the way.
        """
        queue = self.queue
        batch: list[Job] = []
        passed: list[Job] = []
        kind = None
        while queue and len(batch) < self.batch_size:
            job = queue.popleft()
            if job.future.done():
                continue
            if kind is None:
                kind = job.kind
            (batch if job.kind == kind else passed).append(job)
        queue.extendleft(reversed(passed))
        return batch

    def _oldest_waited(self) -> float:
        return time.perf_counter() - self.queue[0].enqueued if self.queue else 0.0

    # -- what the autoscaler reads and does (engine/autoscale.py) ----------------------------
    def queue_depth(self) -> int:
        return len(self.queue)

    def oldest_wait(self) -> float:
        return self._oldest_waited()

    async def add_worker(self) -> Worker:
        """One more worker, ready; a failed start leaves the others serving."""
        worker = await self._start_worker()
        await worker.wait_ready(self.startup_timeout)
        self.dispatch()
        return worker

    def drain_worker(self, worker: Worker) -> None:
        worker.stop()  # it answers what it has, then exits; dispatch skips it from now

    def _autoscaled(self, _mv: object, event: Event) -> None:
        write_event(self, event)
        self.metrics.autoscale_event(self, event.action)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            return
        wait = max(0.0, self.max_batch_delay / 1000 - self._oldest_waited())
        self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.dispatch()

    def batch_done(self, worker: Worker, jobs: list[Job]) -> None:
        """A worker has room again: hand it whatever queued meanwhile.

        A worker being unloaded is skipped by dispatch and exits after its stop message."""
        self.dispatch()

    # -- workers ----------------------------------------------------------------------------
    async def scale(self, min_workers: int, max_workers: int, timeout: float | None = None) -> None:
        """Bring the live worker count to `min_workers` and wait until they are ready.

        All or nothing: when one of the new workers cannot start (GPU placement refuses,
        its load fails, startup_timeout), the ones this call started are stopped and the
        version is left as it was (its workers, min and max), and the error says so.
        """
        before = (self.min_workers, self.max_workers)
        self.min_workers = min_workers
        self.max_workers = max_workers
        live = self.live_workers
        if len(live) > min_workers:
            await self._scale_down(live[min_workers:], timeout)
        wanted = max(0, min_workers - len(live))
        others = [w for w in live if w.status == STARTING]  # a restart, an earlier scale
        started: list[Worker] = []
        try:
            for _ in range(wanted):
                started.append(await self._start_worker())
            results = await asyncio.gather(
                *(w.wait_ready(self.startup_timeout) for w in started), return_exceptions=True
            )
        except BaseException as e:  # noqa: BLE001 - rolled back, then raised
            raise await self._roll_back(
                started, before, min_workers, wanted, len(started) + 1, e
            ) from e
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                raise await self._roll_back(started, before, min_workers, wanted, i + 1, r) from r
        await asyncio.gather(
            *(w.wait_ready(self.startup_timeout) for w in others), return_exceptions=True
        )
        self.dispatch()

    async def _roll_back(
        self,
        started: list[Worker],
        before: tuple[int, int],
        target: int,
        wanted: int,
        failed_at: int,
        cause: BaseException,
    ) -> BaseException:
        """Undo a scale-up that failed part-way; the error to raise, naming what failed.

        min/max go back first, so the stopped workers are not replaced (worker_lost keeps
        `min_workers` alive). A started worker may already hold batches (dispatch uses any
        ready worker): it is drained, so nothing it holds is lost; one still loading is
        killed, as it holds nothing."""
        self.min_workers, self.max_workers = before
        for w in started:
            if w.status == READY:
                w.stop()
            elif w.status == STARTING:
                w.kill()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(w.exited) for w in started)), ROLLBACK_WAIT_S
            )
        except asyncio.TimeoutError:
            for w in started:
                w.kill()
        self.dispatch()
        if isinstance(cause, asyncio.CancelledError):
            return cause
        status, kind = 500, "InternalServerException"
        if isinstance(cause, ApiError):
            status, kind = cause.status, cause.type
        detail = getattr(cause, "message", None) or f"{type(cause).__name__}: {cause}"
        live = len(self.live_workers)
        log.warning(
            "scaling %s %s failed at new worker %d of %d; rolled back",
            self.name,
            self.version,
            failed_at,
            wanted,
        )
        return ApiError(
            status,
            kind,
            # the cause first: its words are TorchServe's ("Failed to start workers ...")
            f"{detail.rstrip('.')}. Scaling model {self.name} version {self.version} to "
            f"{target} workers failed at new worker {failed_at} of "
            f"{wanted} and was rolled back: the {len(started)} worker(s) it started are "
            f"stopped; the model keeps {live} worker(s), min_worker {before[0]}, "
            f"max_worker {before[1]}",
            traceback=getattr(cause, "traceback", ""),
        )

    async def _start_worker(self) -> Worker:
        # before the worker exists: a failed install must not leave a never-started worker
        requirements_dir = await self.pool.requirements_for(
            self.name, self.model_dir, self.manifest
        )
        on_gpu = self.pool.gpus.count > 0 and self.device_type != "cpu"
        worker = self.pool.new_worker(self, self.device_type, self.gpu_footprint() if on_gpu else 0)
        self.workers.append(worker)
        try:
            await self.pool.spawn(worker, requirements_dir)
        except BaseException:
            self.workers.remove(worker)
            raise
        return worker

    def gpu_footprint(self) -> int:
        """GPU bytes one more worker will need: the largest a worker of this version has
        used (NVML's per-process accounting), else an estimate from the archive's size."""
        from .gpu import estimate_footprint, process_gpu_memory

        used = [
            process_gpu_memory(w.pid) or 0
            for w in self.live_workers
            if w.gpu_id is not None and w.pid and w.status == READY
        ]
        self.gpu_peak = max([self.gpu_peak, *used])
        if self.gpu_peak:
            return self.gpu_peak
        if self._gpu_estimate is None:
            self._gpu_estimate = estimate_footprint(self.model_dir)
        return self._gpu_estimate

    async def _scale_down(self, workers: list[Worker], timeout: float | None) -> None:
        """Stop workers after their in-flight batches: nothing queued or running is lost."""
        for w in workers:
            w.stop()  # it answers what it has, then exits
        if timeout is not None and timeout >= 0:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(w.exited) for w in workers)), timeout or 0.001
                )
            except asyncio.TimeoutError:
                for w in workers:
                    w.kill()
        else:
            await asyncio.gather(*(asyncio.shield(w.exited) for w in workers))

    def worker_lost(self, worker: Worker, pending: list[Job]) -> None:
        """Retry its batches once elsewhere; keep `min_workers` alive with backoff."""
        self.pool.forget(worker)
        if worker in self.workers:
            self.workers.remove(worker)
        self._note_death(worker)
        retry = []
        for job in pending:
            if job.retried or job.future.done():
                job.fail(
                    ApiError(
                        503,
                        "InternalServerException",
                        f"Worker died while serving model {self.name}; see {self.log_path}",
                    )
                )
            else:
                job.retried = True
                retry.append(job)
        self.queue.extendleft(reversed(retry))
        if (
            not self.unregistered
            and worker.status != FAILED
            and worker.ready.done()
            and worker.ready.exception() is None
            and len(self.live_workers) < self.min_workers
        ):
            self.replacing += 1
            asyncio.get_running_loop().create_task(self._restart())
        elif not self.live_workers:
            self._fail_queue()
        self.dispatch()

    def _note_death(self, worker: Worker) -> None:
        """A death nobody asked for goes into describe and the model's log, named."""
        death = worker.death
        started = worker.ready.done() and worker.ready.exception() is None
        if death is None or worker.killed_by_engine or not started:
            return  # stopped on purpose, or a failed start (that is the scale call's answer)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.worker_deaths.append(
            {"time": stamp, "worker": worker.id, "pid": worker.pid, "device": worker.device}
            | death.to_json()
        )
        write_death(str(self.log_path), worker.id, death)

    async def _restart(self) -> None:
        try:
            await self._replace_lost_worker()
        finally:
            self.replacing -= 1

    async def _replace_lost_worker(self) -> None:
        now = time.monotonic()
        self._restarts = self._restarts + 1 if now - self._last_restart < 60 else 0
        self._last_restart = now
        await asyncio.sleep(RESTART_BACKOFF[min(self._restarts, len(RESTART_BACKOFF) - 1)])
        if self.unregistered or len(self.live_workers) >= self.min_workers:
            return
        try:
            worker = await self._start_worker()
            await worker.wait_ready(self.startup_timeout)
            log.info("replaced a lost worker of %s with worker %s", self.name, worker.id)
        except Exception as e:  # noqa: BLE001
            log.error("could not replace a worker of %s: %s", self.name, e)
            if not self.live_workers:
                self._fail_queue()
        self.dispatch()

    def _fail_queue(self) -> None:
        """Answer what is queued: the version has no worker left, or is being unregistered."""
        if self.unregistered:
            message = (
                f'Model "{self.name}" version {self.version} was unregistered before this '
                f"request could be served (within {UNLOAD_WAIT_S:g}s)"
            )
        else:
            message = (
                f'Model "{self.name}" has no worker to serve inference request. '
                "Please use scale workers API to add workers."
            )
        while self.queue:
            self.queue.popleft().fail(ApiError(503, "ServiceUnavailableException", message))

    async def unload(self) -> None:
        """Stop serving this version: the requests it has already taken are answered first.

        The version is out of the registry by now, so nothing new arrives; the workers serve
        the queue and their batches, then stop, all within `UNLOAD_WAIT_S`. Past that, the
        workers are killed and what is still queued is told why. (TorchServe 0.12 leaves the
        requests of an unregistered model unanswered, the running one too.)
        """
        self.unregistered = True
        deadline = time.monotonic() + UNLOAD_WAIT_S
        workers = list(self.live_workers)
        while workers and self._has_work() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._timer is not None:
            self._timer.cancel()
        for w in workers:
            w.stop()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(w.exited) for w in workers)),
                max(deadline - time.monotonic(), 1.0),
            )
        except asyncio.TimeoutError:
            for w in workers:
                w.kill()
        self._fail_queue()

    def _has_work(self) -> bool:
        """A request waiting whose client is still there, or a batch at a live worker."""
        return any(not job.future.done() for job in self.queue) or any(
            w.n_inflight for w in self.live_workers
        )
