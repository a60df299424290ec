"""One state dir, one engine: an exclusive lock held for the engine's whole life.

Two engines on one state dir used to start without a word: the second overwrote
`key_file.json`, and on stop deleted the first one's keys and unpacked archives. So an
engine takes `flock(LOCK_EX | LOCK_NB)` on `<state_dir>/engine.lock` before it writes
anything there. The kernel drops the lock when the process ends, however it ends (a
SIGKILL included), so a dead engine never blocks the next start and no pid file can go
stale; the pid and addresses written into the file only name the live holder in the
refusal.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

LOCK_NAME = "engine.lock"


class StateDirInUse(RuntimeError):
    """Another live engine holds the state dir; the message names it."""


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, owner: dict[str, Any]) -> None:
        """Hold the lock, or raise StateDirInUse naming the engine that does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirInUse(
                f"The state dir {self.path.parent} is in use by a running engine{holder}; "
                "stop it (jupyter-torchserve stop) or start this one with another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), **owner}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return ""
    parts = [f"pid {data['pid']}"] if "pid" in data else []
    if data.get("management_address"):
        parts.append(f"management {data['management_address']}")
    return f" ({', '.join(parts)})" if parts else ""
