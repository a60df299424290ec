"""Every worked notebook runs end to end in a real kernel (nbclient) and answers correctly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from _notebook_helpers import engine, notebook_text, repo_root, ts_env  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NOTEBOOKS = repo_root() / "notebooks"


def execute(path: Path, workdir: Path, timeout: int = 600) -> Any:
    """Run a copy of ``path`` in ``workdir`` (files it writes stay out of the repo)."""
    from nbclient import NotebookClient

    copy = workdir / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    ).execute()
    return nb


def outputs_of(nb: Any, needle: str) -> str:
    """Text outputs of the first code cell whose source contains ``needle``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and needle in cell.source:
            return notebook_text(nbformat.v4.new_notebook(cells=[cell]))
    raise AssertionError(f"no cell with {needle!r}")


def exactly(nb: Any, source: str) -> Any:
    """The code cell whose whole source is ``source``."""
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.strip() == source)


def top_label(text: str) -> str:
    """The first key of the first ``{label: prob}`` JSON object in a curl answer."""
    match = re.search(r'\{\s*"(\w+)":\s*[0-9.e-]+', text)
    assert match, text
    return match.group(1)


def test_every_notebook_is_tested() -> None:
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == {
        "mnist.ipynb",
        "custom_handler.ipynb",
        "handoff.ipynb",
        "lifecycle.ipynb",
        "scaling.ipynb",
    }


def test_mnist_notebook(engine: dict, tmp_path: Path) -> None:  # noqa: F811
    nb = execute(NOTEBOOKS / "mnist.ipynb", tmp_path)
    assert float(re.search(r"accuracy: ([0-9.]+)%", outputs_of(nb, "class Net")).group(1)) > 90
    assert "parity" in outputs_of(nb, "%torchserve deploy model --name mnist")
    assert "ok: max" in outputs_of(nb, "%torchserve deploy model --name mnist")
    # the PNG is a 3, the v1/v2 requests carry a 7
    assert top_label(outputs_of(nb, "-T digit.png")) == "3"
    v1 = outputs_of(nb, "v1/models/mnist:predict")
    assert '"predictions"' in v1 and top_label(v1.split('"predictions"')[1]) == "7"
    assert len(re.findall(r'"\d":', v1)) == 5  # top-5
    v2 = outputs_of(nb, "v2/models/mnist/infer")
    assert '"outputs"' in v2 and "7" in v2
    assert "Workers scaled to 2" in outputs_of(nb, "scale mnist --workers 2")
    assert outputs_of(nb, "%torchserve describe mnist").count("READY") == 2
    assert "ok: max" in outputs_of(nb, "--version 2.0")
    assert 'to "2.0"' in outputs_of(nb, "set-default mnist 2.0")
    assert top_label(outputs_of(nb, "%torchserve predict mnist seven.png").replace("'", '"')) == "7"
    (why,) = exactly(nb, "%torchserve explain mnist seven.png").outputs
    assert {"image/png", "text/html"} <= set(why["data"])  # what nbconvert and GitHub show
    assert "explained toward 7" in why["data"]["text/plain"]
    assert "explained toward 1 predicted 7 (1, 28, 28)" in outputs_of(nb, "--target 1")
    assert "ts_inference_requests_total" in outputs_of(nb, "%torchserve metrics")
    assert "unregistered" in outputs_of(nb, "unregister mnist --version 1.0")


def test_custom_handler_notebook(engine: dict, tmp_path: Path) -> None:  # noqa: F811
    nb = execute(NOTEBOOKS / "custom_handler.ipynb", tmp_path)
    assert "ok: max" in outputs_of(nb, "--name iris")
    assert "'species': 'setosa'" in outputs_of(nb, "json=setosa")
    curl = outputs_of(nb, "versicolor.json")
    assert json.loads(curl[curl.index("{") :])["species"] == "versicolor"
    assert "virginica" in outputs_of(nb, "%torchserve predict iris --data flower")
    assert "unregistered" in outputs_of(nb, "unregister iris")


