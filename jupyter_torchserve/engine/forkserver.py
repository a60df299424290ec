"""The multiprocessing forkserver that every worker is forked from, and starting it early.

The forkserver imports torch once (see `worker_preload`), and that import is most of the
time from `start` to a first answer. So it starts as early as possible, in a thread, beside
the engine's own imports: on two cores they run in parallel.
"""

from __future__ import annotations

import multiprocessing
import threading

CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["jupyter_torchserve.engine.worker_preload"])


def warm() -> None:
    """Start the forkserver (and its `import torch`) ahead of the first worker; idempotent."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


def warm_in_background() -> None:
    threading.Thread(target=warm, name="jts-forkserver", daemon=True).start()
