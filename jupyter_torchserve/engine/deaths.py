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

A GPU runs out of memory without the kernel knowing: CUDA's allocator raises in the handler
(the worker answers that batch 507 itself and keeps serving, `handlers/service.py`), and a
worker whose CUDA context is left broken by it may then abort, segfault or exit. So a death
of its own doing (an exit code, a crash signal) or a SIGKILL is taken for a GPU OOM, and
answered 507 rather than 503, when there is GPU evidence (`gpu_oom`): the worker reported a
CUDA out-of-memory error in the last `GPU_OOM_RECENT_S` seconds, or its device had under
`GPU_FULL_FRACTION` of its memory free when it died (read through NVML after the death,
so what the dead worker held is already given back: what is left full is everyone else's).
SIGTERM, SIGINT and SIGHUP stay outside stops, retried, whatever the GPU looks like.

Every death the engine did not ask for is also told as one `Death.cause` line: in the
model's log and in `describe` (the version's `workerDeaths`).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

from .errors import ApiError

OUTSIDE_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
SAMPLE_SECONDS = 1.0
#: A CUDA out-of-memory error this recent makes a worker's death a GPU OOM.
GPU_OOM_RECENT_S = 60.0
#: A device with less than this share of its memory free, read at a worker's death, is full.
GPU_FULL_FRACTION = 0.05
MIB = 1024**2


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


@dataclass(frozen=True)
class Death:
    """Why a worker died, once: `error` answers the batch it was running (None: retry it),
    `cause` is the line for the model's log and `describe`."""

    cause: str
    error: ApiError | None
    out_of_memory: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "cause": self.cause,
            "outOfMemory": self.out_of_memory,
            "status": self.error.status if self.error is not None else None,
        }


def gpu_full(gpu_id: int) -> str | None:
    """What NVML says of a full device (`cuda:0 had 300 MiB free of 16384 MiB`), or None
    when it has room or cannot be read."""
    from .gpu import list_gpus

    for g in list_gpus():
        if g.index == gpu_id and g.memory_total > 0:
            free = g.memory_total - g.memory_used
            if free < GPU_FULL_FRACTION * g.memory_total:
                return (
                    f"cuda:{gpu_id} had {free // MIB} MiB free of {g.memory_total // MIB} MiB "
                    "when it died"
                )
    return None


def classify(
    model: str,
    exit_code: int | None,
    killed_by_engine: bool,
    log_path: str,
    oom: OomWatch = WATCH,
    gpu_oom: str | None = None,
) -> Death:
    """Why a worker died (see the module's rules); `gpu_oom` is the GPU evidence, if any."""
    if killed_by_engine:
        return Death("stopped by the engine", None)
    if exit_code is None:
        return Death("lost its connection to the engine", None)
    sig = -exit_code if exit_code < 0 else 0
    how = f"exited (code {exit_code})" if exit_code >= 0 else f"was killed ({_signal_name(sig)})"
    self_inflicted = exit_code >= 0 or sig not in OUTSIDE_SIGNALS
    if gpu_oom and (self_inflicted or sig == signal.SIGKILL):
        return Death(
            f"out of GPU memory: it {how}; {gpu_oom}",
            ApiError(
                507,
                "InternalServerException",
                f"Out of resources: the worker serving model {model} {how} while its GPU "
                f"was out of memory ({gpu_oom}); the request is not retried. See {log_path}",
            ),
            out_of_memory=True,
        )
    if exit_code >= 0:
        return Death(
            f"{how} while running a batch",
            ApiError(
                503,
                "InternalServerException",
                f"Prediction failed: the worker serving model {model} exited (code {exit_code}) "
                f"while running this request; it is not retried. See {log_path}",
            ),
        )
    if sig == signal.SIGKILL and oom.rose():
        return Death(
            "out of memory: killed by the kernel's OOM killer",
            ApiError(
                507,
                "InternalServerException",
                f"Out of memory: the worker serving model {model} was killed by the kernel's "
                "OOM killer while running this request; it is not retried",
            ),
            out_of_memory=True,
        )
    if sig in OUTSIDE_SIGNALS:
        return Death(f"{how} from outside", None)
    return Death(
        f"crashed ({_signal_name(sig)}) while running a batch",
        ApiError(
            503,
            "InternalServerException",
            f"Prediction failed: the worker serving model {model} crashed ({_signal_name(sig)}) "
            f"while running this request; it is not retried. See {log_path}",
        ),
    )


def _signal_name(sig: int) -> str:
    return signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)


def write_death(log_path: str, worker_id: str, death: Death) -> None:
    """The model's log is where a user looks for what happened to its workers."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    try:
        with open(log_path, "a") as f:  # O_APPEND: whole lines beside the workers' own
            f.write(f"{stamp} [engine] worker {worker_id} died: {death.cause}\n")
    except OSError:
        pass
