"""Busy-polling (`busy_poll_us`): it may only shorten waits, never lengthen them, and an
idle engine with idle workers must not burn CPU. Who may poll, and the worker's poll window,
are tested without processes in test_engine_pool.py."""

from __future__ import annotations

import selectors
import socket
import threading
import time

import psutil
import pytest
import requests
from _engine_helpers import model_store, running_engine

from jupyter_torchserve.engine.busypoll import BusyPollSelector
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
