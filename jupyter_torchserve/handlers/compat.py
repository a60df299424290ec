"""Make ``import ts`` work for TorchServe-era handlers when TorchServe is not installed.

Archives made for TorchServe import ``ts.torch_handler.base_handler``, ``ts.context``,
``ts.utils.util`` and friends. We ship our own small tree of those names in ``_ts_compat/``
and put it on ``sys.path`` only when the real ``ts`` cannot be imported, so installing the
``torchserve`` wheel beside us changes nothing: the real package always wins.
"""

from __future__ import annotations

import importlib
import os
import sys

COMPAT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ts_compat")


def ensure_ts_importable() -> bool:
    """Put the compat ``ts`` on ``sys.path`` if the real one is absent.

    Returns True when the compat layer is (now) the ``ts`` in use, False when a real ``ts``
    package was importable and has been left alone.
    """
    if COMPAT_DIR in sys.path:
        return True
    try:
        importlib.import_module("ts")
    except ImportError:
        sys.path.append(COMPAT_DIR)
        importlib.invalidate_caches()
        importlib.import_module("ts")
        return True
    return False


def using_compat() -> bool:
    """Whether the imported ``ts`` is our compat layer (e.g. for logs and diagnostics)."""
    module = sys.modules.get("ts")
    return bool(module is not None and getattr(module, "__jupyter_torchserve_compat__", False))
