"""Busy-polling (`busy_poll_us`): it may only shorten waits, never lengthen them, and an
idle engine with idle workers must not burn CPU."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from types import SimpleNamespace

import psutil
import pytest
import requests
from _engine_helpers import model_store, running_engine

from jupyter_torchserve.config import EngineConfig
from jupyter_torchserve.engine.busypoll import BusyPollSelector, PollWindow
from jupyter_torchserve.engine.core import Engine
from jupyter_torchserve.engine.protocol import SyncConnection, encode

pytestmark = pytest.mark.slow  # starts real processes

LONG = 30.0  # a spin this long would show as a hang in any assertion below


def _selector(
    spin_s: float, due: float | None
) -> tuple[BusyPollSelector, socket.socket, socket.socket]:
    """A selector watching one end of a socket pair, told an answer is `due` in that many s."""
    a, b = socket.socketpair()
    sel = BusyPollSelector(spin_s)
    sel.answer_due = lambda: due
    sel.register(a, selectors.EVENT_READ)
    return sel, a, b


def test_spinning_select_honours_its_timeout():
    """Timers (batch delay, response timeout) are the loop's select timeout: a spin longer
    than the timeout must still return at the timeout."""
    sel, a, b = _selector(LONG, 0.0)
    try:
        started = time.monotonic()
        assert sel.select(0.05) == []
        assert time.monotonic() - started < LONG / 2
    finally:
        sel.close(), a.close(), b.close()


def test_spinning_select_returns_what_becomes_ready():
    sel, a, b = _selector(LONG, 0.0)
    try:
        threading.Timer(0.05, b.send, (b"x",)).start()
        ready = sel.select(None)
        assert [key.fileobj for key, _ in ready] == [a]
    finally:
        sel.close(), a.close(), b.close()


def test_select_polls_only_around_a_due_answer():
    """Nothing due, or an answer late by more than the spin: it sleeps like any selector.
    Due now: it polls (burns CPU) for the spin. Due after the select's own timeout: it
    sleeps. Due later within it: it naps, then polls around the due time."""
    cases = {  # (answer due in s, select timeout s) -> CPU-time (s) it may use: (min, max)
        (None, 0.3): (0.0, 0.1),
        (-1.0, 0.3): (0.0, 0.1),
        (0.0, 0.3): (0.1, 1.0),
        (0.5, 0.3): (0.0, 0.1),
        (0.8, 1.0): (0.05, 0.5),
    }
    for (due, timeout), (low, high) in cases.items():
        sel, a, b = _selector(0.2, due)
        try:
            cpu = time.process_time()
            assert sel.select(timeout) == []
            used = time.process_time() - cpu
        finally:
            sel.close(), a.close(), b.close()
        assert low <= used <= high, (due, timeout, used)


def test_a_nap_before_the_answer_is_due_still_wakes_on_events():
    sel, a, b = _selector(0.001, LONG)  # the answer is far off: select naps
    try:
        threading.Timer(0.05, b.send, (b"x",)).start()
        started = time.monotonic()
        ready = sel.select(None)
        assert [key.fileobj for key, _ in ready] == [a]
        assert time.monotonic() - started < LONG / 2
    finally:
        sel.close(), a.close(), b.close()


def test_worker_poll_returns_on_data_on_eof_and_at_its_deadline():
    a, b = socket.socketpair()
    conn = SyncConnection(a)
    try:
        started = time.monotonic()
        assert conn.poll(0.05) is False  # nothing arrives: back after the deadline
        b.sendall(b"".join(encode({"op": "infer", "n": 1}, b"body")))
        assert conn.poll(LONG) is True  # data waiting: returns at once, nothing consumed
        header, payload = conn.read_frame()
        assert header == {"op": "infer", "n": 1} and bytes(payload) == b"body"
        b.close()
        assert conn.poll(LONG) is True  # the engine went away: returns, and the read says so
        assert time.monotonic() - started < LONG / 2
        try:
            conn.read_frame()
        except EOFError:
            pass
        else:
            raise AssertionError("read_frame after EOF must raise EOFError")
    finally:
        a.close()


class _Busy:
    """Stands in for a Worker with batches out: its due time, batches and model queue."""

    def __init__(self, due_in: float, batches: int = 1, queued: int = 0) -> None:
        self.at = time.perf_counter() + due_in
        self.inflight = dict.fromkeys(range(batches))
        self.version = SimpleNamespace(queue=[object()] * queued)

    def answer_expected_at(self) -> float:
        return self.at


def _engine(tmp_path, cpus: int, busy: list[_Busy]) -> Engine:
    engine = Engine(
        EngineConfig(state_dir=str(tmp_path / "state"), model_store=str(tmp_path / "store"))
    )
    engine.cpus = cpus
    engine.busy_workers = set(busy)  # type: ignore[arg-type]
    return engine


def test_poll_only_at_light_load_and_while_a_cpu_is_free_for_it(tmp_path):
    """The engine polls only while an answer is due; the engine and each worker with a batch
    out need a CPU, and no one polls on a CPU that another of them needs. Under load (a
    second batch waiting at a worker, requests queued) nobody polls: the work is there."""
    poll = EngineConfig().busy_poll_us
    assert poll > 0
    idle = _engine(tmp_path, 2, [])
    assert idle.answer_due() is None
    one = _Busy(0.5)
    light = _engine(tmp_path, 4, [_Busy(5.0), one])
    assert 0.4 < light.answer_due() <= 0.5  # the sooner of the two
    assert light.worker_poll_us(one) == poll  # type: ignore[arg-type]
    full = _engine(tmp_path, 2, [_Busy(5.0), one])  # both CPUs taken by workers
    assert full.answer_due() is None and full.worker_poll_us(one) == 0  # type: ignore[arg-type]
    for loaded in (_Busy(0.5, batches=2), _Busy(0.5, queued=3)):
        engine = _engine(tmp_path, 4, [loaded])
        assert engine.answer_due() is None
        assert engine.worker_poll_us(loaded) == 0  # type: ignore[arg-type]
    light.config.busy_poll_us = 0
    assert light.worker_poll_us(one) == 0  # type: ignore[arg-type]


def test_a_worker_learns_how_long_its_batches_take(tmp_path):
    """The due time follows the worker's recent batches: fast after warm-up, not pinned to
    the slow first one."""
    from jupyter_torchserve.engine.workers import Worker

    engine = _engine(tmp_path, 2, [])
    version = SimpleNamespace(engine=engine)
    worker = Worker.__new__(Worker)  # only the bookkeeping, no process
    worker.version, worker.inflight, worker.busy_since, worker.batch_seconds = (
        version,
        {},
        0.0,
        0.0,
    )
    t = 100.0
    for took in [0.5] + [0.001] * 8:  # a slow warm-up batch, then fast ones
        worker.busy_since = t
        worker.inflight = {1: ([], None)}
        t += took
        worker.inflight = {}
        worker._batch_ended(t)
    assert worker.batch_seconds < 0.005
    assert worker not in engine.busy_workers  # nothing out any more


def test_idle_engine_and_worker_do_not_spin(tmp_path):
    """After answering, neither the engine nor its worker keeps a CPU busy."""
    store = model_store(tmp_path, "idle")
    with running_engine(tmp_path, model_store=str(store)) as (info, client):
        client.register("idle-1.0.mar", initial_workers=1)
        url = info["inference_address"] + "/predictions/idle"
        for i in range(20):
            assert requests.post(url, json={"echo": i}, timeout=60).status_code == 200
        engine = psutil.Process(info["pid"])
        procs = [engine, *engine.children(recursive=True)]
        time.sleep(0.5)

        def cpu() -> float:
            total = 0.0
            for p in procs:
                t = p.cpu_times()
                total += t.user + t.system
            return total

        before = cpu()
        time.sleep(2.0)
        assert cpu() - before < 0.5, "an idle engine or worker kept spinning"


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
