"""Every bad input of archive() and of archive reading fails with a clear message."""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from jupyter_torchserve.archive import (
    ArchiveError,
    ArchiveWarning,
    CaptureError,
    PreflightError,
    archive,
    extract,
    read_manifest,
)
from jupyter_torchserve.archive.manifest import build_manifest, dumps_manifest

pytestmark = pytest.mark.slow  # starts real processes

MANIFEST = dumps_manifest(build_manifest("m", "model.pt", "jts_tensor.py", model_version="1.0"))


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[bytes, str]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return path


# --- archive() ---------------------------------------------------------------------------
def test_not_a_module(tmp_path):
    with pytest.raises(TypeError, match=r"the model must be a torch.nn.Module, got builtins.dict"):
        archive({"w": 1}, "m", export_path=tmp_path)


@pytest.mark.parametrize("name", ["", "-lead", "has space", "a/b", "ü", ".hidden", "x\n"])
def test_invalid_model_name(tmp_path, name):
    with pytest.raises(ValueError, match=r"invalid model name .*must match \^\[A-Za-z0-9\]"):
        archive(Tiny(), name, export_path=tmp_path)


def test_unknown_handler_lists_builtins(tmp_path):
    with pytest.raises(ValueError) as info:
        archive(Tiny(), "m", handler="image_clasifier", export_path=tmp_path)
    message = str(info.value)
    assert "unknown handler 'image_clasifier'" in message
    for builtin in ("tensor", "image_classifier", "image_segmenter", "object_detector"):
        assert builtin in message
    assert "text_classifier" in message


def test_missing_handler_file(tmp_path):
    with pytest.raises(ValueError, match="handler file .*nope.py does not exist"):
        archive(Tiny(), "m", handler=str(tmp_path / "nope.py"), export_path=tmp_path)


def test_bad_format_names(tmp_path):
    with pytest.raises(ValueError, match="format must be 'auto', 'onnx' or one of export, "):
        archive(Tiny(), "m", format="pickle", export_path=tmp_path)
    with pytest.raises(CaptureError, match="ONNX export needs example_inputs"):
        archive(Tiny(), "m", format="onnx", export_path=tmp_path)
    with pytest.raises(ValueError, match="archive_format must be one of default, tgz, no-archive"):
        archive(Tiny(), "m", archive_format="zip", export_path=tmp_path)


def test_existing_archive_needs_force(tmp_path):
    (tmp_path / "m.mar").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="m.mar already exists; pass force=True"):
        archive(Tiny(), "m", export_path=tmp_path, preflight=False)
    archive(Tiny(), "m", export_path=tmp_path, format="torchscript", force=True, preflight=False)
    assert zipfile.is_zipfile(tmp_path / "m.mar")


