"""Engine behaviour a user relies on under load and failure: batching, scaling with requests
in flight, dead and stuck workers, handler errors, snapshots, discovery, GPU assignment."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from _engine_helpers import fake_gpus, free_port, linear_mar, model_store, probe_mar, running_engine

from jupyter_torchserve import discovery
from jupyter_torchserve.client import EngineError
from jupyter_torchserve.config import load_ts_config, parse_properties
from jupyter_torchserve.launcher import EngineStartError, start_engine

pytestmark = pytest.mark.slow  # starts real processes


def _post_many(url: str, bodies: list[dict], workers: int = 16) -> list[requests.Response]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: requests.post(url, json=b, timeout=120), bodies))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine-behaviour")
    store = model_store(tmp, "probe", "batcher", "slow")
    with running_engine(tmp, model_store=str(store)) as (info, client):
        yield info, client, tmp


def test_requests_are_batched_when_workers_are_busy(engine):
    info, client, _ = engine
    client.register("batcher-1.0.mar", initial_workers=1, batch_size=8, max_batch_delay=2000)
    try:
        url = info["inference_address"] + "/predictions/batcher"
        # a lone request with an idle worker goes at once, not after the 2 s delay
        t0 = time.monotonic()
        r = requests.post(url, json={"echo": 1})
        assert r.status_code == 200 and r.json()["batch"] == 1
        assert time.monotonic() - t0 < 1.5
        # 24 concurrent requests while the worker is busy: they share batches
        bodies = [{"echo": i, "sleep": 0.05} for i in range(24)]
        answers = _post_many(url, bodies)
        assert all(a.status_code == 200 for a in answers)
        assert [a.json()["echo"] for a in answers] == list(range(24))  # each got its own
        assert max(a.json()["batch"] for a in answers) > 1
        assert max(a.json()["batch"] for a in answers) <= 8
    finally:
        client.unregister("batcher")


def test_workers_start_from_a_frozen_heap_with_the_collector_on(engine):
    # torch's ~170,000 import-time objects are frozen in the forkserver: a full collection in a
    # worker skips them instead of copying the shared heap (35 MB of page faults, ~0.12 s)
    info, client, _ = engine
    client.register("probe-1.0.mar", model_name="heap", initial_workers=1)
    try:
        r = requests.post(info["inference_address"] + "/predictions/heap", json={"gc": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["gc_frozen"] > 50_000
        assert body["gc_enabled"] is True  # the preload's gc.disable() must not outlive it
    finally:
        client.unregister("heap")


def test_scale_up_and_down_with_requests_in_flight_loses_nothing(engine):
    info, client, _ = engine
    client.register("slow-1.0.mar", initial_workers=1)
    try:
        url = info["inference_address"] + "/predictions/slow"
        with ThreadPoolExecutor(1) as side:
            bodies = [{"echo": i, "sleep": 0.02} for i in range(60)]
            load = side.submit(_post_many, url, bodies, 8)
            time.sleep(0.2)
            client.scale("slow", 3, synchronous=True)
            assert len(client.describe("slow")[0]["workers"]) == 3
            client.scale("slow", 1, synchronous=True)
            answers = load.result()
        assert [a.status_code for a in answers] == [200] * 60
        assert [a.json()["echo"] for a in answers] == list(range(60))
        (d,) = client.describe("slow")
        assert len(d["workers"]) == 1 and d["minWorkers"] == 1
    finally:
        client.unregister("slow")


def test_sigkill_a_worker_under_load_every_request_answered(engine):
    info, client, _ = engine
    client.register("probe-1.0.mar", model_name="killme", initial_workers=2)
    try:
        url = info["inference_address"] + "/predictions/killme"
        pids = [w["pid"] for w in client.describe("killme")[0]["workers"]]
        with ThreadPoolExecutor(1) as side:
            load = side.submit(_post_many, url, [{"echo": i, "sleep": 0.03} for i in range(80)], 8)
            time.sleep(0.3)
            os.kill(pids[0], signal.SIGKILL)
            answers = load.result()
        codes = [a.status_code for a in answers]
        assert len(codes) == 80
        assert set(codes) <= {200, 503}  # a retried batch answers 200; nothing hangs
        assert codes.count(200) >= 70
        for a in answers:
            if a.status_code != 200:
                assert a.json()["type"] in (
                    "InternalServerException",
                    "ServiceUnavailableException",
                )
        # the lost worker is replaced
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = client.describe("killme")[0]["workers"]
            if len(workers) == 2 and all(w["status"] == "READY" for w in workers):
                break
            time.sleep(0.2)
        pids_now = [w["pid"] for w in client.describe("killme")[0]["workers"]]
        assert len(pids_now) == 2 and pids[0] not in pids_now
    finally:
        client.unregister("killme")


def _management_key(info) -> str:
    return json.loads(Path(info["key_file"]).read_text())["management"]["key"]


def test_handler_exception_is_503_with_its_message_and_worker_survives(engine):
    info, client, _ = engine
    client.register("probe-1.0.mar", model_name="fails", initial_workers=1)
    try:
        url = info["inference_address"] + "/predictions/fails"
        pid = client.describe("fails")[0]["workers"][0]["pid"]
        r = requests.post(url, json={"raise": "bad pixel"})
        assert r.status_code == 503
        body = r.json()
        assert body["type"] == "InternalServerException"
        assert "ValueError: probe asked to fail: bad pixel" in body["message"]
        assert "probe_handler.py" not in body["message"]  # a stranger: the one-line message
        owner = requests.post(  # the notebook and the sidebar prove the management key
            url,
            json={"raise": "bad pixel"},
            headers={"X-Management-Authorization": "Bearer " + _management_key(info)},
        )
        assert "probe_handler.py" in owner.json()["message"]  # the traceback tail names it
        assert requests.post(url, json={"echo": 2}).json()["echo"] == 2
        assert client.describe("fails")[0]["workers"][0]["pid"] == pid
        assert "Traceback" in client.logs("fails")  # the full traceback is in the log
    finally:
        client.unregister("fails")


def test_a_bad_request_fails_alone_not_the_batch_it_was_put_in(engine):
    """Requests queued behind a busy worker go out as one batch; the one the handler cannot
    take gets its own error, and the others their answers, not its message."""
    info, client, _ = engine
    client.register(
        "probe-1.0.mar", model_name="mixed", initial_workers=1, batch_size=4, max_batch_delay=3000
    )
    try:
        url = info["inference_address"] + "/predictions/mixed"
        with ThreadPoolExecutor(4) as pool:
            busy = pool.submit(requests.post, url, json={"sleep": 1.5}, timeout=60)
            time.sleep(0.5)  # the worker is busy: the next three wait for it, together
            bodies = [{"echo": 1}, {"raise": "bad pixel"}, {"echo": 3}]
            answers = list(pool.map(lambda b: requests.post(url, json=b, timeout=60), bodies))
        assert busy.result().status_code == 200
        assert [a.status_code for a in answers] == [200, 503, 200]
        assert [answers[0].json()["echo"], answers[2].json()["echo"]] == [1, 3]
        assert "probe asked to fail: bad pixel" in answers[1].json()["message"]
        # they were batched, and answered one at a time after the batch failed
        assert "a batch of 3 failed: each request is run alone" in client.logs("mixed")
        assert [answers[0].json()["batch"], answers[2].json()["batch"]] == [1, 1]
    finally:
        client.unregister("mixed")


def test_response_timeout_kills_and_replaces_the_worker(engine):
    info, client, _ = engine
    client.register("probe-1.0.mar", model_name="stuck", initial_workers=1, response_timeout=1)
    try:
        url = info["inference_address"] + "/predictions/stuck"
        pid = client.describe("stuck")[0]["workers"][0]["pid"]
        r = requests.post(url, json={"sleep": 30})
        assert r.status_code == 408
        assert "response_timeout" in r.json()["message"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = requests.post(url, json={"echo": "after"})
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.json()["echo"] == "after" and r.json()["pid"] != pid
    finally:
        client.unregister("stuck")


def test_worker_print_goes_to_the_model_log(engine):
    info, client, _ = engine
    client.register("probe-1.0.mar", model_name="talker", initial_workers=1)
    try:
        requests.post(
            info["inference_address"] + "/predictions/talker",
            json={"print": "hello from the handler"},
        )
        assert "hello from the handler" in client.logs("talker", tail=20)
    finally:
        client.unregister("talker")


def test_load_failure_is_a_500_naming_the_cause_and_model_is_dropped(engine):
    info, client, tmp = engine
    store = tmp / "store"
    from _engine_helpers import manifest, write_mar

    write_mar(
        store / "broken.mar",
        {"broken.py": "raise ImportError('no such lib: foo')\n", "d.txt": "x"},
        manifest("broken", "1.0", "d.txt", "broken.py"),
    )
    with pytest.raises(EngineError) as e:
        client.register("broken.mar", initial_workers=1)
    assert e.value.status == 500
    assert "Failed to start workers for model broken" in e.value.message
    assert "no such lib: foo" in e.value.message
    assert all(m["modelName"] != "broken" for m in client.models)


def test_unregister_cleans_the_unpacked_archive(engine):
    info, client, tmp = engine
    client.register("probe-1.0.mar", model_name="tidy", initial_workers=1)
    model_dir = None
    cache = os.path.join(client.engine_status()["log_dir"], "..", "cache")
    before = set(os.listdir(cache))
    assert before
    client.unregister("tidy")
    model_dir = before - set(os.listdir(cache))
    assert model_dir  # the unpacked copy went away with the model


def _requests_then_unregister(info, client, name: str, sleep: float, n: int) -> list:
    """`n` requests of `sleep` seconds to one worker (one running, the rest queued), then
    unregister the model half a second in; what each request got, in order."""
    url = info["inference_address"] + f"/predictions/{name}"

    def send(i: int):
        time.sleep(0.1 * i)  # arrival order is queue order
        r = requests.post(url, json={"sleep": sleep, "echo": i}, timeout=60)
        return r.status_code, r.json()

    with ThreadPoolExecutor(n) as pool:
        answers = [pool.submit(send, i) for i in range(n)]
        time.sleep(0.1 * n + 0.5)
        client.unregister(name)
        return [a.result() for a in answers]


def test_unregister_answers_the_requests_already_queued(engine):
    info, client, _tmp = engine
    client.register("probe-1.0.mar", model_name="leaving", initial_workers=1, batch_size=1)
    answers = _requests_then_unregister(info, client, "leaving", 1.0, 3)
    # before, the last one got 503 "has no worker ... Please use scale workers API"
    assert [(status, body.get("echo")) for status, body in answers] == [(200, i) for i in range(3)]
    r = requests.post(info["inference_address"] + "/predictions/leaving", json={}, timeout=10)
    assert r.status_code == 404


def test_requests_an_unregister_cannot_serve_in_time_are_told_why(engine):
    info, client, _tmp = engine
    client.register("probe-1.0.mar", model_name="late", initial_workers=1, batch_size=1)
    answers = _requests_then_unregister(info, client, "late", 4.0, 4)  # 16 s > UNLOAD_WAIT_S
    assert [status for status, _ in answers[:2]] == [200, 200], answers
    status, body = answers[-1]
    assert status == 503, answers
    assert body["message"] == (
        'Model "late" version 1.0 was unregistered before this request could be served (within 10s)'
    )


def test_snapshot_restored_after_stop_and_start(tmp_path):
    store = model_store(tmp_path)
    linear_mar(store, "lin", "1.0", seed=0)
    linear_mar(store, "lin", "2.0", seed=1)
    state = tmp_path / "state"
    with running_engine(tmp_path, model_store=str(store), state_dir=str(state)) as (info, c):
        c.register("lin-1.0.mar", initial_workers=1, batch_size=4, max_batch_delay=7)
        c.register("lin-2.0.mar", initial_workers=2)
        c.set_default("lin", "2.0")
        before = requests.post(info["inference_address"] + "/predictions/lin", json=[[1, 2, 3, 4]])
    snap = json.loads((state / "snapshot.json").read_text())
    assert snap["models"]["lin"]["2.0"]["defaultVersion"] is True
    with running_engine(tmp_path, model_store=str(store), state_dir=str(state)) as (info, c):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            versions = {d["modelVersion"]: d for d in c.describe("lin", "all")} if c.models else {}
            if len(versions) == 2 and all(
                len(d["workers"]) == d["minWorkers"] for d in versions.values()
            ):
                break
            time.sleep(0.2)
        assert versions["1.0"]["batchSize"] == 4 and versions["1.0"]["maxBatchDelay"] == 7
        assert len(versions["2.0"]["workers"]) == 2
        assert versions["1.0"]["loadedAtStartup"] is True
        after = requests.post(info["inference_address"] + "/predictions/lin", json=[[1, 2, 3, 4]])
        assert after.json() == before.json()  # version 2.0 is the default again


def test_torchserve_model_snapshot_and_load_models(tmp_path):
    store = model_store(tmp_path)
    linear_mar(store, "a", "1.0")
    probe_mar(store, "b")
    ts_snapshot = json.dumps(
        {
            "name": "startup.cfg",
            "modelCount": 1,
            "models": {
                "a": {
                    "1.0": {
                        "defaultVersion": True,
                        "marName": "a-1.0.mar",
                        "minWorkers": 1,
                        "maxWorkers": 1,
                        "batchSize": 2,
                        "maxBatchDelay": 50,
                        "responseTimeout": 120,
                    }
                }
            },
        }
    )
    with running_engine(
        tmp_path, model_store=str(store), model_snapshot=ts_snapshot, load_models="b-1.0.mar"
    ) as (info, c):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(c.models) < 2:
            time.sleep(0.2)
        assert [m["modelName"] for m in c.models] == ["a", "b"]
        assert c.describe("a")[0]["batchSize"] == 2


def test_two_engines_on_different_ports_do_not_collide(tmp_path):
    store = model_store(tmp_path, "p")
    with (
        running_engine(tmp_path / "one", model_store=str(store)) as (i1, c1),
        running_engine(tmp_path / "two", model_store=str(store)) as (i2, c2),
    ):
        c1.register("p-1.0.mar", initial_workers=1)
        c2.register("p-1.0.mar", initial_workers=1)
        r1 = requests.post(i1["inference_address"] + "/predictions/p", json={"echo": 1}).json()
        r2 = requests.post(i2["inference_address"] + "/predictions/p", json={"echo": 2}).json()
        assert r1["pid"] != r2["pid"] and (r1["echo"], r2["echo"]) == (1, 2)
        assert {e["pid"] for e in discovery.find_engines()} >= {i1["pid"], i2["pid"]}
        c1.unregister("p")
        assert c2.describe("p")[0]["workers"]  # the other engine is untouched


def test_discovery_file_lifecycle(tmp_path):
    with running_engine(tmp_path) as (info, _):
        path = discovery.discovery_path(info["pid"])
        assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
        assert discovery.find_engine()["pid"] == info["pid"]
        key_file = info["key_file"]
        assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    assert not path.exists() and not os.path.exists(key_file)
    # a stale file (dead pid) is removed when found
    stale = discovery.discovery_path(999_999)
    stale.write_text(json.dumps({"pid": 999_999, "started": time.time()}))
    assert all(e["pid"] != 999_999 for e in discovery.find_engines())
    assert not stale.exists()


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(EngineStartError) as e:
            _start_on_ports(tmp_path, busy, free_port(), free_port())
    assert f"port {busy}" in str(e.value) and "already in use" in str(e.value)


def test_one_port_for_two_apis_is_a_clear_error(tmp_path):
    port = free_port()
    with pytest.raises(EngineStartError) as e:
        _start_on_ports(tmp_path, port, free_port(), port)
    assert f"port {port}" in str(e.value) and "inference API of this engine" in str(e.value)


@pytest.mark.parametrize(
    "host,says",
    [
        ("nope.invalid", "the host 'nope.invalid' does not resolve"),
        ("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1
    ],
)
def test_an_address_it_cannot_bind_is_a_clear_error(tmp_path, host, says):
    with pytest.raises(EngineStartError) as e:
        start_engine(
            inference_address=f"http://{host}:{free_port()}",
            management_address=f"http://127.0.0.1:{free_port()}",
            metrics_address=f"http://127.0.0.1:{free_port()}",
            state_dir=str(tmp_path / "state"),
            timeout=30,
        )
    assert f"Cannot start the inference API on {host}" in str(e.value) and says in str(e.value)
    assert "Traceback" not in str(e.value)


def test_an_address_no_engine_can_serve_is_refused_before_one_starts(tmp_path):
    from traitlets import TraitError

    for address, says in (
        ("http://127.0.0.1:99999", "the port of 'http://127.0.0.1:99999' is not one of 1-65535"),
        ("ftp://127.0.0.1:8080", "only http and https addresses are supported"),
    ):
        with pytest.raises(TraitError, match=f"inference_address: {re.escape(says)}"):
            start_engine(inference_address=address, state_dir=str(tmp_path / "state"))
    assert not (tmp_path / "state" / "engine.log").exists()  # no process was started
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_torchserve", "start", "--metrics-address", "h:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == "error: metrics_address: the port of 'http://h:0' is not one of 1-65535"
    )


def _start_on_ports(tmp_path, inference: int, management: int, metrics: int) -> dict:
    return start_engine(
        inference_address=f"http://127.0.0.1:{inference}",
        management_address=f"http://127.0.0.1:{management}",
        metrics_address=f"http://127.0.0.1:{metrics}",
        model_store=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        timeout=30,
    )


def test_fake_gpus_are_assigned_round_robin_and_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("JTS_FAKE_GPUS", fake_gpus(15360, 15360))
    store = model_store(tmp_path, "g")
    with running_engine(tmp_path, model_store=str(store)) as (info, c):
        c.register("g-1.0.mar", initial_workers=3)
        workers = c.describe("g")[0]["workers"]
        assert all(w["gpu"] for w in workers)
        assert sorted(w["device"] for w in workers) == ["cuda:0", "cuda:0", "cuda:1"]
        # concurrent slow requests reach every worker; each handler sees its own gpu_id
        answers = _post_many(info["inference_address"] + "/predictions/g", [{"sleep": 0.2}] * 6, 6)
        assert {a.json()["gpu_id"] for a in answers} == {0, 1}
        assert [g["name"] for g in c.engine_status()["gpus"]] == ["Fake GPU 0", "Fake GPU 1"]
        text = c.metrics()
        assert 'jts_gpu_memory_total_bytes{gpu="1",name="Fake GPU 1"}' in text
        # deploy --cpu sends device_type=cpu: that model's workers stay off the GPUs
        c.register("g-1.0.mar", model_name="g_cpu", initial_workers=1, device_type="cpu")
        (w,) = c.describe("g_cpu")[0]["workers"]
        assert w["gpu"] is False and w["device"] == "cpu"
    with running_engine(tmp_path / "capped", model_store=str(store), number_of_gpu=0) as (_, c):
        c.register("g-1.0.mar", initial_workers=1)
        assert c.describe("g")[0]["workers"][0]["gpu"] is False


def test_config_properties_keys(tmp_path):
    text = "\n".join(
        [
            "# TorchServe config",
            "inference_address=http://127.0.0.1:9080",
            "management_address = http://127.0.0.1:9081",
            "model_store=/models",
            "default_workers_per_model=2",
            "job_queue_size=7",
            "allowed_urls=https://s3.example/.*,file:///data/.*",
            "disable_token_authorization=true",
            "enable_model_api=false",
            "metrics_mode=prometheus",
            "job_queue_size=9",
        ]
    )
    assert parse_properties("a=1\nb: 2\n! c\nd=long \\\n  value\n") == {
        "a": "1",
        "b": "2",
        "d": "long value",
    }
    path = tmp_path / "config.properties"
    path.write_text(text)
    values = load_ts_config(path)
    assert values["inference_address"] == "http://127.0.0.1:9080"
    assert values["management_address"] == "http://127.0.0.1:9081"
    assert values["default_workers_per_model"] == 2
    assert values["job_queue_size"] == 9  # the last duplicate wins, as in TorchServe
    assert values["allowed_urls"] == ["https://s3.example/.*", "file:///data/.*"]
    assert values["disable_token_authorization"] is True
    assert values["enable_model_api"] is False
    assert values["_ignored"] == ["metrics_mode"]


def test_model_api_disabled_gives_405(tmp_path):
    store = model_store(tmp_path, "p")
    with running_engine(tmp_path, model_store=str(store), enable_model_api=False) as (_, c):
        with pytest.raises(EngineError) as e:
            c.register("p-1.0.mar")
        assert e.value.status == 405 and e.value.type == "MethodNotAllowedException"


STREAM_HANDLER = """
from ts.handler_utils.utils import send_intermediate_predict_response

