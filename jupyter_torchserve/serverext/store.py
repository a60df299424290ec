"""What the sidebar reads from the model store on this machine: the archives `register` can
take by file name, and a ready-to-send sample request for each.

"Is this an archive?" and "read one file of it" are `archive.reader`'s answers, the engine's
own, so the Register list offers exactly what the engine loads, and a sample is found in a
`.tar.gz` or a directory archive as well as in a `.mar`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyter_torchserve.archive.errors import ArchiveError
from jupyter_torchserve.archive.manifest import METADATA_PATH
from jupyter_torchserve.archive.reader import archive_stem, is_archive, read_member
from jupyter_torchserve.archive.report import evaluation_in_store

#: Request bodies `deploy()` writes next to an archive (`{stem}.example.*`).
EXAMPLE_TYPES = (
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".json", "application/json"),
    (".txt", "text/plain"),
)


def archives(store: str | None) -> list[dict[str, Any]]:
    """`[{url, size, modified}]` for each archive in the store, by name."""
    if not store or not Path(store).is_dir():
        return []
    out = []
    for entry in sorted(Path(store).iterdir()):
        if is_archive(entry):
            stat = entry.stat()
            out.append({"url": entry.name, "size": stat.st_size, "modified": stat.st_mtime})
    return out


def sample_input(store: str | None, model_url: str) -> tuple[bytes, str, str] | None:
    """A sample request for the model in `model_url`: `(body, content type, protocol)`.

    First the example `deploy()` wrote next to the archive (`{stem}.example.png|json|txt`,
    the very body its parity check sent to `/predictions`; protocol `"predictions"`), else
    the archive's stored sample input (named in our `MAR-INF/jupyter_torchserve.json`), which
    is a KServe v2 request document (protocol `"v2"`). `model_url` must name a file of the
    store itself, as a registered model's `modelUrl` does.
    """
    if not store or not model_url or "/" in model_url or model_url.startswith("."):
        return None
    path = Path(store) / model_url
    stem = archive_stem(path.name)
    for ext, ctype in EXAMPLE_TYPES:
        example = Path(store) / f"{stem}.example{ext}"
        if example.is_file():
            try:
                return example.read_bytes(), ctype, "predictions"
            except OSError:
                break
    try:
        meta = json.loads(read_member(path, METADATA_PATH))
        sample = meta.get("sample_input") if isinstance(meta, dict) else None
        if not sample:
            return None
        data = read_member(path, str(sample))
    except (ArchiveError, ValueError):
        return None
    ctype = "application/json" if str(sample).endswith(".json") else "application/octet-stream"
    return data, ctype, "v2"


#: Reports read from archives, by (path, mtime, size): the sidebar polls every 2 s and an
#: archive is rewritten (a new mtime) when a deploy stores its report.
_REPORTS: dict[tuple[str, float, int], dict[str, Any] | None] = {}


def evaluation(store: str | None, model_url: str | None) -> dict[str, Any] | None:
    """The held-out report stored in the archive of a registered version (its `modelUrl`
    in the store), or None."""
    if not store or not model_url or "/" in model_url or model_url.startswith("."):
        return None
    path = Path(store) / model_url
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime, stat.st_size)
    if key not in _REPORTS:
        if len(_REPORTS) > 256:
            _REPORTS.clear()
        _REPORTS[key] = evaluation_in_store(store, model_url)
    return _REPORTS[key]


def attach_evaluations(store: str | None, models: list[dict[str, Any]]) -> None:
    """Set `evaluation` on each described version that has a stored report."""
    for model in models:
        for version in model.get("versions") or []:
            report = evaluation(store, version.get("modelUrl"))
            if report is not None:
                version["evaluation"] = report
