"""Where things go in a bundle, and how they are written: archive names, Kubernetes names,
YAML and text files. Every target writes through a `BundleWriter`, so the result can list
exactly the files it wrote.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from .bundle import Bundle
from .snapshot import ExportError, ModelSnapshot, VersionSnapshot


def archive_file_name(model: ModelSnapshot, version: VersionSnapshot) -> str:
    """`NAME.mar` for a model with one version (KServe's samples), `NAME-VERSION.mar` for
    several; the archive's own suffix is kept (`.tar.gz`, or none for a folder)."""
    from ..archive.reader import ARCHIVE_SUFFIXES

    suffix = next((s for s in ARCHIVE_SUFFIXES if version.archive.name.endswith(s)), "")
    stem = model.name if len(model.versions) == 1 else f"{model.name}-{version.version}"
    return stem + suffix


def k8s_name(text: str) -> str:
    """A DNS-1035 label (what InferenceService, MLService release and RayService names must
    be): lower case, digits and '-', starting with a letter, at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "m-" + name
    return name[:63].rstrip("-")


class BundleWriter:
    """Writes into `out` and remembers every file, relative to `out`."""

    def __init__(self, out: Path, force: bool = False) -> None:
        self.out = out
        if out.exists() and not out.is_dir():
            raise ExportError(f"{out} is a file, not a folder for the bundle; name another out")
        if out.exists() and any(out.iterdir()) and not force:
            raise ExportError(f"{out} is not empty; pass force=True (--force) to write into it")
        out.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []

    def bundle(
        self,
        target: str,
        model: ModelSnapshot,
        steps: list[tuple[str, str]],
        notes: list[str] | None = None,
        versions: list[VersionSnapshot] | None = None,
    ) -> Bundle:
        """What was written, as `export()` reports it (all the model's versions unless
        the target exports fewer), with the notes of those versions before the target's."""
        chosen = model.versions if versions is None else versions
        return Bundle(
            target,
            model.name,
            [v.version for v in chosen],
            self.out,
            self.files,
            steps,
            [
                *(v.handler_note for v in chosen if v.handler_note),
                *([model.canary_note] if model.canary_note else []),
                *(notes or []),
            ],
        )

    def text(self, rel: str, content: str, mode: int | None = None) -> Path:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if mode is not None:
            path.chmod(mode)
        self._record(path)
        return path

    def yaml(self, rel: str, *documents: dict[str, Any], header: str = "") -> Path:
        import yaml

        body = "---\n".join(
            yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in documents
        )
        return self.text(rel, _comment(header) + body)

    def copy(self, src: Path, rel: str) -> Path:
        dest = self.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dest)
        self._record(dest)
        return dest

    def _record(self, path: Path) -> None:
        rel = path.relative_to(self.out)
        if rel not in self.files:
            self.files.append(rel)


def _comment(text: str) -> str:
    return (
        "".join(f"# {line}".rstrip() + "\n" for line in text.strip().splitlines()) if text else ""
    )
