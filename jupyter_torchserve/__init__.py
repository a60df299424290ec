"""Serve a PyTorch model from a notebook: archive, engine, magics and a JupyterLab sidebar.

Heavy pieces (torch, IPython) are imported lazily, on first use of a name, so that the engine
process and the Jupyter server extension do not pay for them.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# public name -> (module, attribute), resolved on first access
_LAZY = {
    "archive": ("jupyter_torchserve.archive", "archive"),
    "deploy": ("jupyter_torchserve.deployment", "deploy"),
    "Client": ("jupyter_torchserve.client", "Client"),
    "EngineError": ("jupyter_torchserve.client", "EngineError"),
    "start_engine": ("jupyter_torchserve.launcher", "start_engine"),
    "stop_engine": ("jupyter_torchserve.launcher", "stop_engine"),
    "ensure_engine": ("jupyter_torchserve.launcher", "ensure_engine"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'jupyter_torchserve' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext jupyter_torchserve` registers the `%torchserve` magic."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_torchserve.serverext"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-torchserve"}]
