"""The engine's private folder under $TMPDIR, and sweeping the ones dead engines left.

Each engine keeps its worker socket in `$TMPDIR/jts-*`, and multiprocessing keeps the
forkserver's socket in a `pymp-*` beside it. A clean stop removes both; a SIGKILL left a
pair per crash. An engine holds `flock` on `jts-*/owner.lock` while it lives (the kernel
drops it with the process, however it ends) and writes there which `pymp-*` is its own.
So a later start can tell, without guessing from pids that may be reused, which folders
belong to dead engines: those whose lock it can take. It removes only those, and only
the `pymp-*` folder such an engine named, never another program's.

The lock file is locked under a temporary name and then renamed into place, so a sweep
never sees an `owner.lock` that is not yet held.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from multiprocessing import util as mp_util
from pathlib import Path

log = logging.getLogger("jupyter_torchserve.engine")

PREFIX = "jts-"
OWNER = "owner.lock"


class PrivateDir:
    """A `jts-*` folder this process owns while it lives."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX))
        staged = self.path / (OWNER + ".new")
        self._fd = os.open(staged, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        record = {"pid": os.getpid(), "pymp": mp_util.get_temp_dir()}
        os.write(self._fd, json.dumps(record).encode())
        os.rename(staged, self.path / OWNER)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)


def sweep(root: str | None = None) -> list[str]:
    """Remove what dead engines left under `root` ($TMPDIR); returns the folders removed."""
    base = Path(root or tempfile.gettempdir())
    removed: list[str] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return removed
    for folder in candidates:
        lock = folder / OWNER
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # no lock file: not one of ours, or one being made right now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its engine is alive
            try:
                record = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                record = {}
            pymp = Path(str(record.get("pymp") or ""))
            if pymp.name.startswith("pymp-") and pymp.parent == base:
                shutil.rmtree(pymp, ignore_errors=True)
                removed.append(str(pymp))
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
        finally:
            os.close(fd)
    if removed:
        log.info("removed what a dead engine left: %s", ", ".join(removed))
    return removed
