"""A model and its archive on any device: what the CPU can prove of it.

The ``meta`` device stands in for a GPU here: a tensor on the CPU meeting one on ``meta``
fails the way it would meet one on ``cuda:0``. tests/test_gpu_devices.py runs the same paths
on a real GPU.
"""

from __future__ import annotations

import inspect

import torch

from jupyter_torchserve.archive import archive, extract
from jupyter_torchserve.archive.devices import model_device, to_device
from jupyter_torchserve.handlers.builtins import load_exported
from jupyter_torchserve.parity import model_output


class MakesTensorsOnItsInputsDevice(torch.nn.Module):
    """Right on any device in eager mode; traced, its graph names the device it was traced on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = torch.arange(2, device=x.device) + torch.zeros(x.shape[0], 2, device=x.device)
        return self.linear(x) + offset


def test_an_exported_archive_is_moved_with_the_devices_its_graph_names(tmp_path):
    result = archive(
        MakesTensorsOnItsInputsDevice(),
        "dev",
        example_inputs=torch.ones(1, 3),
        export_path=tmp_path,
        format="export",
        preflight=False,
    )
    model_dir, _ = extract(result.path, tmp_path / "unpacked")
    loader = inspect.getmodule(load_exported)
    model = loader.load_model(str(model_dir), "meta")
    # before, the module was moved with .to(): its graph still made its tensors on the CPU
    out = model(torch.ones(4, 3, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (4, 2)


def test_the_kernels_checks_call_the_model_where_it_is():
    with torch.device("meta"):
        model = torch.nn.Linear(3, 2)
    assert model_device(model) == torch.device("meta")
    out = model_output(model, torch.ones(4, 3))  # an example made on the CPU
    assert out.device.type == "meta" and tuple(out.shape) == (4, 2)
    many = to_device({"a": torch.ones(1), "b": (torch.ones(1), "text")}, torch.device("meta"))
    assert many["a"].is_meta and many["b"][0].is_meta and many["b"][1] == "text"
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no tensors of its own
