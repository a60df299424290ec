"""`describe` shows the device a worker's handler really uses: a worker given a GPU whose
handler fell back to the CPU (no CUDA in the process) says `cpu`, not `cuda:N`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from _engine_helpers import fake_gpus, model_store, running_engine

from jupyter_torchserve.archive import archive
from jupyter_torchserve.engine.worker_main import handler_device


def test_the_handlers_model_and_device_decide_not_the_assignment():
    on_cpu = SimpleNamespace(handler_instance=SimpleNamespace(model=torch.nn.Linear(2, 1)))
    assert handler_device(on_cpu, "cuda:1") == "cpu"
    told = SimpleNamespace(handler_instance=SimpleNamespace(device=torch.device("cuda")))
    assert handler_device(told, "cpu") == "cuda:0"
    function_handler = SimpleNamespace(handler_instance=None)
    assert handler_device(function_handler, "cuda:1") == "cuda:1"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback where CUDA is absent")
def test_describe_reports_cpu_for_a_gpu_worker_whose_handler_fell_back(tmp_path, monkeypatch):
    monkeypatch.setenv("JTS_FAKE_GPUS", fake_gpus(15360))
    store = model_store(tmp_path, "probe")
    archive(
        torch.nn.Linear(3, 2),
        "lin",
        example_inputs=torch.ones(1, 3),
        export_path=str(store),
        format="torchscript",
        preflight=False,
    )
    with running_engine(tmp_path, model_store=str(store)) as (_, c):
        c.register("lin.mar", initial_workers=1)
        (w,) = c.describe("lin")[0]["workers"]
        assert w["device"] == "cpu" and w["gpu"] is False
        assert c.predict("lin", [[1.0, 2.0, 3.0]]).status == 200
        # the same engine gives workers that GPU: a `handle` function (no model of its own
        # to ask) is reported on it, and its handler was told gpu_id 0
        c.register("probe-1.0.mar", initial_workers=1)
        (w,) = c.describe("probe")[0]["workers"]
        assert w["device"] == "cuda:0" and w["gpu"] is True
        assert c.predict("probe", {}).json()["gpu_id"] == 0
