"""`jupyter-torchserve export` as a user runs it: a subprocess that finds the engine the way
`status` does (the discovery files of JUPYTER_RUNTIME_DIR), or reads a `.mar`, and says what
went wrong in one line on stderr with exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _engine_helpers import linear_mar, running_engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture()
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The engine a test starts announces itself here, and the CLI looks only here."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    return {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}


def cli(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_torchserve", "export", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_export_a_served_model_from_the_command_line(
    runtime: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    linear_mar(store, "lin", "1.0", seed=1)
    linear_mar(store, "lin", "2.0", seed=2)
    with running_engine(tmp_path, model_store=str(store)) as (_, client):
        client.register("lin-1.0.mar", initial_workers=1)
        client.register("lin-2.0.mar", initial_workers=1)
        client.set_default("lin", "2.0")
        done = cli(
            runtime, tmp_path, "lin", "--to", "t9k", "--min-replicas", "1", "--max-replicas=3"
        )
        assert done.returncode == 0, done.stderr
        missing = cli(runtime, tmp_path, "nope", "--to", "kserve")
    # the default out is ./NAME-TO, and the output lists the files and the next commands
    assert f"Exported lin (2.0, 1.0) for t9k to {tmp_path / 'lin-t9k'}" in done.stdout
    assert "mlservice.yaml" in done.stdout and "kubectl apply" in done.stdout
    service = yaml.safe_load((tmp_path / "lin-t9k" / "mlservice.yaml").read_text())
    assert service["spec"]["default"] == "v2-0"
    release = service["spec"]["releases"][0]
    assert (release["predictor"]["minReplicas"], release["predictor"]["maxReplicas"]) == (1, 3)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "ModelNotFoundException" in missing.stderr and "nope" in missing.stderr
    assert not (tmp_path / "nope-kserve").exists()


def test_export_a_mar_and_bad_options(runtime: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    mar = linear_mar(store, "lin", "1.0")
    done = cli(runtime, tmp_path, str(mar), "--to=kserve", "--protocol=v2", "--out=b")
    assert done.returncode == 0, done.stderr
    isvc = yaml.safe_load((tmp_path / "b" / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["protocolVersion"] == "v2"
    assert (tmp_path / "b" / "model-store" / "lin.mar").read_bytes() == mar.read_bytes()
    for argv, needle in [
        (["--to=sagemaker"], "to must be one of kserve, t9k, ray, torchserve"),
        (["--to=kserve", "--run"], "--run is for --to ray only"),
        (["--to=kserve", "--out=b"], "is not empty; pass force=True (--force)"),
        (["--version=9.0"], "holds version 1.0 of lin, not 9.0"),
    ]:
        bad = cli(runtime, tmp_path, str(mar), *argv)
        assert bad.returncode == 1, (argv, bad.stdout)
        assert needle in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    nothing = cli(runtime, tmp_path, "lin")  # a name, and no engine is running
    assert nothing.returncode == 1 and "No jupyter_torchserve engine is running" in nothing.stderr
