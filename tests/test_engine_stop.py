"""What a stop (SIGTERM: `jupyter-torchserve stop`, `%torchserve stop`) does to the requests
an engine has already received: they are answered, over HTTP and gRPC, while new
connections are refused; past `shutdown_timeout` the connections still open are closed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
import requests
from _engine_helpers import model_store
from _grpc_helpers import grpc_engine

from jupyter_torchserve import discovery
from jupyter_torchserve.launcher import stop_engine
from jupyter_torchserve.protos.torchserve import inference_pb2 as ts

pytestmark = pytest.mark.slow  # real engines, stopped


def _send_slow_requests(info, stubs, seconds: float) -> tuple[list[threading.Thread], dict]:
    """Two HTTP requests and one gRPC call to the probe, each `seconds` long, one worker: one
    runs while the other two wait in the queue. Returns once the first is being computed."""
    url = info["inference_address"] + "/predictions/probe"
    answers: dict = {}

    def http(i: int) -> None:
        try:
            r = requests.post(url, json={"sleep": seconds, "echo": i}, timeout=60)
            answers[i] = (r.status_code, r.json().get("echo"))
        except requests.RequestException as e:
            answers[i] = ("lost", type(e).__name__)

    def call() -> None:
        body = json.dumps({"sleep": seconds, "echo": 2}).encode()
        request = ts.PredictionsRequest(model_name="probe", input={"body": body})
        try:
            reply = stubs.inference.Predictions(request, timeout=60)
            answers[2] = (200, json.loads(reply.prediction)["echo"])
        except grpc.RpcError as e:
            answers[2] = ("lost", e.code().name)

    threads = [threading.Thread(target=http, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=call))
    for t in threads:
        t.start()
        time.sleep(0.1)
    time.sleep(0.3)
    return threads, answers


def test_a_stop_answers_what_it_received_and_refuses_new_connections(tmp_path):
    store = model_store(tmp_path, "probe")
    with grpc_engine(tmp_path, model_store=str(store)) as (info, client, stubs):
        client.register("probe-1.0.mar", initial_workers=1, batch_size=1)
        host, port = "127.0.0.1", int(info["inference_address"].rsplit(":", 1)[1])
        idle = socket.create_connection((host, port))  # keep-alive, between requests
        idle.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in idle.recv(4096).split(b"\r\n")[0]

        threads, answers = _send_slow_requests(info, stubs, 1.0)
        stopping = threading.Thread(target=stop_engine, args=(info,))
        stopping.start()
        time.sleep(0.3)
        idle.settimeout(5)
        assert idle.recv(4096) == b""  # an idle connection is closed at once
        with pytest.raises(OSError):  # refused: nothing new is taken
            socket.create_connection((host, port), timeout=5).close()
        for t in threads:
            t.join(60)
        stopping.join(60)
        assert answers == {0: (200, 0), 1: (200, 1), 2: (200, 2)}
        assert not discovery.pid_alive(int(info["pid"]))


def test_past_shutdown_timeout_the_connections_left_are_closed(tmp_path):
    store = model_store(tmp_path, "probe")
    with grpc_engine(tmp_path, model_store=str(store), shutdown_timeout=0.5) as env:
        info, client, stubs = env
        client.register("probe-1.0.mar", initial_workers=1, batch_size=1)
        threads, answers = _send_slow_requests(info, stubs, 3.0)
        stop_engine(info)
        for t in threads:
            t.join(60)
        assert {a[0] for a in answers.values()} == {"lost"}, answers
        assert answers[2] == ("lost", "UNAVAILABLE")
        assert not discovery.pid_alive(int(info["pid"]))


def test_a_second_signal_closes_the_open_connections_at_once(tmp_path):
    store = model_store(tmp_path, "probe")
    with grpc_engine(tmp_path, model_store=str(store)) as (info, client, stubs):
        client.register("probe-1.0.mar", initial_workers=1, batch_size=1)
        assert info["stop_timeout"] == 10.0 + 10.0 + 5.0  # shutdown_timeout, workers, margin
        threads, answers = _send_slow_requests(info, stubs, 5.0)
        pid = int(info["pid"])
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)  # draining: the request being computed has 4.5 s to go
        asked = time.monotonic()
        os.kill(pid, signal.SIGTERM)  # "Ctrl+C again"
        for t in threads:
            t.join(60)
        closed_after = time.monotonic() - asked
        assert {a[0] for a in answers.values()} == {"lost"}, answers
        assert closed_after < 3.0, closed_after  # before the first answer was due
        deadline = time.monotonic() + 30
        while discovery.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not discovery.pid_alive(pid)


def test_stop_engine_waits_as_long_as_the_engine_says_a_stop_may_take(tmp_path):
    deaf = subprocess.Popen(  # an engine that never stops on SIGTERM
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert deaf.stdout is not None and deaf.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert stop_engine({"pid": deaf.pid, "stop_timeout": 1.5}) is True
    waited = time.monotonic() - started
    assert deaf.wait(5) == -signal.SIGKILL
    assert 1.5 <= waited < 5, waited
