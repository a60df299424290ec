"""Issue 2 §5 on a real NVIDIA GPU: worker GPU assignment, CUDA inference, NVML metrics, and
an engine that never creates a CUDA context itself.

These run only where NVML reports a device (and JTS_FAKE_GPUS is unset); elsewhere they skip,
which is reported as a skip, not a pass. The same paths with injected devices are tested on
every machine (tests/test_engine_behaviour.py). ``scripts/gpu-check.sh`` runs this module
on a lent GPU machine in one call.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
from pathlib import Path

import psutil
import pytest
import requests
import torch
from _engine_helpers import linear_mar, manifest, running_engine, scripted_linear, write_mar

from jupyter_torchserve.engine.gpu import list_gpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("JTS_FAKE_GPUS")) or not list_gpus(),
        reason="needs a real NVIDIA GPU (NVML found none)",
    ),
]

# Reports where the handler's model actually ran, from inside the worker.
DEVICE_PROBE = textwrap.dedent("""
    import os, torch

    _model = None

    def handle(data, context):
        global _model
        if data is None:
            return None
        gpu_id = context.system_properties.get("gpu_id")
        device = torch.device(f"cuda:{gpu_id}" if gpu_id is not None else "cpu")
        if _model is None:
            _model = torch.jit.load(os.path.join(context.system_properties["model_dir"],
                                                 "model.pt"), map_location=device)
        x = torch.ones(len(data), 4, device=device)
        y = _model(x)
        return [{"gpu_id": gpu_id, "device": str(y.device),
                 "cuda_initialized": torch.cuda.is_initialized(),
                 "allocated": torch.cuda.memory_allocated(device) if gpu_id is not None else 0,
                 "pid": os.getpid(), "y": y[i].tolist()} for i in range(len(data))]
""")


def _maps_have_libcuda(pid: int) -> bool:
    """A CUDA context means the driver library (libcuda.so) is mapped into the process;
    this holds across PID namespaces, where NVML's process list may show other pids."""
    with open(f"/proc/{pid}/maps") as f:
        return any("libcuda.so" in line for line in f)


def _expected(x: list[list[float]]) -> list[list[float]]:
    model = torch.jit.load(io.BytesIO(scripted_linear()))
    with torch.no_grad():
        return model(torch.tensor(x)).tolist()


def test_workers_get_gpus_and_infer_on_cuda(tmp_path: Path) -> None:
    n_gpus = len(list_gpus())
    store = tmp_path / "store"
    store.mkdir()
    write_mar(
        store / "dev-1.0.mar",
        {"model.pt": scripted_linear(), "device_probe.py": DEVICE_PROBE},
        manifest("dev", "1.0", "model.pt", "device_probe.py"),
    )
    linear_mar(store)
    with running_engine(tmp_path, model_store=str(store)) as (info, c):
        # round-robin over the devices, as many workers as devices plus one
        c.register("dev-1.0.mar", initial_workers=n_gpus + 1)
        workers = c.describe("dev")[0]["workers"]
        assert all(w["gpu"] for w in workers), workers
        devices = sorted(w["device"] for w in workers)
        assert set(devices) == {f"cuda:{i}" for i in range(n_gpus)}, devices

        # the answer comes from a CUDA tensor in the worker, and equals the CPU model's
        r = requests.post(info["inference_address"] + "/predictions/dev", json={}, timeout=60)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["device"].startswith("cuda:") and out["cuda_initialized"] is True, out
        assert out["allocated"] > 0, out
        (expected,) = _expected([[1.0] * 4])
        assert max(abs(a - b) for a, b in zip(out["y"], expected, strict=True)) < 1e-4

        # the built-in tensor handler on the GPU gives the CPU model's answer
        c.register("linear-1.0.mar", initial_workers=1)
        (w,) = c.describe("linear")[0]["workers"]
        assert w["gpu"] and w["device"].startswith("cuda:"), w
        x = [[0.5, -1.0, 2.0, 3.0], [1.0, 0.0, -2.0, 0.25]]
        r = requests.post(info["inference_address"] + "/predictions/linear", json=x, timeout=60)
        assert r.status_code == 200, r.text
        got = r.json()
        for row, want in zip(got, _expected(x), strict=True):
            assert max(abs(a - b) for a, b in zip(row, want, strict=True)) < 1e-4

        # describe's gpuUsage is TorchServe's "gpuId::N memoryUsed::M MiB" when NVML can see
        # the worker's pid (not in every container); print it either way for the record
        usages = [w["gpuUsage"] for w in c.describe("dev")[0]["workers"]]
        print("gpuUsage per worker:", usages)
        assert all(u == "N/A" or u.startswith("gpuId::") for u in usages), usages

        # the engine and its forkserver never touched CUDA; every worker did
        engine = psutil.Process(info["pid"])
        worker_pids = {
            w["pid"] for name in ("dev", "linear") for w in c.describe(name)[0]["workers"]
        }
        assert not _maps_have_libcuda(engine.pid)
        for p in engine.children(recursive=True):
            if p.pid not in worker_pids:
                assert not _maps_have_libcuda(p.pid), f"{p.pid} {p.cmdline()} has CUDA"
        assert all(_maps_have_libcuda(pid) for pid in worker_pids)


def test_gpu_metrics_and_status_from_nvml(tmp_path: Path) -> None:
    gpus = list_gpus()
    with running_engine(tmp_path) as (info, c):
        status = c.engine_status()
        assert [g["name"] for g in status["gpus"]] == [g.name for g in gpus]
        assert all(g["memory_total"] > 0 for g in status["gpus"])
        text = requests.get(info["metrics_address"] + "/metrics", timeout=30).text
        for g in gpus:
            total = [
                line
                for line in text.splitlines()
                if line.startswith("jts_gpu_memory_total_bytes{") and f'gpu="{g.index}"' in line
            ]
            assert total and float(total[0].rsplit(" ", 1)[1]) == pytest.approx(g.memory_total)
            assert (
                any(
                    line.startswith("jts_gpu_utilization_percent{") and f'gpu="{g.index}"' in line
                    for line in text.splitlines()
                )
                or g.utilization is None
            )
        print(json.dumps(status["gpus"], indent=2))
