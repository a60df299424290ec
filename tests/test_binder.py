"""Issue 4: `binder/` holds what mybinder needs, so JupyterLab opens with the sidebar, the
server extension and the %torchserve magic enabled.

mybinder itself cannot be reached from here; ``scripts/binder-check.sh`` rehearses what
repo2docker does with ``binder/`` (requirements, then ``postBuild`` from a copy of the
repository) in a fresh venv and a fresh ``$HOME``, then reads what Jupyter and IPython report.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts real processes

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(1200)
@pytest.mark.skipif(shutil.which("node") is None, reason="postBuild builds the sidebar with node")
def test_binder_postbuild_enables_sidebar_server_extension_and_magic(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "binder-check.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1150,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    labext = (tmp_path / "labextensions.txt").read_text()
    assert "jupyter-torchserve" in labext and "OK" in labext, labext
    assert "jupyter_torchserve" in (tmp_path / "serverextensions.txt").read_text()
    ipy = (tmp_path / "ipython.txt").read_text()
    assert "'jupyter_torchserve'" in ipy and "usage: %torchserve" in ipy, ipy
