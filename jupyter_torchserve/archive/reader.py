"""Read and safely extract model archives: ``.mar`` zips, ``.tar.gz`` and plain directories.

The engine calls :func:`extract` once per archive; the result is cached under
``cache_root/<sha256 of the archive>/`` so a re-register, a new worker or a restarted engine
never unpacks the same bytes twice. Archives come from users and URLs, so extraction refuses
anything that could write outside its folder (absolute or ``..`` paths, links) and stops
zip bombs with member and total size limits counted on the bytes actually written.

No torch import here: the engine process stays light.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ArchiveError, ArchiveTooLarge
from .manifest import MANIFEST_PATH, check_manifest
from .zipcrc import fast_zip_crc

DEFAULT_MAX_TOTAL_SIZE = 4 << 30  # 4 GiB
DEFAULT_MAX_MEMBERS = 100_000
DISK_MARGIN = 64 << 20  # left free after unpacking, for logs and snapshots
_CHUNK = 1 << 20


def _safe_member_name(name: str, archive: str) -> str | None:
    """The normalised relative path of a member, ``None`` for directory entries."""
    if "\x00" in name:
        raise ArchiveError(f"{archive}: unsafe member name {name!r}")
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {name!r} escapes the archive with '..'")
    if not parts:
        return None
    return posixpath.join(*parts)


def _kind(path: Path) -> str:
    if path.is_dir():
        return "dir"
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise ArchiveError(
        f"{path}: not a model archive (expected a .mar/zip, a .tar.gz or a directory); "
        "the file may be corrupt or truncated"
    )


def _tar_top(names: list[str]) -> str | None:
    """torch-model-archiver's tgz holds ``<name>/``: the single top folder, if any."""
    if f"{MANIFEST_PATH}" in names:
        return None
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and any("/" in n for n in names):
        return tops.pop()
    return None


ARCHIVE_SUFFIXES = (".mar", ".zip", ".tar.gz", ".tgz")


def is_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names something ``extract`` takes: a file with an archive suffix, or
    a directory holding ``MAR-INF/MANIFEST.json`` (torch-model-archiver's no-archive)."""
    p = Path(path)
    if p.is_dir():
        return (p / MANIFEST_PATH).is_file()
    return p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES)