def handle(data, context):
    if data is None:
        return None
    for i in range(3):
        send_intermediate_predict_response(
            ["part %d;" % i] * len(data), context.request_ids, "Intermediate", 200, context)
    return ["done"] * len(data)
"""


def test_streamed_intermediate_responses_arrive_as_chunks(tmp_path):
    from _engine_helpers import manifest, write_mar

    store = model_store(tmp_path)
    write_mar(
        store / "s.mar",
        {"stream_handler.py": STREAM_HANDLER, "d.txt": "x"},
        manifest("s", "1.0", "d.txt", "stream_handler.py"),
    )
    with running_engine(tmp_path, model_store=str(store)) as (info, c):
        c.register("s.mar", initial_workers=1)
        with requests.post(
            info["inference_address"] + "/predictions/s", data=b"go", stream=True, timeout=60
        ) as r:
            assert r.headers.get("Transfer-Encoding") == "chunked"
            body = b"".join(r.iter_content(None)).decode()
        assert body == "part 0;part 1;part 2;done"


def test_explanations_route(tmp_path):
    store = model_store(tmp_path)
    linear_mar(store, "lin", "1.0")
    with running_engine(tmp_path, model_store=str(store)) as (info, c):
        c.register("lin-1.0.mar", initial_workers=1)
        x = [[1.0, 2.0, 3.0, 4.0]]
        r = requests.post(info["inference_address"] + "/explanations/lin", json=x)
        assert r.status_code == 200, r.text
        attribution = r.json()
        # integrated gradients toward the top class: one value per input feature
        flat = attribution if not isinstance(attribution[0], list) else attribution[0]
        assert len(flat) == 4 and any(v != 0 for v in flat)
        v1 = requests.post(
            info["inference_address"] + "/v1/models/lin:explain", json={"instances": x}
        )
        assert v1.status_code == 200 and "explanations" in v1.json()


def test_cli_start_status_stop(tmp_path, monkeypatch):
    import subprocess
    import sys

    # its own runtime dir: `status` and `stop` must see this engine alone
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    ports = [free_port() for _ in range(3)]
    args = [
        f"--inference-address=http://127.0.0.1:{ports[0]}",
        f"--management-address=http://127.0.0.1:{ports[1]}",
        f"--metrics-address=http://127.0.0.1:{ports[2]}",
        f"--model-store={tmp_path / 'store'}",
        f"--state-dir={tmp_path / 'state'}",
    ]
    run = [sys.executable, "-m", "jupyter_torchserve"]
    out = subprocess.run(run + ["start", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"inference   http://127.0.0.1:{ports[0]}" in out.stdout
    try:
        status = subprocess.run(run + ["status"], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and f"127.0.0.1:{ports[1]}" in status.stdout
        token = subprocess.run(run + ["token"], capture_output=True, text=True, timeout=60)
        r = requests.get(
            f"http://127.0.0.1:{ports[1]}/models",
            headers={"Authorization": "Bearer " + token.stdout.strip()},
        )
        assert r.status_code == 200 and r.json() == {"models": []}
        again = subprocess.run(run + ["start", *args], capture_output=True, text=True, timeout=120)
        # the state dir's lock, or the ports, whichever is checked first: one clear line
        assert again.returncode == 1 and "in use" in again.stderr
    finally:
        stop = subprocess.run(run + ["stop"], capture_output=True, text=True, timeout=60)
    assert "stopped engine" in stop.stdout
    assert subprocess.run(run + ["status"], capture_output=True, text=True).returncode == 1


METRICS_HANDLER = """
def handle(data, context):
    if data is None:
        return None
    context.metrics.add_counter("ImagesSeen", len(data), None, "count")
    context.metrics.add_metric("QueueDepth", 3.0, "count", None, [], "GAUGE")
    return ["ok"] * len(data)
