"""A scale-up that fails part-way is rolled back (issue 19): the workers it started are
stopped, the model keeps its workers, min and max as they were, and the error says which
new worker failed and what was undone. Real engines, real worker processes."""

from __future__ import annotations

import os
import textwrap
import time

import pytest
from _engine_helpers import fake_gpus, manifest, model_store, running_engine, write_mar

from jupyter_torchserve.client import EngineError

pytestmark = pytest.mark.slow


# Each worker start appends its pid to a counter file; the FAIL_AT-th start refuses to load.
COUNTING_HANDLER = """
    import os

    COUNTER = {counter!r}
    FAIL_AT = {fail_at}

    def handle(data, context):
        if data is None:
            with open(COUNTER, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            with open(COUNTER) as f:
                n = len(f.read().split())
            if n == FAIL_AT:
                raise RuntimeError(f"worker start {{n}} refused by the test")
            return None
        return [{{"pid": os.getpid()}} for _ in data]
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too: the forkserver reaps its children in its own time
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids: list[int], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def test_a_failed_third_start_of_four_leaves_the_model_as_it_was(tmp_path):
    counter = tmp_path / "starts.txt"
    store = model_store(tmp_path, "other")
    source = textwrap.dedent(COUNTING_HANDLER.format(counter=str(counter), fail_at=3))
    write_mar(
        store / "count-1.0.mar",
        {"count_handler.py": source, "dummy.txt": "x"},
        manifest("count", "1.0", "dummy.txt", "count_handler.py"),
    )
    with running_engine(tmp_path, model_store=str(store)) as (_info, c):
        c.register("count-1.0.mar", initial_workers=1)  # start 1
        c.register("other-1.0.mar", initial_workers=1)
        (first,) = c.describe("count")[0]["workers"]
        with pytest.raises(EngineError) as e:
            c.scale("count", 4, 4)  # starts 2 and 3 load, ... one of them is the 3rd start
        msg = e.value.message
        assert e.value.status == 500, msg
        assert msg.startswith("Failed to start workers for model count"), msg
        assert "worker start 3 refused by the test" in msg
        assert "to 4 workers failed at new worker" in msg and "of 3 and was rolled back" in msg
        assert "the model keeps 1 worker(s), min_worker 1, max_worker 1" in msg
        (d,) = c.describe("count")
        assert [w["pid"] for w in d["workers"]] == [first["pid"]]
        assert (d["minWorkers"], d["maxWorkers"]) == (1, 1)
        pids = [int(p) for p in counter.read_text().split()]
        assert len(pids) == 4 and pids[0] == first["pid"]
        assert _wait_dead(pids[1:]) == []  # every worker the call started is gone
        time.sleep(2)  # and none is started again to reach the 4 it asked for
        assert len(c.describe("count")[0]["workers"]) == 1
        assert c.predict("count", b"{}").json()["pid"] == first["pid"]
        assert c.predict("other", b'{"echo": 1}').json()["echo"] == 1
        # the next scale-up (start 5 and 6) works
        c.scale("count", 3, 3)
        assert len(c.describe("count")[0]["workers"]) == 3


def test_gpu_placement_refusing_midway_rolls_back_with_507(tmp_path, monkeypatch):
    # room for two workers of the probe's estimated 512 MiB, not three
    monkeypatch.setenv("JTS_FAKE_GPUS", fake_gpus(1100))
    store = model_store(tmp_path, "g")
    with running_engine(tmp_path, model_store=str(store)) as (_info, c):
        c.register("g-1.0.mar", initial_workers=1)
        (first,) = c.describe("g")[0]["workers"]
        with pytest.raises(EngineError) as e:
            c.scale("g", 3, 5)  # the 2nd fits and starts; the 3rd is refused
        msg = e.value.message
        assert e.value.status == 507 and e.value.type == "WorkerInsufficientMemoryException"
        assert "no GPU has room for another worker" in msg, msg
        assert "failed at new worker 2 of 2 and was rolled back" in msg, msg
        assert "the 1 worker(s) it started are stopped" in msg, msg
        (d,) = c.describe("g")
        assert [w["pid"] for w in d["workers"]] == [first["pid"]]
        assert (d["minWorkers"], d["maxWorkers"]) == (1, 1)
        # the stopped worker's room was given back: one more fits again
        c.scale("g", 2, 2)
        assert len(c.describe("g")[0]["workers"]) == 2