def test_handoff_notebook(engine: dict, tmp_path: Path) -> None:  # noqa: F811
    nb = execute(NOTEBOOKS / "handoff.ipynb", tmp_path)
    assert float(re.search(r"accuracy: ([0-9.]+)%", outputs_of(nb, "load_digits")).group(1)) > 85
    kserve = outputs_of(nb, "--to kserve")
    assert "Exported digits (1.0) for kserve" in kserve and "servingruntime.yaml" in kserve
    assert "model_snapshot=" in outputs_of(nb, "config.properties').read()")
    t9k = outputs_of(nb, "--to t9k")
    assert "mlservice.yaml" in t9k and "mlserviceruntime.yaml" in t9k
    ray = outputs_of(nb, "--to ray")
    assert "serve_config.yaml" in ray and "serve deploy" in ray
    for part in ("digits-kserve", "digits-t9k", "digits-ray"):
        assert (tmp_path / part / "README.md").is_file()
    assert "--ts-config=" in outputs_of(nb, "kserve.RUNTIME_ARGS")
    assert "the bundle answers like the kernel model" in outputs_of(nb, "bundle vs kernel")
    assert "unregistered" in outputs_of(nb, "%torchserve unregister digits")


def test_lifecycle_notebook(engine: dict, tmp_path: Path) -> None:  # noqa: F811
    nb = execute(NOTEBOOKS / "lifecycle.ipynb", tmp_path)
    kernel = dict(
        re.findall(
            r"(quick|better): kernel accuracy on the held-out rows ([0-9.]+)",
            outputs_of(nb, "def train"),
        )
    )
    assert float(kernel["better"]) > 0.85 > float(kernel["quick"])
    # the served accuracy is the kernel's, to the digit printed, and kernel and served agree
    for cell, model in (("--name digits --format", "quick"), ("--version 2.0", "better")):
        text = outputs_of(nb, cell)
        assert f"served accuracy {kernel[model]}, agreement 100.00%" in text, text
    stored = outputs_of(nb, "customized=True")
    assert re.search(rf"served accuracy {kernel['better'][:5]}\d* on 597 rows", stored), stored
    compared = outputs_of(nb, "%torchserve compare")
    assert "disagreeing rows" in compared and "latency p99 ms" in compared
    (drawn,) = exactly(
        nb, "%torchserve compare digits 1.0 2.0 --x-test X_test --y-test y_test"
    ).outputs[-1:]
    assert "<img" in drawn["data"]["text/html"]  # the disagreeing rows, drawn as 8×8 images
    assert "2.0      canary   20%" in outputs_of(nb, "--percent 20")
    seen = re.search(r"2\.0\s+canary\s+20%\s+(\d+)\s+([0-9.]+)%", outputs_of(nb, "for row in"))
    assert seen and 10 <= float(seen.group(2)) <= 30, outputs_of(nb, "for row in")
    assert "version 2.0 takes all of the default route" in outputs_of(nb, "promote digits 2.0")
    onnx = outputs_of(nb, "--format onnx")
    assert "(onnx)" in onnx and f"served accuracy {kernel['better']}" in onnx
    worker = outputs_of(nb, "/proc/")
    assert "onnxruntime mapped in the worker: True" in worker
    assert "torch mapped in the worker: False" in worker
    assert "unregistered" in outputs_of(nb, "unregister digits_onnx")


def test_scaling_notebook(engine: dict, tmp_path: Path) -> None:  # noqa: F811
    nb = execute(NOTEBOOKS / "scaling.ipynb", tmp_path)
    assert float(re.search(r"accuracy: ([0-9.]+)%", outputs_of(nb, "nn.Flatten")).group(1)) > 80
    bench = outputs_of(nb, "--workers 1,2")
    for workers in ("1", "2"):
        for conc in ("1", "8", "32"):  # a table row per worker count and concurrency
            assert re.search(rf"^\s*{workers}\s+{conc}\s+[0-9.]+", bench, re.M), bench
    needed = outputs_of(nb, "recommended_workers()")
    assert re.search(r"workers needed for p99 within 250 ms at 32 connections: (1|2|None)", needed)
    assert "the fewest whose p99 at 32" in needed or "no worker count tested keeps" in needed
    assert "Workers scaled to 1" in outputs_of(nb, "scale mnist --min 1 --max 3")
    events = outputs_of(nb, 'desc["autoscale"]')
    ups = re.findall(r"^\s*up (\d) -> (\d): .*queued|^\s*up (\d) -> (\d): .*waited", events, re.M)
    assert ups, events  # the step made the autoscaler add at least one worker
    assert int(re.search(r"workers now: (\d)", events).group(1)) >= 2, events
    assert "unregistered" in outputs_of(nb, "%torchserve unregister mnist")
