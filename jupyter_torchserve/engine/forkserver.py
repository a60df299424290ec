"""The multiprocessing forkserver that every worker is forked from, and starting it early.

The forkserver imports torch once (see `worker_preload`), and that import is most of the
time from `start` to a first answer. So it starts as early as possible, in a thread, beside
the engine's own imports: on two cores they run in parallel.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from multiprocessing.context import BaseContext
from pathlib import Path

CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["jupyter_torchserve.engine.worker_preload"])
#: Workers of archives that must run without torch (ONNX): a fresh interpreter each, since
#: a fork of the forkserver would carry its torch along.
SPAWN = multiprocessing.get_context("spawn")
TORCH_FREE_FORMATS = ("onnx",)


def context_for(model_dir: str) -> BaseContext:
    """Where a worker of the archive in ``model_dir`` starts: a fork of the torch-loaded
    forkserver, or (for a torch-free format in our metadata) a plain spawn."""
    try:
        meta = json.loads((Path(model_dir) / "MAR-INF" / "jupyter_torchserve.json").read_text())
    except (OSError, ValueError):
        return CONTEXT
    return SPAWN if meta.get("format") in TORCH_FREE_FORMATS else CONTEXT


def warm() -> None:
    """Start the forkserver (and its `import torch`) ahead of the first worker; idempotent."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


def warm_in_background() -> None:
    threading.Thread(target=warm, name="jts-forkserver", daemon=True).start()
