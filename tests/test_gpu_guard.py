"""The GPU memory guard with injected devices (JTS_FAKE_GPUS): a worker goes to a device with
room for its footprint, and a scale-up that fits nowhere is refused with 507 and a message
naming the devices, their free memory and the footprint; the model keeps serving."""

from __future__ import annotations

import re

import pytest
from _engine_helpers import fake_gpus, model_store, running_engine

from jupyter_torchserve.client import EngineError

pytestmark = pytest.mark.slow


def test_placed_where_it_fits_else_507(tmp_path, monkeypatch):
    # the probe archive is tiny: its estimated footprint is a CUDA context, 512 MiB
    monkeypatch.setenv("JTS_FAKE_GPUS", fake_gpus(100, 700))
    store = model_store(tmp_path, "g")
    with running_engine(tmp_path, model_store=str(store)) as (info, c):
        c.register("g-1.0.mar", initial_workers=1)
        (w,) = c.describe("g")[0]["workers"]
        assert w["device"] == "cuda:1"  # not round-robin's cuda:0: it has 100 MiB free
        with pytest.raises(EngineError) as e:
            c.scale("g", 2, 2)
        assert e.value.status == 507
        msg = e.value.message
        found = re.search(r"needing (\d+) MiB: cuda:0 100 MiB free, cuda:1 (\d+) MiB free", msg)
        assert found, msg
        need, left = map(int, found.groups())
        assert 512 <= need < 520 and 699 <= need + left <= 700, msg  # 700 less the first worker
        # the worker it had keeps serving
        assert c.predict("g", b'{"echo": 1}').json()["gpu_id"] == 1
        assert len(c.describe("g")[0]["workers"]) == 1