"""


def test_handler_custom_metrics_reach_the_metrics_port(tmp_path):
    from _engine_helpers import manifest, write_mar

    store = model_store(tmp_path)
    write_mar(
        store / "cm.mar",
        {"cm_handler.py": METRICS_HANDLER, "d.txt": "x"},
        manifest("cm", "1.0", "d.txt", "cm_handler.py"),
    )
    with running_engine(tmp_path, model_store=str(store)) as (info, c):
        c.register("cm.mar", initial_workers=1)
        for _ in range(3):
            assert (
                requests.post(info["inference_address"] + "/predictions/cm", data=b"x").text == "ok"
            )
        text = c.metrics()
        assert 'ImagesSeen{ModelName="cm"} 3.0' in text
        assert "# TYPE QueueDepth gauge" in text and 'QueueDepth{ModelName="cm"} 3.0' in text
        # the service's PredictionTime is TorchServe's gauge, and the worker's load time too
        assert re.search(
            r'^PredictionTime\{ModelName="cm",Level="Model",Hostname=".+",\} \d', text, re.M
        )
        assert re.search(r'^WorkerLoadTime\{WorkerName="W-9000-cm_1.0",Level="Host",', text, re.M)


def test_full_queue_is_503_and_the_rest_are_served(tmp_path):
    store = model_store(tmp_path, "q")
    with running_engine(
        tmp_path, model_store=str(store), job_queue_size=2, max_inflight_per_worker=1
    ) as (info, c):
        c.register("q-1.0.mar", initial_workers=1)
        answers = _post_many(
            info["inference_address"] + "/predictions/q",
            [{"sleep": 0.3, "echo": i} for i in range(8)],
            8,
        )
        codes = [a.status_code for a in answers]
        assert 503 in codes and 200 in codes and set(codes) <= {200, 503}
        full = next(a for a in answers if a.status_code == 503).json()
        assert full["type"] == "ServiceUnavailableException" and "job_queue_size" in full["message"]
        assert (
            requests.post(
                info["inference_address"] + "/predictions/q", json={"echo": "later"}
            ).json()["echo"]
            == "later"
        )


def test_inference_token_when_required_and_cleanup_on_stop(tmp_path):
    store = model_store(tmp_path, "t")
    state = tmp_path / "state"
    with running_engine(
        tmp_path, model_store=str(store), state_dir=str(state), inference_token_required=True
    ) as (info, c):
        c.register("t-1.0.mar", initial_workers=1)
        url = info["inference_address"] + "/predictions/t"
        r = requests.post(url, json={})
        assert r.status_code == 400 and r.json()["type"] == "InvalidKeyException"
        base = info["inference_address"]
        # KServe's routes take the same key (they are answered on the fast path too)
        r = requests.post(base + "/v1/models/t:predict", json={"instances": [{}]})
        assert r.status_code == 400 and r.json()["type"] == "InvalidKeyException"
        v2 = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}
        r = requests.post(base + "/v2/models/t/infer", json=v2)
        assert r.status_code == 400 and r.json()["type"] == "InvalidKeyException"
        assert r.json()["error"]  # OIP clients read "error"
        assert c.predict("t", {"echo": 5}).json()["echo"] == 5  # the client sends the key
        assert any((state / "cache").iterdir())
    # stopping removes unpacked archives and the key file, keeps logs and the snapshot
    assert not (state / "cache").exists() or not any((state / "cache").iterdir())
    assert not (state / "key_file.json").exists()
    assert (state / "logs" / "t.log").exists() and (state / "snapshot.json").exists()


def test_per_model_requirements_install_and_failure(tmp_path):
    from _engine_helpers import write_mar

    pkg = tmp_path / "tinypkg"
    (pkg / "tinydep_for_engine").mkdir(parents=True)
    (pkg / "tinydep_for_engine" / "__init__.py").write_text("ANSWER = 42\n")
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinydep-for-engine"\nversion = "0.1"\n'
    )
    handler = (
        "import tinydep_for_engine\n\ndef handle(data, context):\n"
        "    return None if data is None else [tinydep_for_engine.ANSWER] * len(data)\n"
    )
    store = model_store(tmp_path)
    for name, req in (("good", f"{pkg}\n"), ("bad", "./no-such-local-dir-for-jts\n")):
        man = {
            "createdOn": "22/11/2026 05:00:00",
            "runtime": "python",
            "model": {
                "modelName": name,
                "serializedFile": "d.txt",
                "handler": "h.py",
                "modelVersion": "1.0",
                "requirementsFile": "requirements.txt",
            },
            "archiverVersion": "0.12.0",
        }
        files = {"h.py": handler, "d.txt": "x", "requirements.txt": req}
        write_mar(store / f"{name}.mar", files, man)
    with running_engine(tmp_path, model_store=str(store), install_py_dep_per_model=True) as (
        info,
        c,
    ):
        c.register("good.mar", initial_workers=1)
        assert (
            requests.post(info["inference_address"] + "/predictions/good", data=b"x").json() == 42
        )
        with pytest.raises(EngineError) as e:
            c.register("bad.mar", initial_workers=1)
        assert e.value.status == 500
        assert "Installing the requirements of model bad failed" in e.value.message
        assert "no-such-local-dir-for-jts" in e.value.message
        assert [m["modelName"] for m in c.models] == ["good"]


def test_abandoned_requests_are_withdrawn_not_run(tmp_path):
    """A client that hangs up, or a multi-instance request refused half-way by a full queue,
    leaves no work behind: those queued items never reach the handler (the log shows what
    did), and the engine goes on serving."""
    store = model_store(tmp_path, "w")
    with running_engine(
        tmp_path, model_store=str(store), job_queue_size=3, max_inflight_per_worker=1
    ) as (info, c):
        c.register("w-1.0.mar", initial_workers=1)
        base = info["inference_address"]
        host, port = base.removeprefix("http://").split(":")
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(
                requests.post, base + "/predictions/w", json={"sleep": 2, "print": "ran-A"}
            )
            time.sleep(0.5)  # A occupies the only worker
            # B and C are queued behind A, then their clients hang up
            for tag in ("B", "C"):
                body = json.dumps({"print": f"ran-{tag}"}).encode()
                with socket.create_connection((host, int(port))) as s:
                    s.sendall(
                        b"POST /predictions/w HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                    time.sleep(0.2)
            # four instances against a queue of 3: the first ones are withdrawn with the 503
            r = requests.post(
                base + "/v1/models/w:predict",
                json={"instances": [{"print": f"ran-v1-{i}"} for i in range(4)]},
            )
            assert r.status_code == 503 and "job_queue_size" in r.json()["message"]
            assert busy.result(timeout=60).status_code == 200
        after = requests.post(base + "/predictions/w", json={"print": "ran-E"})
        assert after.status_code == 200
        log = c.logs("w", tail=200)
        assert "ran-A" in log and "ran-E" in log
        assert "ran-B" not in log and "ran-C" not in log and "ran-v1-" not in log, log


def test_model_log_is_capped_and_writers_keep_writing(tmp_path):
    """A chatty handler cannot fill the disk: past model_log_max_bytes the log moves to
    <model>.log.1 (one backup) and the running worker keeps writing into <model>.log."""
    store = model_store(tmp_path, "chatty")
    with running_engine(tmp_path, model_store=str(store), model_log_max_bytes=4000) as (
        info,
        c,
    ):
        c.register("chatty-1.0.mar", initial_workers=1)
        url = info["inference_address"] + "/predictions/chatty"
        for i in range(20):
            assert requests.post(url, json={"print": f"line-{i:03d} " + "x" * 500}).ok
        log_dir = tmp_path / f"state-{info['management_address'].rsplit(':', 1)[1]}" / "logs"
        log, backup = log_dir / "chatty.log", log_dir / "chatty.log.1"
        deadline = time.monotonic() + 30  # the engine checks every 10 s
        while not backup.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert backup.exists() and "line-019" in backup.read_text()
        assert oct(os.stat(backup).st_mode & 0o777) == "0o600"
        assert requests.post(url, json={"print": "after-rotation"}).ok
        assert "after-rotation" in log.read_text()
        assert log.stat().st_size < 4000
        assert "after-rotation" in c.logs("chatty", tail=5)
