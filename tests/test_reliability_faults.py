"""Faults a real engine lives through: a handler that kills its worker, a worker killed from
outside, the engine itself SIGKILLed, a second engine on a live one's state dir.

Each test does what the fault does (os._exit, a segfault, kill -9) and checks what a user
relies on: one fault costs one request, a request whose worker was killed from outside is
still answered, nothing outlives a dead engine, and the next start is clean.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
from _engine_helpers import probe_mar, running_engine
from _ports import free_port

from jupyter_torchserve.launcher import EngineStartError, start_engine, stop_engine

pytestmark = pytest.mark.slow  # starts real engines


def _key(info) -> str:
    return json.loads(Path(info["key_file"]).read_text())["management"]["key"]


def _mgmt(info, method: str, path: str, **kw) -> requests.Response:
    return requests.request(
        method,
        info["management_address"] + path,
        headers={"Authorization": "Bearer " + _key(info)},
        timeout=60,
        **kw,
    )


def _worker_pids(info, name: str) -> set[int]:
    return {w["pid"] for w in _mgmt(info, "GET", f"/models/{name}").json()[0]["workers"]}


def _alive(pid: int | None) -> bool:
    if not pid or pid <= 0:  # a worker still starting is described with pid -1
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    store = tmp / "store"
    store.mkdir()
    for name in ("two", "one", "bystander"):
        probe_mar(store, name, file=f"{name}.mar")
    with running_engine(tmp, model_store=str(store)) as (info, client):
        client.register("two.mar", initial_workers=2)
        client.register("one.mar", initial_workers=1)
        client.register("bystander.mar", initial_workers=1)
        yield info


def _predict(info, name: str, body: dict) -> requests.Response:
    return requests.post(info["inference_address"] + f"/predictions/{name}", json=body, timeout=60)


def _predict_dropped(info, name: str) -> None:
    """A request the engine's death cuts off."""
    try:
        _predict(info, name, {"sleep": 30})
    except requests.ConnectionError:
        pass


def _wait_workers(info, name: str, n: int) -> set[int]:
    assert _wait(lambda: len([p for p in _worker_pids(info, name) if p and _alive(p)]) == n)
    return _worker_pids(info, name)


@pytest.mark.parametrize(("body", "says"), [({"exit": 3}, "code 3"), ({"segv": 1}, "SIGSEGV")])
def test_a_request_that_kills_its_worker_costs_one_worker(engine, body, says):
    info = engine
    before = _wait_workers(info, "two", 2)
    r = _predict(info, "two", body)
    assert r.status_code == 503, r.text
    assert says in r.json()["message"] and "not retried" in r.json()["message"]
    survivors = [p for p in before if _alive(p)]
    assert len(survivors) == 1  # retried, it would have killed the second worker too
    assert _predict(info, "bystander", {}).status_code == 200
    _wait_workers(info, "two", 2)  # the dead one is replaced
    assert _predict(info, "two", {}).status_code == 200


def test_a_worker_killed_from_outside_still_answers_its_request(engine):
    info = engine
    (pid,) = _wait_workers(info, "one", 1)
    answer: dict = {}
    t = threading.Thread(
        target=lambda: answer.update(r=_predict(info, "one", {"sleep": 2})), daemon=True
    )
    t.start()
    time.sleep(0.8)  # the request is in the worker's handler now
    os.kill(pid, signal.SIGKILL)
    t.join(60)
    r = answer["r"]
    assert r.status_code == 200, r.text
    assert r.json()["pid"] != pid  # retried on the replacement


def test_a_second_engine_on_a_live_state_dir_is_refused(engine, tmp_path):
    info = engine
    key_file = Path(info["key_file"])
    keys_before = key_file.read_text()
    with pytest.raises(EngineStartError) as e:
        start_engine(
            inference_address=f"http://127.0.0.1:{free_port()}",
            management_address=f"http://127.0.0.1:{free_port()}",
            metrics_address=f"http://127.0.0.1:{free_port()}",
            model_store=str(tmp_path),
            state_dir=info["state_dir"],
            timeout=120,
        )
    message = str(e.value)
    assert "in use by a running engine" in message and f"pid {info['pid']}" in message
    assert "Traceback" not in message
    assert key_file.read_text() == keys_before
    assert _predict(info, "bystander", {}).status_code == 200
    assert _mgmt(info, "PUT", "/models/bystander", params={"min_worker": 1}).status_code < 300


