"""The sidebar's view of the model store: which entries it offers to register, and the sample
request it finds for each, in every archive layout the engine loads (a `.mar` zip, a
torch-model-archiver `.tar.gz` holding `<name>/`, and a directory archive)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

from jupyter_torchserve.serverext import store

MANIFEST = {"runtime": "python", "model": {"modelName": "m", "handler": "h.py"}}
SAMPLE = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


def members(sample: str | None = "sample_input.json") -> dict[str, bytes]:
    out = {
        "MAR-INF/MANIFEST.json": json.dumps(MANIFEST).encode(),
        "MAR-INF/jupyter_torchserve.json": json.dumps({"sample_input": sample}).encode(),
        "h.py": b"def handle(data, context):\n    return data\n",
    }
    if sample:
        out[sample] = json.dumps(SAMPLE).encode()
    return out


def write_zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)


def write_tgz(path: Path, top: str, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_dir(path: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)


def test_lists_what_the_engine_can_register(tmp_path: Path) -> None:
    write_zip(tmp_path / "a.mar", members())
    write_tgz(tmp_path / "b.tar.gz", "b", members())
    write_dir(tmp_path / "c", members())
    write_zip(tmp_path / "d.zip", members())
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.example.png").write_bytes(b"\x89PNG")
    (tmp_path / "plain").mkdir()  # a folder without MAR-INF/MANIFEST.json
    listed = store.archives(str(tmp_path))
    assert [a["url"] for a in listed] == ["a.mar", "b.tar.gz", "c", "d.zip"]
    assert listed[0]["size"] == (tmp_path / "a.mar").stat().st_size
    assert store.archives(None) == [] and store.archives(str(tmp_path / "nope")) == []


def test_sample_is_read_from_every_archive_layout(tmp_path: Path) -> None:
    write_zip(tmp_path / "a.mar", members())
    write_tgz(tmp_path / "b.tar.gz", "b", members())
    write_dir(tmp_path / "c", members("data/sample.json"))
    for url in ("a.mar", "b.tar.gz", "c"):
        sample = store.sample_input(str(tmp_path), url)
        assert sample is not None, url
        body, ctype, protocol = sample
        assert (json.loads(body), ctype, protocol) == (SAMPLE, "application/json", "v2"), url


def test_deploys_example_comes_first(tmp_path: Path) -> None:
    """`deploy()` writes the body its parity check sent beside the archive: that is the
    sample, for /predictions, whatever the archive stores."""
    write_tgz(tmp_path / "m-1.0.tar.gz", "m", members())
    (tmp_path / "m-1.0.example.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    assert store.sample_input(str(tmp_path), "m-1.0.tar.gz") == (
        b"\x89PNG\r\n\x1a\nxx",
        "image/png",
        "predictions",
    )


def test_no_sample_and_no_escape(tmp_path: Path) -> None:
    write_zip(tmp_path / "none.mar", members(sample=None))
    (tmp_path / "secret.json").write_text("{}")
    write_dir(tmp_path / "evil", {**members(), "MAR-INF/jupyter_torchserve.json": b""})
    (tmp_path / "evil" / "MAR-INF" / "jupyter_torchserve.json").write_text(
        json.dumps({"sample_input": "../secret.json"})
    )
    write_zip(tmp_path / "broken.mar", {"MAR-INF/MANIFEST.json": b"{}"})
    (tmp_path / "corrupt.mar").write_bytes(b"PK\x03\x04 not a zip")
    for url in ("none.mar", "evil", "broken.mar", "corrupt.mar", "missing.mar"):
        assert store.sample_input(str(tmp_path), url) is None, url
    # model URLs that are not a file of the store itself
    for url in ("", "../secret.json", "sub/a.mar", ".hidden"):
        assert store.sample_input(str(tmp_path), url) is None, url
