"""Size-capped model logs.

Workers write their stdout/stderr straight into `<log_dir>/<model>.log` through an O_APPEND
file descriptor (C++ and CUDA messages included), so Python's RotatingFileHandler cannot
rotate them: the writers would keep the old file open. The engine instead copies a log that
grew past the cap to `<model>.log.1` and truncates it in place (logrotate's copytruncate);
O_APPEND writers simply continue at the new end. One backup is kept. Lines written between the
copy and the truncation can be lost; that window is a few milliseconds every
`max_bytes` of output.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("jupyter_torchserve.engine")


def rotate_large_logs(log_dir: Path, max_bytes: int) -> list[Path]:
    """Rotate every `*.log` in `log_dir` larger than `max_bytes`; return the rotated ones."""
    if max_bytes <= 0:
        return []
    rotated = []
    for path in log_dir.glob("*.log"):
        try:
            if path.stat().st_size <= max_bytes:
                continue
            backup = path.with_name(path.name + ".1")
            with open(path, "rb") as src, open(backup, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(backup, 0o600)
            os.truncate(path, 0)
            rotated.append(path)
        except OSError as e:  # a log removed meanwhile, a full disk: try again next time
            log.warning("rotating %s failed: %s", path, e)
    return rotated
