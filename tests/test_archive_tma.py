"""Compatibility with torch-model-archiver 0.12: its archives extract and load, ours match its manifest.

Needs the ``torch-model-archiver==0.12.0`` test dependency; skipped with a reason without it.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from _archive_helpers import load_in_fresh_process, save_inputs

from jupyter_torchserve.archive import archive, extract, read_manifest

pytestmark = pytest.mark.slow  # starts real processes

model_archiver = pytest.importorskip(
    "model_archiver", reason="torch-model-archiver==0.12.0 is not installed (test extra)"
)
from model_archiver.manifest_components.manifest import Manifest  # noqa: E402
from model_archiver.manifest_components.model import Model  # noqa: E402
from model_archiver.model_archiver_config import ModelArchiverConfig  # noqa: E402
from model_archiver.model_packaging import package_model  # noqa: E402
from model_archiver.model_packaging_utils import ModelExportUtils  # noqa: E402

MODEL_FILE = """
import torch
from torch import nn


class MNISTish(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))
"""

HANDLER_FILE = """
from ts.torch_handler.base_handler import BaseHandler


class MyHandler(BaseHandler):
    pass
"""


def tma_archive(tmp_path: Path, archive_format: str, *, eager: bool) -> Path:
    """Build an archive with torch-model-archiver's own packaging code."""
    src = tmp_path / f"src-{archive_format}-{eager}"
    src.mkdir()
    torch.manual_seed(1)
    (src / "model.py").write_text(MODEL_FILE)
    (src / "my_handler.py").write_text(HANDLER_FILE)
    (src / "index_to_name.json").write_text(json.dumps({"0": "zero"}))
    namespace: dict = {}
    exec(MODEL_FILE, namespace)
    net = namespace["MNISTish"]()
    if eager:
        torch.save(net.state_dict(), src / "weights.pt")
        serialized = src / "weights.pt"
    else:
        torch.jit.save(torch.jit.trace(net, torch.randn(1, 16)), src / "scripted.pt")
        serialized = src / "scripted.pt"
    out = tmp_path / f"out-{archive_format}-{eager}"
    out.mkdir()
    config = ModelArchiverConfig(
        model_name="mnistish",
        handler=str(src / "my_handler.py"),
        serialized_file=str(serialized),
        model_file=str(src / "model.py") if eager else None,
        version="2.1",
        export_path=str(out),
        extra_files=str(src / "index_to_name.json"),
        archive_format=archive_format,
        force=True,
        runtime="python",
    )
    manifest = ModelExportUtils.generate_manifest_json(config)
    package_model(config, manifest=manifest)
    produced = ModelExportUtils.get_archive_export_path(str(out), "mnistish", archive_format)
    return Path(produced), net


@pytest.mark.parametrize(
    ("archive_format", "eager"),
    [("default", True), ("tgz", True), ("no-archive", True), ("default", False)],
)
def test_tma_archives_extract_and_load(tmp_path, archive_format, eager):
    path, net = tma_archive(tmp_path, archive_format, eager=eager)
    manifest = read_manifest(path)
    assert manifest["archiverVersion"] == "0.12.0"
    assert manifest["model"]["handler"] == "my_handler.py"
    model_dir, extracted_manifest = extract(path, tmp_path / "cache")
    assert extracted_manifest == manifest
    assert (Path(model_dir) / "index_to_name.json").is_file()
    # TorchServe layouts without our metadata: jts_model_loader must load them as TorchServe does.
    loader = (
        Path(__file__).resolve().parents[1]
        / "jupyter_torchserve/handlers/builtin/jts_model_loader.py"
    )
    (Path(model_dir) / "jts_model_loader.py").write_bytes(loader.read_bytes())
    x = torch.randn(3, 16)
    with torch.no_grad():
        expected = net(x)
    [got] = load_in_fresh_process([model_dir], save_inputs(tmp_path / "x.pt", x))
    assert torch.allclose(torch.tensor(got), expected, atol=1e-6)


def _our_archive(tmp_path: Path, **kwargs) -> tuple[Path, dict]:
    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.l(x)

    result = archive(
        Small(),
        "ours",
        version="3.0",
        format="torchscript",
        export_path=tmp_path,
        preflight=False,
        **kwargs,
    )
    return result.path, result.manifest


def test_our_manifest_is_what_torch_model_archiver_writes(tmp_path):
    path, ours = _our_archive(tmp_path, requirements=["pillow"])
    with zipfile.ZipFile(path) as zf:
        text = zf.read("MAR-INF/MANIFEST.json").decode()
        assert zf.getinfo("MAR-INF/MANIFEST.json").compress_type == zipfile.ZIP_DEFLATED
        assert all("/" not in n or n.startswith("MAR-INF/") for n in zf.namelist())  # flat root
    m = ours["model"]
    # Rebuild the manifest with torch-model-archiver's own classes from our fields.
    theirs = Manifest(
        runtime=ours["runtime"],
        model=Model(
            model_name=m["modelName"],
            serialized_file=m["serializedFile"],
            handler=m["handler"],
            model_file=m.get("modelFile"),
            model_version=m["modelVersion"],
            requirements_file=m.get("requirementsFile"),
        ),
    )
    expected = json.loads(str(theirs))
    expected["createdOn"] = ours["createdOn"]
    assert json.loads(text) == expected
    assert list(json.loads(text)) == list(expected)  # same key order
    assert list(json.loads(text)["model"]) == list(expected["model"])
    assert text == json.dumps(expected, indent=2)  # byte-for-byte the same layout
    assert m == {
        "modelName": "ours",
        "serializedFile": "model.pt",
        "handler": "jts_tensor.py",
        "modelVersion": "3.0",
        "requirementsFile": "requirements.txt",
    }


def test_our_tgz_and_directory_layouts_match(tmp_path):
    path, _ = _our_archive(tmp_path, archive_format="tgz")
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert all(n.startswith("ours/") for n in names)
    assert "ours/MAR-INF/MANIFEST.json" in names and "ours/model.pt" in names
    folder, _ = _our_archive(tmp_path, archive_format="no-archive")
    assert folder == tmp_path / "ours" and (folder / "MAR-INF" / "MANIFEST.json").is_file()
