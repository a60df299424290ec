"""Serve a PyTorch model from a notebook: archive, engine, magics and a JupyterLab sidebar.

Heavy pieces (torch, IPython) are imported lazily so that the engine process and the
Jupyter server extension stay light.
"""

from ._version import __version__

__all__ = ["__version__"]
