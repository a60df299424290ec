"""A worker that runs out of GPU memory is reported as such (issue 19).

torch.cuda.OutOfMemoryError can be raised without a GPU, so the whole path runs here: the
handler's error becomes TorchServe's 507 "Out of resources" with what ran out, the worker
keeps serving, and a worker that then dies is classified as out of memory (507, in
describe's workerDeaths and in the model's log) and replaced, other models untouched.
"""

from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path

import pytest
from _engine_helpers import fake_gpus, manifest, model_store, running_engine, write_mar
from _handler_helpers import request, run_infer_frame, write_manifest

from jupyter_torchserve.client import EngineError
from jupyter_torchserve.engine import deaths
from jupyter_torchserve.handlers.oom import is_cuda_oom
from jupyter_torchserve.handlers.service import HandlerError, load_service

# raises what torch raises when CUDA's allocator fails ("oom"), or a CUDA-worded
# RuntimeError from torch < 1.13 ("old"), or aborts as a broken CUDA context may ("abort")
OOM_HANDLER = textwrap.dedent("""
    import json, os, signal
    import torch

    def handle(data, context):
        if data is None:
            return None
        body = data[0].get("body") or b"{}"
        body = json.loads(body) if isinstance(body, (bytes, bytearray)) else body
        if body.get("oom"):
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity "
                "of 15.77 GiB of which 1.02 GiB is free.\\nIf reserved but unallocated ...")
        if body.get("old"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 MiB")
        if body.get("value"):
            raise ValueError("not memory")
        if body.get("abort"):
            os.kill(os.getpid(), signal.SIGABRT)
        return [{"pid": os.getpid()} for _ in data]
""")


def _service(tmp_path):
    model_dir = tmp_path / "oom"
    model_dir.mkdir()
    (model_dir / "oom_handler.py").write_text(OOM_HANDLER)
    write_manifest(model_dir, name="oom", serialized="none.pt", handler="oom_handler.py")
    return load_service(str(model_dir), gpu_id=0)


def test_a_cuda_oom_in_the_handler_is_torchserves_507_saying_what_ran_out(tmp_path):
    svc = _service(tmp_path)
    with pytest.raises(HandlerError) as e:
        svc.predict([request({"oom": 1}), request({})])
    err = e.value
    assert err.status == 507 and err.cuda_oom
    assert err.message.startswith("Out of resources: CUDA out of memory on cuda:0")
    assert (
        "model oom ran a batch of 2" in err.message and "Tried to allocate 20.00 GiB" in err.message
    )
    assert "If reserved" not in err.message  # torch's first line, not its whole advice
    with pytest.raises(HandlerError) as e:
        svc.predict([request({"old": 1})])
    assert e.value.status == 507 and e.value.cuda_oom
    with pytest.raises(HandlerError) as e:
        svc.predict([request({"value": 1})])
    assert e.value.status == 503 and not e.value.cuda_oom
    assert json.loads(svc.predict([request({})])[0].body)["pid"] > 0  # still serves


def test_a_request_that_runs_out_alone_is_answered_507_and_the_cache_released(
    tmp_path, monkeypatch
):
    """A batch that fails for another reason is run one request at a time; one of them
    running out of memory alone gets 507, flagged so the engine counts it, and the worker
    empties the cache as it does for a batch."""
    from jupyter_torchserve.engine import worker_main

    svc = _service(tmp_path)
    released: list[bool] = []
    monkeypatch.setattr(worker_main, "release_cuda_cache", lambda: released.append(True))
    frame = run_infer_frame(svc, [{"value": 1}, {"oom": 1}, {}])
    assert frame["op"] == "result"
    first, second, third = frame["resps"]
    assert first["e"]["status"] == 503 and not first["e"]["oom"]
    assert second["e"]["status"] == 507 and second["e"]["oom"] is True
    assert third["s"] == 200 and released == [True]


