"""Why a worker died, and so whether the batches it held may be tried again elsewhere.

One fault, one casualty. A worker killed from outside (a user's `kill -9`, a supervisor's
SIGTERM, the engine replacing a worker that sent garbage) held innocent batches: each is
retried once on another worker, which is what makes SIGKILL-under-load lossless. A worker
its own batch killed would kill the next worker too (an `os._exit` in the handler, a
segfault, an allocation past the machine's memory): that batch is answered at once and
only the batches queued behind it are retried. The batch a worker was running is the
oldest it holds, since a worker runs its batches one at a time in order.

The exit status tells the two apart, and the kernel's OOM-kill counter the one case it
cannot (the OOM killer's SIGKILL looks like anyone's):

* an exit code >= 0: the worker ended itself (its loop only ends when the engine tells it
  to, or it loses the engine), so its batch did it: 503;
* SIGKILL while `/proc/vmstat`'s `oom_kill` rose since it was last read: out of memory,
  TorchServe's 507;
* SIGKILL, SIGTERM, SIGINT, SIGHUP otherwise, or any kill the engine sent itself: from
  outside, retried;
* any other signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL): a crash in its batch: 503.

The counter is host-wide and read about once a second, so an OOM kill of some other
process in that second, beside an outside SIGKILL of a worker, is taken for the worker's
OOM: that batch is answered 507 rather than retried, the one loss this rule allows.
"""

from __future__ import annotations

import signal
import time

from .errors import ApiError

OUTSIDE_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
SAMPLE_SECONDS = 1.0


def read_oom_kills(path: str = "/proc/vmstat") -> int | None:
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None  # not Linux, or a kernel before 4.13: OOM kills look like outside kills


class OomWatch:
    """The OOM-kill count as last sampled; `rose()` says whether it grew since."""

    def __init__(self) -> None:
        self.count = read_oom_kills()
        self.read_at = time.monotonic()

    def sample(self) -> None:
        self.count, self.read_at = read_oom_kills(), time.monotonic()

    def refresh(self) -> None:
        """Called as each batch goes out: a read at most once a second, so the count a
        death is compared with is never older than its batch by more than that."""
        if time.monotonic() - self.read_at > SAMPLE_SECONDS:
            self.sample()

    def rose(self) -> bool:
        before, now = self.count, read_oom_kills()
        self.count, self.read_at = now, time.monotonic()
        return before is not None and now is not None and now > before


#: One per engine: the counter is the host's.
WATCH = OomWatch()


def casualty(
    model: str,
    exit_code: int | None,
    killed_by_engine: bool,
    log_path: str,
    oom: OomWatch = WATCH,
) -> ApiError | None:
    """The answer for the batch a dead worker was running, or None to retry it."""
    if exit_code is None or killed_by_engine:
        return None
    if exit_code >= 0:
        return ApiError(
            503,
            "InternalServerException",
            f"Prediction failed: the worker serving model {model} exited (code {exit_code}) "
            f"while running this request; it is not retried. See {log_path}",
        )
    sig = -exit_code
    if sig == signal.SIGKILL and oom.rose():
        return ApiError(
            507,
            "InternalServerException",
            f"Out of memory: the worker serving model {model} was killed by the kernel's "
            "OOM killer while running this request; it is not retried",
        )
    if sig in OUTSIDE_SIGNALS:
        return None
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    return ApiError(
        503,
        "InternalServerException",
        f"Prediction failed: the worker serving model {model} crashed ({name}) while running "
        f"this request; it is not retried. See {log_path}",
    )
