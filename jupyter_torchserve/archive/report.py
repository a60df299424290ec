"""A version's evaluation report inside its archive: ``MAR-INF/jupyter_torchserve.json``'s
``evaluation`` key (docs/architecture.md §1).

Why in the archive: the archive is what travels (an export, another TorchServe, a later
session's register), while a file beside it in the store stays behind. Why written after
registering: the report is made of the served answers, so it exists only once the archive
serves. Rewriting the store's file is safe then: the engine serves its own unpacked copy
(keyed by the archive's hash at register time), so the running version is not touched, and
a worker started from the rewritten archive (a restart, TorchServe) reads the report from
its metadata. The rewrite is atomic (a new file beside the old, then ``os.replace``).

No torch here: the engine reads reports with :func:`evaluation_of`.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .errors import ArchiveError
from .manifest import METADATA_PATH
from .reader import read_member

#: The metadata key that holds the report.
EVALUATION_KEY = "evaluation"


def evaluation_of(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The report stored in the archive at ``path`` (None: it has none, or is unreadable)."""
    try:
        meta = json.loads(read_member(path, METADATA_PATH))
    except (ArchiveError, OSError, ValueError):
        return None
    report = meta.get(EVALUATION_KEY) if isinstance(meta, dict) else None
    return report if isinstance(report, dict) else None


def evaluation_in_store(store: str | os.PathLike[str], model_url: str) -> dict[str, Any] | None:
    """The report of a registered version whose ``modelUrl`` names a file of the store
    (a URL or a path elsewhere has none to read here)."""
    if not model_url or "/" in model_url or model_url.startswith("."):
        return None
    return evaluation_of(Path(store) / model_url)


def store_evaluation(path: str | os.PathLike[str], report: dict[str, Any]) -> None:
    """Put ``report`` under the metadata's ``evaluation`` key of the archive at ``path``
    (a ``.mar``/``.zip``, a ``.tar.gz`` or a directory archive); raises ArchiveError when
    the archive cannot be rewritten."""
    p = Path(path)
    try:
        if p.is_dir():
            _rewrite_dir(p, report)
        elif p.name.endswith((".tar.gz", ".tgz")):
            _rewrite_tar(p, report)
        else:
            _rewrite_zip(p, report)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, ValueError) as exc:
        raise ArchiveError(f"{p}: the evaluation report could not be stored: {exc}") from exc


def _with_report(raw: bytes | None, report: dict[str, Any]) -> bytes:
    meta = json.loads(raw) if raw else {}
    if not isinstance(meta, dict):
        raise ValueError(f"{METADATA_PATH} is not a JSON object")
    meta[EVALUATION_KEY] = report
    return json.dumps(meta, indent=1).encode()


def _replace(path: Path, write: Any) -> None:
    """Write a new file beside ``path`` with ``write(file)``, then swap it in."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rewrite_dir(root: Path, report: dict[str, Any]) -> None:
    meta = root / METADATA_PATH
    data = _with_report(meta.read_bytes() if meta.is_file() else None, report)
    if meta.is_file():
        _replace(meta, lambda out: out.write(data))
    else:
        meta.write_bytes(data)


def _rewrite_zip(path: Path, report: dict[str, Any]) -> None:
    with zipfile.ZipFile(path) as src:
        names = src.namelist()
        raw = src.read(METADATA_PATH) if METADATA_PATH in names else None
        data = _with_report(raw, report)

        def write(out: Any) -> None:
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
                for info in src.infolist():
                    if info.filename != METADATA_PATH:
                        dst.writestr(info, src.read(info))
                dst.writestr(METADATA_PATH, data)

        _replace(path, write)


def _rewrite_tar(path: Path, report: dict[str, Any]) -> None:
    with tarfile.open(path, "r:gz") as src:
        members = src.getmembers()
        meta = next((m for m in members if m.name.endswith(METADATA_PATH) and m.isfile()), None)
        if meta is None:
            raise ValueError(f"no {METADATA_PATH} in the archive")
        handle = src.extractfile(meta)
        data = _with_report(handle.read() if handle else None, report)

        def write(out: Any) -> None:
            with tarfile.open(fileobj=out, mode="w:gz") as dst:
                for m in members:
                    if m is meta:
                        info = tarfile.TarInfo(m.name)
                        info.size, info.mode, info.mtime = len(data), m.mode, m.mtime
                        dst.addfile(info, io.BytesIO(data))
                    else:
                        dst.addfile(m, src.extractfile(m) if m.isfile() else None)

        _replace(path, write)