def archive_stem(name: str) -> str:
    """``mnist-1.0.mar`` -> ``mnist-1.0``: the name without its archive suffix."""
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_member(path: str | os.PathLike[str], member: str, max_size: int = 16 << 20) -> bytes:
    """One file of an archive, read without extracting the rest.

    ``member`` is relative to the archive's root (the folder holding ``MAR-INF``; a tgz's
    single top folder is skipped, as :func:`extract` does). Members over ``max_size`` bytes
    and names that would leave the archive are refused.
    """
    p = Path(path)
    if not p.exists():
        raise ArchiveError(f"{p}: no such archive")
    wanted = _safe_member_name(member, str(p))
    if wanted is None:
        raise ArchiveError(f"{p}: {member!r} is not a file name")
    try:
        kind = _kind(p)
        if kind == "dir":
            target = (p / wanted).resolve()
            if not target.is_relative_to(p.resolve()) or not target.is_file():
                raise ArchiveError(f"{p}: archive has no {member}")
            if target.stat().st_size > max_size:
                raise ArchiveError(f"{p}: {member} is implausibly large")
            return target.read_bytes()
        if kind == "zip":
            with zipfile.ZipFile(p) as zf:
                names = {_safe_member_name(i.filename, str(p)): i for i in zf.infolist()}
                info = names.get(wanted)
                if info is None:
                    raise ArchiveError(f"{p}: archive has no {member}")
                if info.file_size > max_size:
                    raise ArchiveError(f"{p}: {member} is implausibly large")
                return zf.read(info)
        with tarfile.open(p, "r:*") as tar:
            members = tar.getmembers()
            clean = [_safe_member_name(m.name, str(p)) or "" for m in members]
            top = _tar_top([c for c in clean if c])
            full = f"{top}/{wanted}" if top else wanted
            found = next((m for m, c in zip(members, clean, strict=True) if c == full), None)
            if found is None or not found.isfile():
                raise ArchiveError(f"{p}: archive has no {member}")
            if found.size > max_size:
                raise ArchiveError(f"{p}: {member} is implausibly large")
            handle = tar.extractfile(found)
            return handle.read() if handle else b""
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"{p}: corrupt archive ({exc})") from exc


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``MAR-INF/MANIFEST.json`` of an archive without extracting it.

    ``path`` may be a ``.mar``/zip, a ``.tar.gz``, an archive directory, or the manifest file.
    An unknown archiver version warns (:class:`ArchiveWarning`) but is returned.
    """
    p = Path(path)
    if p.is_file() and p.name == "MANIFEST.json":
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ArchiveError(f"{p}: corrupt archive ({exc})") from exc
    else:
        raw = read_member(p, MANIFEST_PATH)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{p}: {MANIFEST_PATH} is not valid JSON ({exc})") from exc
    return check_manifest(manifest, source=str(p))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Budget:
    """Counts bytes actually written, because headers of a zip bomb lie about sizes.

    Each chunk is checked before it is written, so nothing lands past a limit: the total
    (`limit_name` is the option a user raises for it), one member, and the free space of
    the disk at the start less a margin (a full disk breaks far more than this archive).
    """

    def __init__(
        self, archive: str, max_total: int, max_member: int, free: int, limit_name: str
    ) -> None:
        self.archive, self.max_total, self.max_member = archive, max_total, max_member
        self.free, self.limit_name = free, limit_name
        self.total = 0

    def declare(self, name: str, size: int) -> None:
        if size > self.max_member:
            raise ArchiveTooLarge(
                f"{self.archive}: member {name!r} is {size} bytes, over the "
                f"{self.max_member}-byte member limit (zip bomb?)"
            )

    def declare_total(self, size: int) -> None:
        """The sum of the sizes the archive declares: refused before anything is written."""
        if size > self.max_total:
            raise ArchiveTooLarge(
                f"{self.archive}: members declare {size} bytes in all, over the "
                f"{self.max_total}-byte total limit ({self.limit_name})"
            )
        self._check_disk(size)

    def _check_disk(self, size: int) -> None:
        if size > self.free:
            raise ArchiveTooLarge(
                f"{self.archive}: unpacking needs {size} bytes but the disk has "
                f"{max(0, self.free)} free (keeping {DISK_MARGIN >> 20} MiB spare)",
                disk=True,
            )

    def copy(self, name: str, src: BinaryIO, dst: BinaryIO) -> None:
        written = 0
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            self.total += len(chunk)
            if written > self.max_member:
                raise ArchiveTooLarge(
                    f"{self.archive}: member {name!r} expands past the {self.max_member}-byte "
                    "member limit (zip bomb?)"
                )
            if self.total > self.max_total:
                raise ArchiveTooLarge(
                    f"{self.archive}: contents expand past the {self.max_total}-byte total "
                    f"limit (zip bomb?); raise {self.limit_name} if the archive is genuine"
                )
            self._check_disk(self.total)
            try:
                dst.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                raise ArchiveTooLarge(f"{self.archive}: the disk filled up", disk=True) from None


def _open_target(root: Path, rel: str) -> BinaryIO:
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise ArchiveError(f"duplicate member {rel!r}")
    return open(target, "xb")


def _extract_zip(path: Path, dest: Path, budget: _Budget, max_members: int) -> None:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise ArchiveError(f"{path}: {len(infos)} members, over the limit of {max_members}")
        budget.declare_total(sum(i.file_size for i in infos))
        for info in infos:
            rel = _safe_member_name(info.filename, str(path))
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"{path}: member {info.filename!r} is a symbolic link")
            if rel is None or info.is_dir():
                if rel:
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                continue
            budget.declare(info.filename, info.file_size)
            with zf.open(info) as src, _open_target(dest, rel) as dst, fast_zip_crc():
                budget.copy(info.filename, src, dst)


def _extract_tar(path: Path, dest: Path, budget: _Budget, max_members: int) -> None:
    with tarfile.open(path, "r:*") as tar:
        count = 0
        for member in tar:  # streaming: a tgz bomb of headers is stopped by the count
            count += 1
            if count > max_members:
                raise ArchiveError(f"{path}: more than {max_members} members")
            rel = _safe_member_name(member.name, str(path))
            if member.issym() or member.islnk():
                raise ArchiveError(
                    f"{path}: member {member.name!r} is a link ({member.linkname!r}); "
                    "links are not allowed in model archives"
                )
            if member.isdir() or rel is None:
                if rel:
                    (dest / rel).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise ArchiveError(f"{path}: member {member.name!r} is not a regular file")
            budget.declare(member.name, member.size)
            src = tar.extractfile(member)
            if src is None:
                raise ArchiveError(f"{path}: cannot read member {member.name!r}")
            with src, _open_target(dest, rel) as dst:
                budget.copy(member.name, src, dst)


def _model_root(extracted: Path) -> Path:
    """The folder holding ``MAR-INF`` (a tgz has one top folder ``<name>/``)."""
    if (extracted / MANIFEST_PATH).is_file():
        return extracted
    children = [c for c in extracted.iterdir()]
    if len(children) == 1 and children[0].is_dir() and (children[0] / MANIFEST_PATH).is_file():
        return children[0]
    raise ArchiveError(f"archive has no {MANIFEST_PATH}")


def _check_contents(model_dir: Path, manifest: dict[str, Any], source: str) -> None:
    model = manifest["model"]
    for key in ("serializedFile", "modelFile", "requirementsFile", "configFile"):
        name = model.get(key)
        if not name:
            continue
        rel = _safe_member_name(name, source)
        target = (model_dir / rel).resolve() if rel else None
        if target is None or not target.is_relative_to(model_dir.resolve()):
            raise ArchiveError(f"{source}: manifest {key} {name!r} points outside the archive")
        if not target.is_file():
            raise ArchiveError(f"{source}: {key} {name!r} named in the manifest is missing")


def extract(
    path: str | os.PathLike[str],
    cache_root: str | os.PathLike[str],
    *,
    max_total_size: int = DEFAULT_MAX_TOTAL_SIZE,
    max_member_size: int | None = None,
    max_members: int = DEFAULT_MAX_MEMBERS,
    limit_name: str = "max_total_size",
) -> tuple[str, dict[str, Any]]:
    """Extract an archive once into ``cache_root/<sha256>/``; return ``(model_dir, manifest)``.

    A directory archive (torch-model-archiver ``no-archive``) is used in place, like TorchServe
    does. Extraction goes to a temporary folder that is renamed into place only after the
    manifest and the files it names have been checked, so a cache entry is always complete
    and concurrent extractions of the same archive are harmless. Past `max_total_size`
    bytes written (the message names `limit_name`, the caller's option for it) or the disk's
    free space it stops with :class:`ArchiveTooLarge`, having written nothing beyond.
    """
    p = Path(path)
    if not p.exists():
        raise ArchiveError(f"{p}: no such archive")
    kind = _kind(p)
    if kind == "dir":
        manifest = read_manifest(p)
        _check_contents(p, manifest, str(p))
        return str(p.resolve()), manifest
    cache = Path(cache_root)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / _sha256(p)
    if final.is_dir():
        model_dir = _model_root(final)
        manifest = read_manifest(model_dir)
        return str(model_dir), manifest
    temp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    try:
        budget = _Budget(
            str(p),
            max_total_size,
            max_member_size or max_total_size,
            shutil.disk_usage(cache).free - DISK_MARGIN,
            limit_name,
        )
        try:
            if kind == "zip":
                _extract_zip(p, temp, budget, max_members)
            else:
                _extract_tar(p, temp, budget, max_members)
        except (
            zipfile.BadZipFile,
            tarfile.TarError,
            EOFError,
            gzip.BadGzipFile,
            zlib_error(),
        ) as exc:
            raise ArchiveError(f"{p}: corrupt archive ({exc})") from exc
        try:
            model_root = _model_root(temp)
        except ArchiveError as exc:
            raise ArchiveError(f"{p}: {exc}") from None
        manifest = check_manifest(_load_json(model_root / MANIFEST_PATH, str(p)), source=str(p))
        _check_contents(model_root, manifest, str(p))
        rel_root = model_root.relative_to(temp)
        try:
            os.rename(temp, final)
        except OSError:
            if not final.is_dir():  # someone else won the race only if it is there now
                raise
            shutil.rmtree(temp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return str(final / rel_root), manifest


def zlib_error() -> type[Exception]:
    """``zlib.error``: raised by a corrupt deflate stream inside a zip or gzip."""
    import zlib

    return zlib.error


def _load_json(path: Path, source: str) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{source}: {MANIFEST_PATH} is not valid JSON ({exc})") from exc