class NeedsArg(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_eager_missing_constructor_argument(tmp_path):
    with pytest.raises(CaptureError) as info:
        archive(NeedsArg(3), "m", format="eager", export_path=tmp_path, preflight=False)
    assert "cannot tell the value of constructor argument 'width' of NeedsArg" in str(info.value)
    assert "init_kwargs={'width': ...}" in str(info.value)
    # ...and init_kwargs fixes it
    ok = archive(NeedsArg(3), "m", format="eager", init_kwargs={"width": 3}, export_path=tmp_path)
    assert ok.format == "eager"


def test_eager_container_built_from_positional_children_says_so(tmp_path):
    """nn.Sequential(*layers): the children are the constructor's arguments, which eager
    cannot write down; the error says so and what works instead (auto picks such a format)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    with pytest.raises(CaptureError) as info:
        archive(model, "seq", format="eager", export_path=tmp_path, preflight=False)
    message = str(info.value)
    assert "Sequential takes its submodules as positional arguments (*args)" in message
    assert "format='export'" in message
    assert not (tmp_path / "seq.mar").exists()
    auto = archive(model, "seq", example_inputs=torch.ones(2, 4), export_path=tmp_path)
    assert auto.format in ("export", "torchscript")


def test_init_kwargs_must_match_constructor(tmp_path):
    with pytest.raises(CaptureError, match=r"init_kwargs \['depth'\] are not arguments"):
        archive(NeedsArg(3), "m", format="eager", init_kwargs={"depth": 1}, export_path=tmp_path)


@pytest.mark.parametrize("with_example", [False, True])
def test_wrong_init_kwargs_value_leaves_no_archive(tmp_path, with_example):
    """The rebuild check runs while the weights are written; when it fails, nothing is kept."""
    with pytest.raises(CaptureError) as info:
        archive(
            NeedsArg(3),
            "m",
            format="eager",
            init_kwargs={"width": 5},
            example_inputs=torch.ones(1, 3) if with_example else None,
            export_path=tmp_path,
            preflight=False,
        )
    message = str(info.value)
    assert "eager: " in message
    assert "rebuilt from the captured source" in message and "(1, 5)" in message, message
    assert list(tmp_path.iterdir()) == []


OFFSET = torch.ones(1)


class UsesGlobalTensor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + OFFSET


def test_eager_global_that_is_not_source(tmp_path):
    with pytest.raises(CaptureError) as info:
        archive(UsesGlobalTensor(), "m", format="eager", export_path=tmp_path, preflight=False)
    assert "uses the notebook global 'OFFSET', a Tensor" in str(info.value)


def test_example_inputs_that_break_the_model(tmp_path):
    with pytest.raises(ValueError, match="the model fails on example_inputs: RuntimeError"):
        archive(Tiny(), "m", example_inputs=torch.zeros(1, 5), export_path=tmp_path)


def test_preflight_failure_names_cause_and_leaves_nothing(tmp_path):
    handler = tmp_path / "boom_handler.py"
    handler.write_text(
        "def handle(data, context):\n    raise RuntimeError('boom: this handler never works')\n"
    )
    (tmp_path / "store").mkdir()
    with pytest.raises(PreflightError) as info:
        archive(
            Tiny(),
            "m",
            handler=f"{handler}",
            format="torchscript",
            example_inputs=torch.zeros(1, 2),
            export_path=tmp_path / "store",
        )
    err = info.value
    assert "pre-flight: the archive does not load in a clean process" in str(err)
    assert "RuntimeError: boom: this handler never works" in str(err)
    assert "boom_handler.py" in err.child_traceback
    assert list((tmp_path / "store").iterdir()) == []  # no half-good archive left behind


# --- reading -----------------------------------------------------------------------------
def test_dotdot_member(tmp_path):
    bad = make_zip(
        tmp_path / "a.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "../evil.py": b"x"}
    )
    with pytest.raises(
        ArchiveError, match=r"member '\.\./evil\.py' escapes the archive with '\.\.'"
    ):
        extract(bad, tmp_path / "cache")
    assert not (tmp_path / "evil.py").exists()


def test_absolute_member(tmp_path):
    bad = make_zip(tmp_path / "a.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "/etc/x": b"x"})
    with pytest.raises(ArchiveError, match="member '/etc/x' has an absolute path"):
        extract(bad, tmp_path / "cache")


def test_symlink_in_zip(tmp_path):
    bad = make_zip(
        tmp_path / "a.mar",
        {"MAR-INF/MANIFEST.json": MANIFEST.encode()},
        symlinks={"model.pt": "/etc/passwd"},
    )
    with pytest.raises(ArchiveError, match="member 'model.pt' is a symbolic link"):
        extract(bad, tmp_path / "cache")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_in_tar(tmp_path, kind):
    bad = make_tar(
        tmp_path / "m.tar.gz",
        {"m/MAR-INF/MANIFEST.json": MANIFEST.encode()},
        {"m/model.pt": (kind, "../../../etc/passwd")},
    )
    with pytest.raises(ArchiveError, match="member 'm/model.pt' is a link"):
        extract(bad, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # the temp folder is cleaned up


def test_zip_bomb_member_and_total_limits(tmp_path):
    zeros = b"\0" * (4 << 20)  # deflates to a few KB
    bomb = make_zip(
        tmp_path / "b.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "model.pt": zeros}
    )
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ArchiveError, match="over the 1048576-byte member limit"):
        extract(bomb, tmp_path / "cache", max_member_size=1 << 20)
    with pytest.raises(ArchiveError, match="2097152-byte total limit"):
        extract(bomb, tmp_path / "cache", max_total_size=2 << 20, max_member_size=8 << 20)
    model_dir, _ = extract(bomb, tmp_path / "cache")  # the default 4 GiB limit lets it in
    assert os.path.getsize(os.path.join(model_dir, "model.pt")) == len(zeros)


def test_lying_zip_header_is_caught_while_writing(tmp_path):
    """A member whose header claims a small size but inflates larger is stopped too."""
    path = make_zip(
        tmp_path / "l.mar",
        {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "model.pt": b"\0" * 3_000_000},
    )
    raw = bytearray(path.read_bytes())
    # Patch the declared uncompressed size (local header and central directory) to 10 bytes.
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (i := raw.find(sig, start)) >= 0:
            name_len_off = 26 if sig == b"PK\x03\x04" else 28
            n = int.from_bytes(raw[i + name_len_off : i + name_len_off + 2], "little")
            name_start = i + (30 if sig == b"PK\x03\x04" else 46)
            if raw[name_start : name_start + n] == b"model.pt":
                raw[i + off : i + off + 4] = (10).to_bytes(4, "little")
            start = i + 4
    path.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="limit|corrupt"):
        extract(path, tmp_path / "cache", max_member_size=1 << 20)


@pytest.mark.parametrize("content", [b"", b"not an archive at all", b"PK\x03\x04broken"])
def test_corrupt_archive(tmp_path, content):
    path = tmp_path / "c.mar"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match="not a model archive|corrupt"):
        extract(path, tmp_path / "cache")
    with pytest.raises(ArchiveError):
        read_manifest(path)


def test_truncated_archive(tmp_path):
    good = make_zip(
        tmp_path / "g.mar",
        {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "model.pt": os.urandom(5000)},
    )
    truncated = tmp_path / "t.mar"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(ArchiveError, match="not a model archive|corrupt"):
        extract(truncated, tmp_path / "cache")


def test_missing_serialized_file(tmp_path):
    path = make_zip(tmp_path / "m.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode()})
    with pytest.raises(
        ArchiveError, match="serializedFile 'model.pt' named in the manifest is missing"
    ):
        extract(path, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_missing_manifest(tmp_path):
    path = make_zip(tmp_path / "m.mar", {"model.pt": b"x"})
    with pytest.raises(ArchiveError, match="archive has no MAR-INF/MANIFEST.json"):
        extract(path, tmp_path / "cache")
    with pytest.raises(ArchiveError, match="archive has no MAR-INF/MANIFEST.json"):
        read_manifest(path)


def test_manifest_without_handler(tmp_path):
    manifest = json.dumps(
        {"runtime": "python", "model": {"modelName": "m"}, "archiverVersion": "0.12.0"}
    )
    path = make_zip(tmp_path / "m.mar", {"MAR-INF/MANIFEST.json": manifest.encode()})
    with pytest.raises(ArchiveError, match="lacks model.handler"):
        read_manifest(path)


def test_unknown_archiver_version_warns_and_loads(tmp_path):
    manifest = json.loads(MANIFEST)
    manifest["archiverVersion"] = "7.3.0"
    path = make_zip(
        tmp_path / "m.mar",
        {"MAR-INF/MANIFEST.json": json.dumps(manifest).encode(), "model.pt": b"weights"},
    )
    with pytest.warns(ArchiveWarning, match=r"unknown archiver version '7.3.0'.*loading it anyway"):
        model_dir, read = extract(path, tmp_path / "cache")
    assert read["archiverVersion"] == "7.3.0"
    assert Path(model_dir, "model.pt").read_bytes() == b"weights"


def test_extract_once_into_content_hash(tmp_path):
    path = make_zip(
        tmp_path / "m.mar", {"MAR-INF/MANIFEST.json": MANIFEST.encode(), "model.pt": b"w"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known archiver version does not warn
        first, manifest = extract(path, tmp_path / "cache")
    marker = Path(first, "marker")
    marker.write_text("still here")
    copy = tmp_path / "copy.mar"
    copy.write_bytes(path.read_bytes())
    second, _ = extract(copy, tmp_path / "cache")  # same bytes: same folder, not re-extracted
    assert second == first and marker.read_text() == "still here"
    assert len(Path(first).name) == 64 and manifest["model"]["modelName"] == "m"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(first).name]
