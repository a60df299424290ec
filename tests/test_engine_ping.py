"""`/ping` while workers boot, as TorchServe 0.12 answers it.

Observed on the real TorchServe 0.12 (a snapshot holding one model whose handler takes 12 s
to import, restarted with that snapshot as `--ts-config`): the port is refused until the
frontend is up, then `/ping` answers 200 `{"status": "Healthy"}` the whole time the restored
worker is still loading, and after it is READY. TorchServe counts a worker that is starting,
or being restarted within `maxRetryTimeoutInSec`, as running. An engine restarted on a
state dir with a snapshot, or replacing a crashed worker, must say the same, and never
log a normal start-up as `ERROR tornado.access: 500 GET /ping`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from _engine_helpers import manifest, probe_mar, running_engine, write_mar

from jupyter_torchserve.launcher import start_engine, stop_engine

pytestmark = pytest.mark.slow

# a module-level handler that takes seconds to import: its worker stays STARTING meanwhile
SLOW_HANDLER = (
    "import time\n"
    "time.sleep(4)\n"
    "def handle(data, context):\n"
    "    return None if data is None else ['ok'] * len(data)\n"
)


class PingPoller:
    """Polls `/ping` from a thread and keeps every distinct answer (status, body)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = requests.get(self.url, timeout=5)
                self.answers.append((r.status_code, r.json()))
            except requests.RequestException:
                pass  # not listening yet
            time.sleep(0.02)

    def __enter__(self) -> PingPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _wait_ready(client, name: str, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.describe(name)[0]["workers"]
        if workers and all(w["status"] == "READY" for w in workers):
            return workers
        time.sleep(0.1)
    raise AssertionError(f"{name} has no READY worker after {timeout} s")


def test_ping_is_healthy_from_the_first_answer_while_a_snapshot_restores(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    write_mar(
        store / "slow.mar",
        {"slow.py": SLOW_HANDLER, "dummy.txt": "x"},
        manifest("slow", "1.0", "dummy.txt", "slow.py"),
    )
    state = tmp_path / "state"
    with running_engine(tmp_path, model_store=store, state_dir=state) as (info, client):
        client.register("slow.mar", initial_workers=1, synchronous=True)
        addresses = {
            k: info[k] for k in ("inference_address", "management_address", "metrics_address")
        }
    assert (state / "snapshot.json").exists()

    with PingPoller(addresses["inference_address"] + "/ping") as poller:
        info = start_engine(model_store=str(store), state_dir=str(state), **addresses)
        try:
            from jupyter_torchserve.client import Client

            client = Client.from_info(info, timeout=60)
            # restored, and seen while its worker was still loading
            deadline = time.monotonic() + 60
            while not client.describe("slow")[0]["workers"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.describe("slow")[0]["workers"][0]["status"] == "STARTING"
            _wait_ready(client, "slow")
            time.sleep(0.2)
        finally:
            log = Path(info["log_file"]).read_text(errors="replace")
            stop_engine(info)
    assert poller.answers, "the restarted engine never answered /ping"
    assert {(s, b["status"]) for s, b in poller.answers} == {(200, "Healthy")}
    assert "500 GET /ping" not in log


def test_ping_stays_healthy_while_a_crashed_worker_is_replaced(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    probe_mar(store, "crash")
    with running_engine(tmp_path, model_store=store) as (info, client):
        client.register("crash-1.0.mar", model_name="crash", initial_workers=1)
        (pid,) = [w["pid"] for w in _wait_ready(client, "crash")]
        with PingPoller(info["inference_address"] + "/ping") as poller:
            time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
            # the replacement waits out a back-off, then boots: /ping polled all along
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                workers = client.describe("crash")[0]["workers"]
                if workers and workers[0]["pid"] != pid and workers[0]["status"] == "READY":
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the crashed worker was not replaced")
        r = requests.post(info["inference_address"] + "/predictions/crash", json={"echo": 1})
        assert r.status_code == 200 and r.json()["pid"] != pid
    assert len(poller.answers) > 5
    assert {(s, b["status"]) for s, b in poller.answers} == {(200, "Healthy")}
