"""Round trips: a model whose classes live in an IPython ``__main__`` -> archive -> fresh process."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from _archive_helpers import (
    NOTEBOOK_CELL,
    ipython_shell,
    load_in_fresh_process,
    run_cell,
    save_inputs,
)

from jupyter_torchserve.archive import CaptureError, archive, extract

pytestmark = pytest.mark.slow  # starts real processes


@pytest.fixture(scope="module")
def notebook():
    """The IPython user namespace after running the notebook cell (restores ``__main__``)."""
    original_main = sys.modules["__main__"]
    shell = ipython_shell()
    run_cell(shell, NOTEBOOK_CELL)
    assert shell.user_ns["Net"].__module__ == "__main__"
    assert not hasattr(sys.modules["__main__"], "__file__")  # like a Jupyter kernel
    yield shell.user_ns
    sys.modules["__main__"] = original_main


@pytest.fixture(scope="module")
def archives(notebook, tmp_path_factory):
    """One archive per forced format, each pre-flighted in a spawned process."""
    out = tmp_path_factory.mktemp("store")
    model, x = notebook["model"], notebook["x"]
    model.train()  # archive must capture eval mode and give the training flag back
    results = {
        fmt: archive(model, f"net-{fmt}", example_inputs=x, format=fmt, export_path=out)
        for fmt in ("export", "torchscript", "eager")
    }
    assert model.training
    return out, results


@pytest.mark.parametrize("fmt", ["export", "torchscript", "eager"])
def test_forced_format_preflights(archives, fmt):
    out, results = archives
    result = results[fmt]
    assert result.format == fmt
    assert result.path == out / f"net-{fmt}.mar"
    assert result.preflight and result.max_abs_diff is not None and result.max_abs_diff < 1e-5
    assert result.schema == {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 3]}],
    }
    with zipfile.ZipFile(result.path) as zf:
        meta = json.loads(zf.read("MAR-INF/jupyter_torchserve.json"))
        names = zf.namelist()
    assert meta["format"] == fmt
    assert meta["builtin_handler"] == "tensor"
    assert meta["torch_version"] == torch.__version__.split("+")[0]
    assert meta["format_attempts"] == [{"format": fmt, "ok": True, "error": None}]
    assert {"jts_base.py", "jts_model_loader.py", "jts_tensor.py", "sample_input.json"} <= set(
        names
    )
    assert names[-1] == "MAR-INF/MANIFEST.json"  # written last, like torch-model-archiver


def test_eager_archive_carries_captured_source(archives):
    _, results = archives
    with zipfile.ZipFile(results["eager"].path) as zf:
        source = zf.read("model.py").decode()
        meta = json.loads(zf.read("MAR-INF/jupyter_torchserve.json"))
        manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
    assert meta["eager"] == {"module": "model", "class": "Net", "init_kwargs": {"hidden": 8}}
    assert manifest["model"]["modelFile"] == "model.py"
    assert manifest["model"]["serializedFile"] == "weights.pt"
    for needed in ("class Net(nn.Module)", "class Block(nn.Module)", "def helper(x)"):
        assert needed in source
    assert "SCALE = 2.0" in source and "import torch.nn.functional as F" in source
    assert "model = Net(8)" not in source  # only definitions, never notebook statements
    assert source.index("class Block") < source.index("class Net")


def test_all_formats_load_in_a_fresh_interpreter(archives, notebook, tmp_path):
    out, results = archives
    x = torch.randn(5, 4)  # another batch size than the example
    with torch.no_grad():
        expected = notebook["model"].eval()(x)
    dirs = [extract(results[f].path, tmp_path / "cache")[0] for f in results]
    outputs = load_in_fresh_process(dirs, save_inputs(tmp_path / "x.pt", x))
    for fmt, got in zip(results, outputs, strict=True):
        assert torch.allclose(torch.tensor(got), expected, atol=1e-5), fmt


def test_auto_reports_why_export_failed(notebook, tmp_path):
    branchy = notebook["Branchy"](8)
    result = archive(
        branchy,
        "auto",
        example_inputs=notebook["x"],
        export_path=tmp_path,
        preflight=False,
    )
    assert result.format == "torchscript"
    first = result.attempts[0]
    assert first.format == "export" and not first.ok
    assert "if x.sum() > 1e9" in first.error  # the line that stopped torch.export
    assert result.attempts[1].ok


def test_no_format_captures_lists_every_attempt(tmp_path):
    run_cell(
        ipython_shell(),
        """
        class Unsaveable(torch.nn.Module):
            def __init__(self, n):
                super().__init__()
                self.lin = torch.nn.Linear(n, n)

            def forward(self, *xs, **options):
                return self.lin(xs[0])
        bad = Unsaveable(3)
        """,
    )
    bad = ipython_shell().user_ns["bad"]
    with pytest.raises(CaptureError) as info:
        archive(bad, "bad", export_path=tmp_path, preflight=False)
    message = str(info.value)
    assert "no format could capture Unsaveable" in message
    assert "export: torch.export needs example_inputs" in message
    assert "torchscript: script failed" in message and "trace needs example_inputs" in message
    assert "eager: ValueError: eager: cannot tell the value of constructor argument 'n'" in message
    assert not list(tmp_path.iterdir())


def test_init_kwargs_and_tgz_and_directory_formats(notebook, tmp_path):
    run_cell(
        ipython_shell(),
        """
        class Scaled(torch.nn.Module):
            def __init__(self, n, factor=1.0):
                super().__init__()
                self.lin = torch.nn.Linear(n, 2)
                self.f = factor

            def forward(self, x):
                return self.lin(x) * self.f
        scaled = Scaled(4, factor=3.0)
        """,
    )
    scaled = ipython_shell().user_ns["Scaled"](4, factor=3.0)
    x = torch.randn(2, 4)
    tgz = archive(
        scaled,
        "scaled",
        example_inputs=x,
        format="eager",
        archive_format="tgz",
        init_kwargs={"n": 4, "factor": 3.0},
        export_path=tmp_path,
        preflight=False,
    )
    assert tgz.path == tmp_path / "scaled.tar.gz"
    folder = archive(
        scaled,
        "scaled",
        example_inputs=x,
        format="eager",
        archive_format="no-archive",
        init_kwargs={"n": 4, "factor": 3.0},
        export_path=tmp_path,
        preflight=False,
    )
    assert (folder.path / "MAR-INF" / "MANIFEST.json").is_file()
    with torch.no_grad():
        expected = scaled(x)
    dirs = [extract(tgz.path, tmp_path / "cache")[0], extract(folder.path, tmp_path / "c")[0]]
    assert Path(dirs[0]).name == "scaled"  # the tgz holds scaled/
    for got in load_in_fresh_process(dirs, save_inputs(tmp_path / "x.pt", x)):
        assert torch.allclose(torch.tensor(got), expected, atol=1e-6)


def test_script_calling_archive_at_top_level(tmp_path):
    """A plain script (``__main__`` is a file, no ``if __name__`` guard) pre-flights fine:
    the spawned child must not re-run the script."""
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\n"
        "from jupyter_torchserve.archive import archive\n"
        "class Lin(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.l = torch.nn.Linear(3, 1)\n"
        "    def forward(self, x):\n"
        "        return self.l(x)\n"
        "r = archive(Lin(), 'lin', example_inputs=torch.ones(2, 3), format='eager',\n"
        f"            export_path={str(tmp_path)!r})\n"
        "print('DONE', r.format, r.max_abs_diff)\n"
    )
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("DONE") == 1 and "DONE eager 0.0" in proc.stdout
    with zipfile.ZipFile(tmp_path / "lin.mar") as zf:
        assert "class Lin(torch.nn.Module)" in zf.read("model.py").decode()


class Wide(torch.nn.Module):
    def __init__(self, width: int = 1024) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


def test_streamed_weights_have_a_valid_crc_and_corruption_is_caught(tmp_path):
    """The weights member's CRC-32 (ISA-L's when python-isal is there) is the one zlib
    computes: zipfile's own check passes, a flipped byte is refused on extraction, and
    zipfile is left with its own crc32."""
    import zlib

    import isal  # noqa: F401 - a dependency: this checks the fast path, not the fallback

    torch.manual_seed(0)
    model = Wide()  # 4 MB of weights: streamed into the zip, not buffered
    result = archive(model, "big", format="eager", export_path=tmp_path, preflight=False)
    assert zipfile.crc32 is zlib.crc32  # type: ignore[attr-defined]
    with zipfile.ZipFile(result.path) as zf:
        assert zf.testzip() is None
        info = zf.getinfo("weights.pt")
        assert info.compress_type == zipfile.ZIP_STORED
        assert zf.read("weights.pt") and zlib.crc32(zf.read("weights.pt")) == info.CRC
    data = bytearray(result.path.read_bytes())
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 2_000_000
    data[offset] ^= 0xFF
    bad = tmp_path / "bad.mar"
    bad.write_bytes(bytes(data))
    with pytest.raises(Exception, match="(?i)crc"):
        extract(bad, tmp_path / "cache")
    assert zipfile.crc32 is zlib.crc32  # type: ignore[attr-defined]
