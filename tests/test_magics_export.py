"""`%torchserve export` in an in-process IPython shell (fast: a `.mar` on disk, no engine):
the same bundle as `export()`, its files as the cell's result, and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from _engine_helpers import linear_mar
from IPython.core.error import UsageError

from jupyter_torchserve.api import EngineUnavailable, TorchServeError
from jupyter_torchserve.export import Bundle


@pytest.fixture(scope="module")
def ip() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_torchserve")
    return shell


@pytest.fixture()
def mar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # no engine of anyone else's is found: the runtime dir is this test's own
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    store = tmp_path / "store"
    store.mkdir()
    return linear_mar(store, "lin", "1.0")


def magic(ip: Any, line: str) -> Any:
    return ip.run_cell(line, store_history=False)


def test_export_help_names_every_option(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert magic(ip, "%torchserve --help").success
    assert "export" in capsys.readouterr().out
    assert magic(ip, "%torchserve export --help").success
    out = capsys.readouterr().out
    for option in ("--to", "--version", "--out", "--protocol", "--gpu", "--min-replicas",
                   "--max-replicas", "--run", "kserve,t9k,ray,torchserve"):  # fmt: skip
        assert option in out


def test_magic_writes_the_bundle_and_returns_it(ip: Any, mar: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    res = magic(
        ip,
        f"%torchserve export {mar} --to kserve --out {out} --protocol v2 --gpu 1 "
        "--min-replicas 1 --max-replicas 3",
    )
    assert res.success, res.error_in_exec
    bundle = res.result
    assert isinstance(bundle, Bundle) and bundle.out == out and bundle.versions == ["1.0"]
    assert all(p.is_file() for p in bundle.paths())
    assert Path("model-store/lin.mar") in bundle.files
    isvc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    # the cell's output: every file and the next commands
    text = str(bundle)
    assert "inferenceservice.yaml" in text and "kubectl apply" in text


@pytest.mark.parametrize(
    "line, error, needle",
    [
        ("%torchserve export {mar} --to sagemaker", UsageError, "invalid choice: 'sagemaker'"),
        (
            "%torchserve export {mar} --to kserve --run",
            TorchServeError,
            "--run is for --to ray only",
        ),
        ("%torchserve export {mar} --gpu two", UsageError, "invalid int value"),
        ("%torchserve export {mar} --protocol v3", UsageError, "invalid choice: 'v3'"),
        (
            "%torchserve export {mar} --min-replicas 3 --max-replicas 1",
            TorchServeError,
            "max_replicas (1) is less than min_replicas (3)",
        ),  # fmt: skip
        ("%torchserve export {mar} --version 2.0", TorchServeError, "holds version 1.0"),
        ("%torchserve export nosuchmodel --to t9k", EngineUnavailable, "%torchserve start"),
    ],
)
def test_bad_exports_are_one_line_errors(
    ip: Any,
    mar: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    error: type,
    needle: str,
) -> None:
    out = tmp_path / "never"
    res = magic(ip, line.format(mar=mar) + f" --out {out}")
    assert isinstance(res.error_in_exec, error), res.error_in_exec
    captured = capsys.readouterr()
    text = str(res.error_in_exec) + captured.out + captured.err
    assert needle in text and "Traceback" not in text
    assert not out.exists()  # refused before anything was written


def test_a_non_empty_out_needs_force(ip: Any, mar: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert magic(ip, f"%torchserve export {mar} --to torchserve --out {out}").success
    res = magic(ip, f"%torchserve export {mar} --to torchserve --out {out}")
    assert isinstance(res.error_in_exec, TorchServeError) and "--force" in str(res.error_in_exec)
    assert magic(ip, f"%torchserve export {mar} --to torchserve --out {out} --force").success