def test_is_cuda_oom_reads_the_type_and_cudas_words():
    import torch

    assert is_cuda_oom(torch.cuda.OutOfMemoryError("anything"))
    assert is_cuda_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_cuda_oom(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_cuda_oom(MemoryError())


def test_a_death_with_gpu_evidence_is_out_of_memory_not_worker_died():
    judge = lambda code, gpu=None: deaths.classify("m", code, False, "m.log", gpu_oom=gpu)  # noqa: E731
    evidence = "its handler raised CUDA out of memory 0.5 s before"
    for code in (1, -signal.SIGABRT, -signal.SIGSEGV, -signal.SIGKILL):
        d = judge(code, evidence)
        assert d.out_of_memory and d.error is not None and d.error.status == 507, code
        assert d.error.message.startswith("Out of resources") and evidence in d.error.message
        assert "out of GPU memory" in d.cause
    assert judge(-signal.SIGTERM, evidence).error is None  # a polite outside stop: retried
    assert judge(-signal.SIGABRT).error.status == 503  # no evidence: a crash, as before
    assert not judge(-signal.SIGABRT).out_of_memory
    assert deaths.classify("m", -signal.SIGKILL, True, "m.log", gpu_oom=evidence).error is None


def test_a_nearly_full_device_is_gpu_evidence(monkeypatch):
    monkeypatch.setenv("JTS_FAKE_GPUS", fake_gpus(300, 8000))
    assert deaths.gpu_full(0) == "cuda:0 had 300 MiB free of 16384 MiB when it died"
    assert deaths.gpu_full(1) is None and deaths.gpu_full(7) is None


def _wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.slow
def test_served_oom_answers_507_keeps_serving_then_a_death_is_named_and_replaced(tmp_path):
    store = model_store(tmp_path, "other")
    write_mar(
        store / "oom-1.0.mar",
        {"oom_handler.py": OOM_HANDLER, "dummy.txt": "x"},
        manifest("oom", "1.0", "dummy.txt", "oom_handler.py"),
    )
    with running_engine(tmp_path, model_store=str(store)) as (info, c):
        c.register("oom-1.0.mar", initial_workers=1)
        c.register("other-1.0.mar", initial_workers=1)
        pid = c.predict("oom", b"{}").json()["pid"]
        with pytest.raises(EngineError) as e:
            c.predict("oom", b'{"oom": 1}')
        assert e.value.status == 507
        assert e.value.message.startswith("Out of resources: CUDA out of memory"), e.value.message
        assert "Prediction failed" not in e.value.message
        assert c.predict("oom", b"{}").json()["pid"] == pid  # the same worker serves on
        (w,) = c.describe("oom")[0]["workers"]
        assert w["cudaOutOfMemoryErrors"] == 1

        # its CUDA context broken, the worker aborts on its next batch: out of memory, 507
        with pytest.raises(EngineError) as e:
            c.predict("oom", b'{"abort": 1}')
        assert e.value.status == 507, e.value.message
        assert "out of memory" in e.value.message and "SIGABRT" in e.value.message
        (death,) = c.describe("oom")[0]["workerDeaths"]
        assert death["outOfMemory"] is True and death["status"] == 507 and death["pid"] == pid
        assert "out of GPU memory" in death["cause"]
        text = (Path(info["log_dir"]) / "oom.log").read_text()
        assert f"worker {death['worker']} died: out of GPU memory" in text
        assert "Out of resources: CUDA out of memory on" in text  # the worker's own line

        def replaced():
            ws = c.describe("oom")[0]["workers"]
            return ws and ws[0]["status"] == "READY" and ws[0]["pid"] != pid

        assert _wait_for(replaced), c.describe("oom")
        assert c.predict("oom", b"{}").json()["pid"] != pid
        assert c.predict("other", b'{"echo": 2}').json()["echo"] == 2  # untouched
        assert c.describe("other")[0]["workerDeaths"] == []
