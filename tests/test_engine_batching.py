"""A model version's queue and adaptive batching (`ModelVersion.submit`/`dispatch`) with
stand-in workers and pool: when a batch goes out, to whom, and what happens to queued
requests when a worker is lost. No process: fast tier."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jupyter_torchserve.config import EngineConfig
from jupyter_torchserve.engine.errors import ApiError
from jupyter_torchserve.engine.jobs import Job, Reply
from jupyter_torchserve.engine.metrics import EngineMetrics
from jupyter_torchserve.engine.model import ModelVersion
from jupyter_torchserve.engine.registration import Settings
from jupyter_torchserve.engine.workers import FAILED, READY, STARTING, STOPPED
from jupyter_torchserve.prometheus import samples


class _Worker:
    """Takes batches and holds them until told to answer."""

    def __init__(self, name: str, status: str = READY) -> None:
        self.id = name
        self.status = status
        self.batches: list[list[Job]] = []
        self.inflight: dict[int, list[Job]] = {}
        self.gpu_id = None
        self.death = None  # a real Worker's deaths.Death, once it has died
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def n_inflight(self) -> int:
        return len(self.inflight)

    def send_batch(self, jobs: list[Job]) -> None:
        self.batches.append(jobs)
        self.inflight[len(self.batches)] = jobs

    def answer(self, version: ModelVersion) -> None:
        """Answer the oldest batch out, as a worker's result frame does."""
        key = min(self.inflight)
        jobs = self.inflight.pop(key)
        for job in jobs:
            job.finish(Reply(200, "text/plain", job.id.encode()))
        version.batch_done(self, jobs)  # type: ignore[arg-type]


class _Pool:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget(self, worker) -> None:
        self.forgotten.append(worker.id)


def _version(workers: list[_Worker], batch_size: int = 4, delay_ms: int = 50, **config):
    mv = ModelVersion(
        _Pool(),  # type: ignore[arg-type]
        EngineMetrics(lambda: []),
        EngineConfig(**config),
        name="m",
        version="1.0",
        url="m.mar",
        model_dir="/nonexistent",
        manifest={},
        metadata={},
        handler_override=None,
        settings=Settings(batch_size, delay_ms, 0, 1, None, 1, 1),
        loaded_at_startup=False,
        cache_key=None,
        log_path=Path("/nonexistent/m.log"),
    )
    mv.workers = workers  # type: ignore[assignment]
    return mv


def _job(i: int | str, explain: bool = False) -> Job:
    headers = {"explain": "True"} if explain else {}
    return Job(
        id=str(i), headers=headers, params=[], future=asyncio.get_running_loop().create_future()
    )


def _ids(batch: list[Job]) -> list[str]:
    return [j.id for j in batch]


def test_a_lone_request_goes_at_once_to_an_idle_worker():
    """Unlike TorchServe at batch size > 1, no request waits max_batch_delay for company
    while a worker has nothing to do."""

    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=8, delay_ms=10_000)
        mv.submit(_job(0))
        assert [_ids(b) for b in w.batches] == [["0"]] and not mv.queue

    asyncio.run(scenario())


def test_while_every_worker_is_busy_requests_wait_for_a_full_batch():
    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=3, delay_ms=10_000)
        for i in range(4):
            mv.submit(_job(i))
        # 0 went at once; 1-3 waited until three were queued, then went as one batch
        assert [_ids(b) for b in w.batches] == [["0"], ["1", "2", "3"]]

    asyncio.run(scenario())


def test_a_worker_with_room_again_takes_what_queued_meanwhile():
    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=8, delay_ms=10_000, max_inflight_per_worker=1)
        for i in range(3):
            mv.submit(_job(i))
        assert [_ids(b) for b in w.batches] == [["0"]] and len(mv.queue) == 2
        w.answer(mv)
        assert [_ids(b) for b in w.batches] == [["0"], ["1", "2"]] and not mv.queue

    asyncio.run(scenario())


def test_the_oldest_request_waits_at_most_max_batch_delay():
    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=8, delay_ms=20)
        mv.submit(_job(0))  # w is busy now
        mv.submit(_job(1))
        mv.submit(_job(2))
        assert [_ids(b) for b in w.batches] == [["0"]]  # waiting for company
        await asyncio.sleep(0.2)
        assert [_ids(b) for b in w.batches] == [["0"], ["1", "2"]]

    asyncio.run(scenario())


def test_batches_go_to_the_least_loaded_ready_worker_up_to_max_inflight():
    async def scenario() -> None:
        starting = _Worker("s", STARTING)
        a, b = _Worker("a"), _Worker("b")
        mv = _version([starting, a, b], batch_size=1, max_inflight_per_worker=2)
        for i in range(5):
            mv.submit(_job(i))
        assert [_ids(x) for x in a.batches] == [["0"], ["2"]]
        assert [_ids(x) for x in b.batches] == [["1"], ["3"]]
        assert starting.batches == [] and _ids(list(mv.queue)) == ["4"]  # all full

    asyncio.run(scenario())


