"""The committed notebooks' saved outputs name no machine: no run's temporary folder, no
absolute path to a virtual environment (scripts/scrub_notebook_outputs.py takes them out)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _scrubber():
    spec = importlib.util.spec_from_file_location(
        "scrub_notebook_outputs", ROOT / "scripts" / "scrub_notebook_outputs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scrubber_takes_out_run_folders_and_venv_pythons() -> None:
    scrub = _scrubber().scrub_text
    assert scrub("archive /tmp/nbrun/data/torchserve/model-store/m.mar") == (
        "archive $TMPDIR/run/data/torchserve/model-store/m.mar"
    )
    assert scrub("$(/work/main/.venv/bin/python -m jupyter_torchserve token)") == (
        "$(.venv/bin/python -m jupyter_torchserve token)"
    )
    assert scrub("http://127.0.0.1:8080/predictions/mnist") == (
        "http://127.0.0.1:8080/predictions/mnist"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_outputs_name_no_machine(path: Path) -> None:
    scrub = _scrubber().scrub_text
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        text = json.dumps(cell.get("outputs", []))
        assert scrub(text) == text, (
            f"{path.name} cell {i} names this machine: "
            "python scripts/scrub_notebook_outputs.py notebooks/*.ipynb"
        )