def test_nothing_outlives_a_sigkilled_engine_and_the_next_start_is_clean(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    store = tmp_path / "store"
    store.mkdir()
    probe_mar(store, "busy", file="busy.mar")
    state = tmp_path / "state"

    def start() -> dict:
        return start_engine(
            inference_address=f"http://127.0.0.1:{free_port()}",
            management_address=f"http://127.0.0.1:{free_port()}",
            metrics_address=f"http://127.0.0.1:{free_port()}",
            model_store=str(store),
            state_dir=str(state),
            timeout=120,
        )

    info = start()
    try:
        r = _mgmt(info, "POST", "/models", params={"url": "busy.mar", "initial_workers": 1})
        assert r.status_code == 200, r.text
        threading.Thread(target=_predict_dropped, args=(info, "busy"), daemon=True).start()
        time.sleep(1)
        family = psutil.Process(info["pid"]).children(recursive=True)
        assert len(family) >= 2  # the forkserver and the worker at least
        left_before = sorted(p.name for p in tmpdir.iterdir())
        assert any(n.startswith("jts-") for n in left_before)
        os.kill(info["pid"], signal.SIGKILL)
        # the busy worker's request sleeps 30 s: only dying with the engine ends it sooner
        assert _wait(lambda: not any(_alive(p.pid) for p in family), 10), [
            (p.pid, p.name()) for p in family if _alive(p.pid)
        ]
    finally:
        if _alive(info["pid"]):
            os.kill(info["pid"], signal.SIGKILL)
    info = start()  # the dead engine's lock went with it
    try:
        now = sorted(p.name for p in tmpdir.iterdir())
        for name in left_before:
            assert name not in now, (left_before, now)
        assert _predict(info, "busy", {}).status_code in (200, 404)
    finally:
        stop_engine(info)


def test_a_full_job_queue_is_a_json_503_and_other_models_are_still_served(tmp_path):
    """TorchServe's `job_queue_size`: with one job in the worker and two queued, a fourth
    request is refused at once with 503, not queued without bound; another model's queue
    is its own, and the model takes requests again once its queue drains."""
    store = tmp_path / "store"
    store.mkdir()
    probe_mar(store, "busy", file="busy.mar")
    probe_mar(store, "other", file="other.mar")
    with running_engine(
        tmp_path, model_store=str(store), job_queue_size=2, max_inflight_per_worker=1
    ) as (info, client):
        client.register("busy.mar", initial_workers=1)
        client.register("other.mar", initial_workers=1)
        answers: list[int] = []
        threads = []
        for _ in range(3):  # one in the worker, two queued
            t = threading.Thread(
                target=lambda: answers.append(_predict(info, "busy", {"sleep": 2}).status_code)
            )
            t.start()
            threads.append(t)
            time.sleep(0.3)
        r = _predict(info, "busy", {})
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["code"] == 503 and "job_queue_size" in body["message"]
        assert _predict(info, "other", {}).status_code == 200
        for t in threads:
            t.join(60)
        assert answers == [200, 200, 200]
        assert _predict(info, "busy", {}).status_code == 200


def _wire(name: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST /predictions/{name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def _address(info) -> tuple[str, int]:
    host, port = info["inference_address"].rsplit("/", 1)[-1].split(":")
    return host, int(port)


def _read_all(s: socket.socket) -> bytes:
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


@pytest.mark.parametrize("sleep", [0, 0.5])
def test_a_half_closed_client_gets_its_answer(engine, sleep):
    """Item 10: the request is complete, then `shutdown(SHUT_WR)`; the answer still comes
    (after an interim 100 Continue), then the engine closes."""
    with socket.create_connection(_address(engine), timeout=60) as s:
        s.sendall(_wire("one", {"sleep": sleep}))
        s.shutdown(socket.SHUT_WR)
        got = _read_all(s)
    final = got.rsplit(b"HTTP/1.1 ", 1)[1]
    assert final.startswith(b"200 OK"), got[:300]
    assert json.loads(final.partition(b"\r\n\r\n")[2])["pid"] > 0
    assert _predict(engine, "bystander", {}).status_code == 200


def _count_499(info) -> float:
    text = requests.get(info["metrics_address"] + "/metrics", timeout=60).text
    m = re.search(r'jts_http_responses_total\{api="inference",code="499"\} (\S+)', text)
    return float(m.group(1)) if m else 0.0


def test_a_client_that_closes_fully_is_a_499_and_its_queued_job_is_not_run(engine, tmp_path):
    """The other side of item 10: a full close is told from a half-close (the probe is
    answered with a reset), so the vanished client's queued job is withdrawn, not run."""
    marker, control = tmp_path / "ran", tmp_path / "control"
    before = _count_499(engine)
    busy = [threading.Thread(target=_predict, args=(engine, "one", {"sleep": 1.5})) for _ in "ab"]
    for t in busy:  # the worker's two in-flight slots (max_inflight_per_worker)
        t.start()
        time.sleep(0.2)
    with socket.create_connection(_address(engine), timeout=60) as s:
        s.sendall(_wire("one", {"touch": str(marker)}))
        time.sleep(0.3)  # queued behind the two; the client goes away
    for t in busy:
        t.join(60)
    assert _wait(lambda: _count_499(engine) == before + 1, timeout=10)
    time.sleep(0.5)
    assert not marker.exists()
    assert _predict(engine, "one", {"touch": str(control)}).status_code == 200
    assert control.exists()  # the marker would have been written, had the job run
