"""``format="onnx"``: an ONNX export served by ONNX Runtime in a worker without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve.archive import archive
from jupyter_torchserve.archive.formats import FORMATS


def _cnn() -> Any:
    import torch

    class SmallCNN(torch.nn.Module):  # defined here, as in a notebook
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.fc = torch.nn.Linear(4 * 13 * 13, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    return SmallCNN().eval()


def test_auto_never_picks_onnx_and_onnx_takes_only_its_own_handler(tmp_path: Path) -> None:
    import torch

    assert "onnx" not in FORMATS  # the order "auto" tries
    with pytest.raises(ValueError, match="built-in onnx handler"):
        archive(
            _cnn(),
            "c",
            handler="image_classifier",
            example_inputs=torch.zeros(1, 1, 28, 28),
            format="onnx",
            export_path=tmp_path,
        )


def _loaded_libraries(pid: int) -> set[str]:
    return {
        Path(line.split()[-1]).name
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
        if "/" in line
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_onnx_export_serves_the_kernels_answers_from_a_worker_without_torch(
    engine: dict,  # noqa: F811
) -> None:
    import json
    import zipfile

    import torch

    from jupyter_torchserve import api
    from jupyter_torchserve.deployment import deploy

    model = _cnn()
    x = torch.randn(1, 1, 28, 28)
    dep = deploy(model, "cnn_onnx", example=x, format="onnx", progress="none")
    assert dep.archive_format == "onnx" and dep.parity.ok
    assert dep.preflight_max_abs_diff is not None and dep.preflight_max_abs_diff < 1e-4
    with zipfile.ZipFile(dep.archive_path) as z:
        meta = json.loads(z.read("MAR-INF/jupyter_torchserve.json"))
    assert meta["requires"] == ["onnxruntime"] and meta["builtin_handler"] == "onnx"

    batch = torch.randn(5, 1, 28, 28)
    served = torch.tensor(api.predict("cnn_onnx", batch.tolist()))
    with torch.no_grad():
        want = model(batch)
    assert served.shape == want.shape and float((served - want).abs().max()) < 1e-4
    v2 = api.kserve_predict("cnn_onnx", batch[:2], "v2")
    got = torch.tensor(v2["outputs"][0]["data"]).reshape(2, 10)
    assert float((got - want[:2]).abs().max()) < 1e-4

    # a request of the wrong shape, or one it cannot read, is the caller's fault: a 400
    # with ONNX Runtime's reason, and the worker serves on (still without torch, below)
    for bad, says in (
        ([[1.0, 2.0]], "Invalid rank for input: input-0 Got: 2 Expected: 4"),
        ("{oops", "the request body is not valid JSON"),
    ):
        with pytest.raises(api.TorchServeError, match=says) as failed:
            api.predict("cnn_onnx", bad)
        assert failed.value.status == 400
    assert len(api.predict("cnn_onnx", batch[:1].tolist())) == 1

    (worker,) = api.describe("cnn_onnx").versions[0]["workers"]
    libraries = _loaded_libraries(int(worker["pid"]))
    assert any(name.startswith("libonnxruntime") or "onnxruntime" in name for name in libraries)
    assert not any("torch" in name for name in libraries), sorted(
        n for n in libraries if "torch" in n
    )
    api.unregister("cnn_onnx")

    # the check can fail: a worker of a torch format (forked from the forkserver) maps torch
    control = deploy(model, "cnn_ts", example=x, format="torchscript", progress="none")
    (worker,) = api.describe("cnn_ts").versions[0]["workers"]
    assert any("torch" in name for name in _loaded_libraries(int(worker["pid"])))
    api.unregister(control.name)