def test_a_withdrawn_request_is_not_sent():
    """A client that hung up has its job's future cancelled: dispatch skips it."""

    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=3, delay_ms=10_000)
        mv.submit(_job(0))
        gone = _job(1)
        mv.submit(gone)
        gone.future.cancel()
        mv.submit(_job(2))
        mv.submit(_job(3))
        assert [_ids(b) for b in w.batches] == [["0"], ["2", "3"]]

    asyncio.run(scenario())


def test_no_live_worker_or_a_full_queue_is_a_503():
    async def scenario() -> None:
        with pytest.raises(ApiError) as e:
            _version([_Worker("f", FAILED)]).submit(_job(0))
        assert e.value.status == 503 and "has no worker" in e.value.message
        mv = _version([_Worker("w")], batch_size=8, delay_ms=10_000, job_queue_size=2)
        for i in range(3):
            mv.submit(_job(i))  # one out, two queued
        with pytest.raises(ApiError) as e:
            mv.submit(_job(3))
        assert e.value.status == 503 and "full job queue (2 requests" in e.value.message

    asyncio.run(scenario())


def test_a_lost_workers_batches_are_retried_once_elsewhere():
    """What a dead worker had is queued again in front, once; a job that was retried
    already fails with TorchServe's 503 naming the model's log."""

    async def scenario() -> None:
        lost, other = _Worker("lost"), _Worker("other")
        mv = _version([lost], batch_size=1, max_inflight_per_worker=2)
        first, second = _job(0), _job(1)
        mv.submit(first)
        mv.submit(second)
        assert [_ids(b) for b in lost.batches] == [["0"], ["1"]]
        second.retried = True  # as if a worker had died under it before
        mv.workers.append(other)  # type: ignore[arg-type]
        lost.status = STOPPED
        mv.worker_lost(lost, [first, second])  # type: ignore[arg-type]
        assert mv.pool.forgotten == ["lost"] and lost not in mv.workers
        with pytest.raises(ApiError) as e:
            second.future.result()
        assert e.value.status == 503 and "Worker died while serving model m" in e.value.message
        assert [_ids(b) for b in other.batches] == [["0"]] and first.retried

    asyncio.run(scenario())


def test_queued_requests_fail_when_the_last_worker_is_gone():
    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=8, delay_ms=10_000, max_inflight_per_worker=1)
        jobs = [_job(i) for i in range(3)]
        for job in jobs:
            mv.submit(job)
        w.status = FAILED  # its load failed: no restart
        mv.worker_lost(w, w.inflight.pop(1))  # type: ignore[arg-type]
        for job in jobs:
            assert isinstance(job.future.exception(), ApiError)
        assert [job.future.exception().status for job in jobs] == [503, 503, 503]
        assert not mv.queue

    asyncio.run(scenario())


def test_a_batch_holds_predictions_or_explanations_never_both():
    """The oldest queued job decides a batch's kind; the other kind keeps its place in
    front, so it goes in the next batch (an explanation costs about n_steps predictions,
    and a handler answers a batch one way)."""

    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=4, delay_ms=10_000, max_inflight_per_worker=1)
        mv.submit(_job("p0"))  # at once: the worker was idle
        for job in ["e1", "p2", "e3", "p4", "p5", "e6", "p7", "e8"]:
            mv.submit(_job(job, explain=job.startswith("e")))
        assert _ids(list(mv.queue)) == ["e1", "p2", "e3", "p4", "p5", "e6", "p7", "e8"]
        w.answer(mv)
        w.answer(mv)
        w.answer(mv)
        assert [_ids(b) for b in w.batches] == [
            ["p0"],
            ["e1", "e3", "e6", "e8"],
            ["p2", "p4", "p5", "p7"],
        ]
        for batch in w.batches:
            assert len({job.kind for job in batch}) == 1

    asyncio.run(scenario())


def test_explanations_and_predictions_are_timed_under_their_own_label():
    async def scenario() -> None:
        w = _Worker("w")
        mv = _version([w], batch_size=1)
        jobs = [_job(0), _job(1, explain=True), _job(2, explain=True)]
        for job in jobs:
            mv.submit(job)
            w.answer(mv)
            mv.metrics.request_answered(mv, None, job)
        page = samples(mv.metrics.exposition().decode())
        for kind, n in (("prediction", 1), ("explanation", 2)):
            labels = {"model_name": "m", "model_version": "1.0", "kind": kind}
            for name in ("jts_inference_latency_seconds_count", "jts_batch_size_count"):
                assert (name, labels, n) in page

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "value, kind",
    [
        ("True", "explanation"),
        ("true", "explanation"),
        ("1", "explanation"),
        ("False", "prediction"),
    ],
)
def test_the_explain_header_sets_a_jobs_kind(value, kind):
    job = Job(id="j", headers={"explain": value}, params=[], future=None)  # type: ignore[arg-type]
    assert job.kind == kind
