"""The worker pool's rules on a WorkerPool with stand-in workers: who may busy-poll, how a
worker learns its batch time, hello routing, ids, GPUs and thread sizing. No process and no
socket: this is the fast tier."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path

from jupyter_torchserve.config import EngineConfig
from jupyter_torchserve.engine.busypoll import PollWindow
from jupyter_torchserve.engine.pool import FIRST_WORKER_ID, WorkerPool
from jupyter_torchserve.engine.protocol import FrameLink, encode
from jupyter_torchserve.engine.workers import Worker


class _Busy:
    """Stands in for a Worker with batches out: its due time, batches and model queue."""

    def __init__(self, due_in: float, batches: int = 1, queued: int = 0) -> None:
        self.at = time.perf_counter() + due_in
        self.n_inflight = batches
        self.queued = queued

    def answer_expected_at(self) -> float:
        return self.at


class _Model:
    """Stands in for a ModelVersion, as a Worker sees it."""

    name = "m"
    version = "1.0"
    model_dir = "/nonexistent"
    handler_override = None
    batch_size = 1
    response_timeout = 0.0
    log_path = Path("/nonexistent/m.log")

    def __init__(self) -> None:
        self.queue: deque[object] = deque()

    def batch_done(self, worker, jobs) -> None:
        pass

    def worker_lost(self, worker, pending) -> None:
        pass


def _pool(cpus: int, busy: list[_Busy] = (), planned: int = 1, gpus: int = 0, **config):
    pool = WorkerPool(
        EngineConfig(**config),
        gpu_count=gpus,
        planned_workers=lambda: planned,
        on_metrics=lambda records: None,
        cpus=cpus,
    )
    pool.busy = set(busy)  # type: ignore[arg-type]
    return pool


def test_poll_only_at_light_load_and_while_a_cpu_is_free_for_it():
    """The engine polls only while an answer is due; the engine and each worker with a batch
    out need a CPU, and no one polls on a CPU that another of them needs. Under load (a
    second batch waiting at a worker, requests queued) nobody polls: the work is there."""
    poll = EngineConfig().busy_poll_us
    assert poll > 0
    idle = _pool(2, [])
    assert idle.answer_due() is None
    one = _Busy(0.5)
    light = _pool(4, [_Busy(5.0), one])
    assert 0.4 < light.answer_due() <= 0.5  # the sooner of the two
    assert light.worker_poll_us(one) == poll  # type: ignore[arg-type]
    full = _pool(2, [_Busy(5.0), one])  # both CPUs taken by workers
    assert full.answer_due() is None and full.worker_poll_us(one) == 0  # type: ignore[arg-type]
    for loaded in (_Busy(0.5, batches=2), _Busy(0.5, queued=3)):
        pool = _pool(4, [loaded])
        assert pool.answer_due() is None
        assert pool.worker_poll_us(loaded) == 0  # type: ignore[arg-type]
    light.config.busy_poll_us = 0
    assert light.worker_poll_us(one) == 0  # type: ignore[arg-type]


def test_a_worker_learns_how_long_its_batches_take():
    """The due time follows the worker's recent batches: fast after warm-up, not pinned to
    the slow first one."""

    async def scenario() -> tuple[Worker, WorkerPool]:
        pool = _pool(2, [])
        worker = Worker(_Model(), pool, "9000", None, lambda records: None)  # no process
        t = 100.0
        for took in [0.5] + [0.001] * 8:  # a slow warm-up batch, then fast ones
            worker.busy_since = t
            worker.inflight = {1: ([], None)}
            t += took
            worker.inflight = {}
            worker._batch_ended(t)
        return worker, pool

    worker, pool = asyncio.run(scenario())
    assert worker.batch_seconds < 0.005
    assert worker not in pool.busy  # nothing out any more


def test_a_worker_counts_as_busy_while_it_has_a_batch_out():
    async def scenario() -> None:
        pool = _pool(2, [])
        worker = Worker(_Model(), pool, "9000", None, lambda records: None)
        worker.inflight = {1: ([], None)}
        pool.note_busy(worker)
        assert pool.busy == {worker}
        assert worker.n_inflight == 1 and worker.queued == 0
        worker.version.queue.append(object())
        assert worker.queued == 1  # its model's queue, read by the rule
        worker.inflight = {}
        pool.note_busy(worker)
        assert pool.busy == set()

    asyncio.run(scenario())


def test_worker_poll_window_grows_to_catch_a_slow_client_and_shrinks_after_pauses():
    """A client whose next request comes soon after the window ended (mnist's: 0.4-0.6 ms)
    doubles the worker's window until it is caught, up to GROWTH x the engine's poll; a
    client that paused halves it again, never below the engine's poll."""
    base = 300
    cap = base * PollWindow.GROWTH
    w = PollWindow()
    assert w.current(base) == base
    w.missed(base, 500)
    assert w.current(base) == 2 * base
    w.missed(base, 900)
    assert w.current(base) == 4 * base == cap
    w.missed(base, cap)  # still soon: doubling stops at the cap
    assert w.current(base) == cap
    w.missed(base, 50_000)  # a pause: halve
    assert w.current(base) == 2 * base
    w.missed(base, 50_000)
    w.missed(base, 50_000)
    assert w.current(base) == base  # never below what the engine allows
    w.missed(base, 500)
    assert w.current(100) == 400  # the engine lowered its poll: the cap follows it
    w.missed(0, 500)
    assert w.current(0) == 0  # under load the engine says 0: no polling at all


class _Transport:
    def __init__(self) -> None:
        self.closed = False
        self.written: list[bytes] = []

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def writelines(self, buffers) -> None:
        self.written.append(b"".join(buffers))


def test_a_hello_attaches_the_link_to_the_worker_waiting_for_that_id_once():
    """A worker dials back and says hello with its id: the link becomes that worker's. A
    hello with an id nobody waits for (a stale or forged one) is hung up on."""

    async def scenario() -> None:
        pool = _pool(2, [])
        model = _Model()
        worker = pool.new_worker(model, None)
        assert pool.pending == {worker.id: worker}

        link = FrameLink(pool._on_hello)
        transport = _Transport()
        link.connection_made(transport)  # type: ignore[arg-type]
        link.data_received(b"".join(encode({"op": "hello", "worker_id": worker.id, "pid": 1})))
        assert worker.link is link and link.on_frame is not None
        assert pool.pending == {} and not transport.closed

        again = FrameLink(pool._on_hello)
        other = _Transport()
        again.connection_made(other)  # type: ignore[arg-type]
        again.data_received(b"".join(encode({"op": "hello", "worker_id": worker.id})))
        assert other.closed  # that id was taken already

        gone = pool.new_worker(model, None)
        pool.forget(gone)  # its spawn failed, or it died before saying hello
        late = FrameLink(pool._on_hello)
        late_transport = _Transport()
        late.connection_made(late_transport)  # type: ignore[arg-type]
        late.data_received(b"".join(encode({"op": "hello", "worker_id": gone.id})))
        assert late_transport.closed and gone.link is None

    asyncio.run(scenario())


def test_worker_ids_count_from_9000_and_gpus_go_round_robin():
    """Like TorchServe: ids 9000, 9001, ... engine-wide; GPUs in turn across every model,
    none for a version that asks for the CPU or on a machine without one."""

    async def scenario() -> None:
        pool = _pool(4, gpus=2)
        a, b = _Model(), _Model()
        workers = [pool.new_worker(a, None), pool.new_worker(b, "gpu"), pool.new_worker(a, None)]
        assert [w.id for w in workers] == [str(FIRST_WORKER_ID + i) for i in range(3)]
        assert [w.gpu_id for w in workers] == [0, 1, 0]
        assert [w.device for w in workers] == ["cuda:0", "cuda:1", "cuda:0"]
        assert pool.new_worker(a, "cpu").gpu_id is None
        assert _pool(4, gpus=0).new_worker(a, "gpu").gpu_id is None

    asyncio.run(scenario())


def test_threads_per_worker_leave_a_core_to_the_event_loop():
    """Sized from the workers asked for, so workers started together get the same count;
    `worker_threads` overrides it."""
    assert _pool(2, planned=1).threads_per_worker() == 1
    assert _pool(8, planned=1).threads_per_worker() == 7
    assert _pool(8, planned=2).threads_per_worker() == 3
    assert _pool(8, planned=0).threads_per_worker() == 7  # nothing asked for yet
    assert _pool(4, planned=16).threads_per_worker() == 1
    assert _pool(8, planned=1, worker_threads=2).threads_per_worker() == 2


def test_each_request_of_a_batch_gets_its_own_answer_or_error():
    """A worker whose batch failed and was run again one request at a time answers in one
    result frame: the requests that passed get their replies, each that failed its own
    error and status; a chunk streamed by a request run alone goes to that request."""
    from jupyter_torchserve.engine.errors import ApiError
    from jupyter_torchserve.engine.jobs import Job

    async def scenario() -> None:
        pool = _pool(2, [])
        worker = Worker(_Model(), pool, "9000", None, lambda records: None)
        loop = asyncio.get_running_loop()
        jobs = [Job(str(i), {}, [], loop.create_future()) for i in range(3)]
        chunks: list = []
        jobs[2].on_chunk = chunks.append
        worker.inflight = {7: (jobs, None)}
        ok = {"s": 200, "ct": "application/json", "r": "OK", "h": {}}
        stream = [{**ok, "i": 2, "o": 0, "n": 5}]
        worker._on_frame({"op": "stream", "batch": 7, "resps": stream}, memoryview(b"chunk"))
        failed = {"message": "PredictionException: bad", "traceback": "tb", "status": 400}
        resps = [{**ok, "o": 0, "n": 1}, {"e": failed}, {**ok, "o": 1, "n": 1}]
        worker._on_frame({"op": "result", "batch": 7, "resps": resps}, memoryview(b"12"))
        assert [c.body for c in chunks] == [b"chunk"]  # to the request that streamed it
        assert jobs[0].future.result().body == b"1" and jobs[2].future.result().body == b"2"
        err = jobs[1].future.exception()
        assert isinstance(err, ApiError) and err.status == 400
        assert err.message == "Prediction failed: PredictionException: bad"
        assert worker.inflight == {} and worker.batches_served == 1

    asyncio.run(scenario())


def test_a_worker_start_cancelled_midway_kills_the_process_it_started(monkeypatch):
    """The engine stopping during a restore, or a gRPC caller's deadline, can cancel a
    register while its worker's process is being started in a thread. That process still
    comes up; it must be killed, not left running with nobody to stop it."""
    import threading

    from jupyter_torchserve.engine import forkserver

    release = threading.Event()
    procs: list = []

    class _Proc:
        pid = 4242
        sentinel = -1

        def __init__(self, **kwargs) -> None:
            self.started = self.killed = self.joined = False
            procs.append(self)

        def start(self) -> None:
            release.wait(10)
            self.started = True

        def kill(self) -> None:
            self.killed = True

        def join(self, timeout=None) -> None:
            self.joined = True

    class _Context:
        Process = _Proc

    monkeypatch.setattr(forkserver, "context_for", lambda model_dir: _Context())

    async def scenario() -> None:
        pool = _pool(2, [])
        worker = pool.new_worker(_Model(), None)
        task = asyncio.ensure_future(worker.spawn("/nonexistent.sock", 1, None))
        await asyncio.sleep(0.05)  # the start is under way in its thread
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # it waits for the start to end: it cannot stop it midway
        release.set()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the spawn should stay cancelled")
        (proc,) = procs
        assert proc.started and proc.killed and proc.joined
        assert worker.pid is None  # never taken on

    asyncio.run(scenario())
