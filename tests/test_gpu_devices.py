"""A model and its archive on a real GPU: made on the CPU and served on the GPU, made on the
GPU and served on either, and deployed from the GPU with the kernel's parity check.

A data scientist with a GPU trains there, so the kernel's model is usually on ``cuda:0``; the
archive must still load on a CPU pod, and an archive made on a laptop must serve on a GPU
worker. These run only where NVML and torch both see a GPU; elsewhere they skip, which is
reported as a skip, not a pass. tests/test_archive_devices.py proves what the CPU can of the
same paths; ``scripts/gpu-check.sh`` runs this module on a lent GPU machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _engine_helpers import running_engine
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve.archive import archive
from jupyter_torchserve.client import Client
from jupyter_torchserve.engine.gpu import list_gpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        bool(os.environ.get("JTS_FAKE_GPUS")) or not list_gpus() or not torch.cuda.is_available(),
        reason="needs a real NVIDIA GPU (NVML and torch.cuda found none)",
    ),
]

#: TF32 convolutions (cuDNN's default) round to about 1e-3 of a value; the answers compared
#: here are about 1, so this bounds what a device may change and still catches a wrong model
ATOL = 5e-3


class SmallNet(torch.nn.Module):
    """A convolution, a batch norm, and tensors made on its input's device in ``forward``:
    traced, a graph names that device, which is what an archive must not keep."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return self.head(h) + torch.arange(3, device=x.device) * 0.5


def _rows() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 1, 8, 8)


def _served(c, name: str, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(c.predict(name, x.tolist()).json())


def _close(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = (got.double() - want.detach().cpu().double()).abs().max().item()
    assert diff < ATOL, diff
    return diff


@pytest.mark.parametrize("fmt", ["export", "torchscript", "eager"])
def test_an_archive_made_on_the_cpu_serves_on_a_gpu_worker(tmp_path: Path, fmt: str) -> None:
    model, x = SmallNet().eval(), _rows()
    store = tmp_path / "store"
    archive(model, "net", example_inputs=x[:1], export_path=store, format=fmt)
    with running_engine(tmp_path, model_store=str(store)) as (_info, c):
        c.register("net.mar", initial_workers=1)
        (w,) = c.describe("net")[0]["workers"]
        assert w["device"].startswith("cuda:"), w
        print(fmt, "on", w["device"], "max abs diff", _close(_served(c, "net", x), model(x)))


@pytest.mark.parametrize("fmt", ["auto", "torchscript", "eager"])
def test_an_archive_made_on_the_gpu_serves_on_the_gpu_and_on_the_cpu(
    tmp_path: Path, fmt: str
) -> None:
    model, x = SmallNet().cuda().eval(), _rows().cuda()
    store = tmp_path / "store"
    result = archive(model, "net", example_inputs=x[:1], export_path=store, format=fmt)
    print(fmt, "archived as", result.format, "pre-flight max abs diff", result.max_abs_diff)
    assert next(model.parameters()).is_cuda  # the user's model stays where it was
    with running_engine(tmp_path, model_store=str(store)) as (_info, c):
        c.register("net.mar", model_name="net", initial_workers=1)
        c.register("net.mar", model_name="net_cpu", initial_workers=1, device_type="cpu")
        devices = {n: c.describe(n)[0]["workers"][0]["device"] for n in ("net", "net_cpu")}
        assert devices["net"].startswith("cuda:") and devices["net_cpu"] == "cpu", devices
        for name in ("net", "net_cpu"):
            diff = _close(_served(c, name, x.cpu()), model(x))
            print(f"  served on {devices[name]}: max abs diff {diff:.2g}")


@pytest.mark.parametrize("handler", ["tensor", "image_classifier"])
def test_deploy_of_a_model_on_the_gpu_passes_its_parity_check(
    engine: dict,  # noqa: F811
    handler: str,
) -> None:
    from jupyter_torchserve.deployment import deploy

    model, x = SmallNet().cuda().eval(), _rows().cuda()
    dep = deploy(model, f"gpu_{handler}", example=x[:1], handler=handler, progress="none")
    print(handler, "parity", dep.parity, "pre-flight", dep.preflight_max_abs_diff)
    assert dep.parity.ok, dep.parity
    (w,) = Client.from_info(engine).describe(f"gpu_{handler}")[0]["workers"]
    assert w["device"].startswith("cuda:"), w  # 'auto' put the worker on the GPU
    assert next(model.parameters()).is_cuda
