"""The engine's side of its worker processes, as one pool.

A worker's id, GPU, torch thread count and busy-poll allowance are engine-wide decisions:
GPUs are handed out round-robin across every model (TorchServe's `nextGpu`), the cores are
shared by every worker and the event loop, and whether anyone may poll depends on every
worker with a batch out. So a model version asks the pool instead of deciding alone, and
the pool owns the Unix socket the workers dial back on: a worker says hello with its id
and is handed to the Worker object waiting for it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import EngineConfig
from . import busypoll, forkserver, tmpdirs
from .errors import ApiError
from .gpu import GpuAssigner
from .protocol import FrameLink
from .workers import Worker, WorkerModel

FIRST_WORKER_ID = 9000  # TorchServe numbers its workers from 9000 too


class WorkerPool:
    def __init__(
        self,
        config: EngineConfig,
        *,
        gpu_count: int,
        planned_workers: Callable[[], int],
        on_metrics: Callable[[list[dict[str, Any]]], None],
        cpus: int | None = None,
    ) -> None:
        """`planned_workers` counts the workers the engine is asked for (every version's
        min_workers); `on_metrics` takes the custom metrics handlers send."""
        self.config = config
        self.cpus = cpus or os.cpu_count() or 1
        self.gpus = GpuAssigner(gpu_count)
        self.busy: set[Worker] = set()  # those with a batch out (`note_busy`)
        self.pending: dict[str, Worker] = {}  # spawned, waiting for their hello
        self._planned = planned_workers
        self._on_metrics = on_metrics
        self._ids = FIRST_WORKER_ID
        self._sock_dir: tmpdirs.PrivateDir | None = None
        self.socket_path = ""
        self._server: asyncio.AbstractServer | None = None
        self._forkserver_ready: asyncio.Future[None] | None = None

    # -- the socket -------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for workers and start the forkserver (its `import torch`) in a thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, tmpdirs.sweep)
        # Unix socket paths are limited to 107 bytes: keep them short and private
        self._sock_dir = tmpdirs.PrivateDir()
        self.socket_path = str(self._sock_dir.path / "w.sock")
        self._server = await loop.create_unix_server(
            lambda: FrameLink(self._on_hello), self.socket_path
        )
        os.chmod(self.socket_path, 0o600)
        self._forkserver_ready = loop.run_in_executor(None, forkserver.warm)

    async def forkserver_ready(self) -> None:
        if self._forkserver_ready is not None:
            await self._forkserver_ready

    def _on_hello(self, link: FrameLink, header: dict[str, Any]) -> None:
        worker = self.pending.pop(str(header.get("worker_id")), None)
        if worker is None:
            link.close()
            return
        worker.attach(link)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._sock_dir is not None:
            self._sock_dir.remove()
            self._sock_dir = None

    # -- workers ----------------------------------------------------------------------------
    def new_worker(self, version: WorkerModel, device_type: str | None) -> Worker:
        """A worker for `version` with the next id and GPU, expected to say hello."""
        gpu_id = self.gpus.assign(device_type)
        worker = Worker(version, self, self._next_id(), gpu_id, self._on_metrics)
        self.pending[worker.id] = worker
        return worker

    async def spawn(self, worker: Worker, requirements_dir: str | None) -> None:
        """Fork `worker`'s process; on failure it is no longer expected."""
        try:
            await worker.spawn(self.socket_path, self.threads_per_worker(), requirements_dir)
        except BaseException:
            self.forget(worker)
            raise

    def forget(self, worker: Worker) -> None:
        """`worker` is gone: a late hello with its id is refused."""
        self.pending.pop(worker.id, None)

    def _next_id(self) -> str:
        self._ids += 1
        return str(self._ids - 1)

    def threads_per_worker(self) -> int:
        """torch intra-op threads for a new worker.

        Sized from the workers the engine is *asked* for (so two workers started together get
        the same count), leaving one core to the event loop: two threads beside it made small
        ops wait milliseconds for a core (docs/performance.md, "Engine findings", 1).
        """
        if self.config.worker_threads > 0:
            return self.config.worker_threads
        return max(1, (self.cpus - 1) // (self._planned() or 1))

    async def requirements_for(
        self, name: str, model_dir: str, manifest: dict[str, Any]
    ) -> str | None:
        """Install an archive's requirements into a per-model folder, when opted in."""
        req = manifest.get("model", {}).get("requirementsFile")
        if not (self.config.install_py_dep_per_model and req):
            return None
        target = Path(model_dir + "-deps")
        if not target.exists():
            from ..handlers.requirements import install_requirements

            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, install_requirements, model_dir, str(target))
            except Exception as e:  # noqa: BLE001
                shutil.rmtree(target, ignore_errors=True)
                raise ApiError(
                    500,
                    "InternalServerException",
                    f"Installing the requirements of model {name} failed: {e}",
                ) from None
        return str(target)

    # -- busy-polling (the rule: busypoll.py) ----------------------------------------------------
    def note_busy(self, worker: Worker) -> None:
        if worker.inflight:
            self.busy.add(worker)
        else:
            self.busy.discard(worker)

    def answer_due(self) -> float | None:
        return busypoll.answer_due(self.busy, self.cpus)

    def worker_poll_us(self, worker: Worker) -> int:
        return busypoll.worker_poll_us(worker, len(self.busy), self.cpus, self.config.busy_poll_us)
