"""Issue 19's GPU memory guard and out-of-memory reporting on a real NVIDIA GPU.

Runs only where NVML reports a device (and JTS_FAKE_GPUS is unset), like tests/test_gpu.py;
``scripts/gpu-check.sh`` runs both on a lent GPU machine. Without a GPU the same paths are
tested with injected devices and a constructed torch.cuda.OutOfMemoryError
(tests/test_gpu_guard.py, tests/test_scale_rollback.py, tests/test_worker_oom.py).
"""

from __future__ import annotations

import os
import textwrap

import pytest
from _engine_helpers import manifest, running_engine, write_mar

from jupyter_torchserve.client import EngineError
from jupyter_torchserve.engine.gpu import list_gpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("JTS_FAKE_GPUS")) or not list_gpus(),
        reason="needs a real NVIDIA GPU (NVML found none)",
    ),
]

# Holds BLOCK bytes of GPU memory from its load on; a request {"grab": N} asks for N bytes
# more for the length of the batch (a real CUDA allocation, so a real OutOfMemoryError).
HOLDER = textwrap.dedent("""
    import json, os
    import torch

    BLOCK = {block}
    _held = None

    def handle(data, context):
        global _held
        device = torch.device(f"cuda:{{context.system_properties['gpu_id']}}")
        if data is None:
            _held = torch.empty(BLOCK, dtype=torch.uint8, device=device)
            return None
        body = data[0].get("body") or b"{{}}"
        body = json.loads(body) if isinstance(body, (bytes, bytearray)) else body
        if body.get("grab"):
            extra = torch.empty(int(body["grab"]), dtype=torch.uint8, device=device)
            del extra
        return [{{"pid": os.getpid(), "held": _held.numel(),
                  "allocated": torch.cuda.memory_allocated(device)}} for _ in data]
""")


def _holder_mar(store, name: str, block: int):
    store.mkdir(parents=True, exist_ok=True)
    return write_mar(
        store / f"{name}-1.0.mar",
        {"holder.py": HOLDER.format(block=block), "dummy.txt": "x"},
        manifest(name, "1.0", "dummy.txt", "holder.py"),
    )


def _free_bytes(index: int = 0) -> int:
    g = next(g for g in list_gpus() if g.index == index)
    return g.memory_total - g.memory_used


def test_a_real_cuda_oom_is_507_out_of_resources_and_the_worker_serves_on(tmp_path):
    store = tmp_path / "store"
    _holder_mar(store, "grab", 16 * 1024**2)
    with running_engine(tmp_path, model_store=str(store), number_of_gpu=1) as (_info, c):
        c.register("grab-1.0.mar", initial_workers=1)
        first = c.predict("grab", b"{}").json()
        too_much = _free_bytes() * 2  # more than the device has free
        with pytest.raises(EngineError) as e:
            c.predict("grab", f'{{"grab": {too_much}}}'.encode())
        print("CUDA OOM answer:", e.value.status, e.value.message)
        assert e.value.status == 507
        assert e.value.message.startswith("Out of resources: CUDA out of memory on cuda:0")
        again = c.predict("grab", b"{}").json()
        assert again["pid"] == first["pid"]  # the same worker, still serving
        assert again["allocated"] <= first["allocated"] + 1024**2  # the failed batch freed
        (w,) = c.describe("grab")[0]["workers"]
        assert w["cudaOutOfMemoryErrors"] == 1 and w["status"] == "READY"


def test_the_guard_refuses_a_scale_up_that_does_not_fit_and_rolls_it_back(tmp_path):
    # each worker holds 40 % of what is free now: two fit on the device, a third does not
    block = int(_free_bytes() * 0.4)
    store = tmp_path / "store"
    _holder_mar(store, "big", block)
    with running_engine(tmp_path, model_store=str(store), number_of_gpu=1) as (_info, c):
        c.register("big-1.0.mar", initial_workers=1)
        (first,) = c.describe("big")[0]["workers"]
        print("first worker:", first["gpuUsage"])
        with pytest.raises(EngineError) as e:
            c.scale("big", 4, 4)
        msg = e.value.message
        print("scale to 4 answered:", e.value.status, msg)
        if e.value.status == 507:  # the guard measured the first worker (NVML per process)
            assert "no GPU has room for another worker" in msg and "cuda:0" in msg
        else:  # NVML could not see the worker's pid (a PID namespace): the load ran out
            assert e.value.status == 500 and "out of memory" in msg.lower(), msg
        assert "rolled back" in msg and "the model keeps 1 worker(s)" in msg, msg
        (d,) = c.describe("big")
        assert [w["pid"] for w in d["workers"]] == [first["pid"]]
        assert (d["minWorkers"], d["maxWorkers"]) == (1, 1)
        assert c.predict("big", b"{}").json()["held"] == block  # still serving
        c.scale("big", 2, 2)  # one more does fit
        assert len(c.describe("big")[0]["workers"]) == 2
