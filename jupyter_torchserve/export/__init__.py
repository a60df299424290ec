"""Take a model off the notebook machine: KServe, T9k MLService, Ray Serve or plain
TorchServe bundles of a served model or a `.mar` (`export()`), each serving the same archive
unchanged."""

from __future__ import annotations

from .api import export
from .bundle import Bundle
from .snapshot import ExportError

__all__ = ["Bundle", "ExportError", "export"]
