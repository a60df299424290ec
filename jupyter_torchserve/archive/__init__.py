"""Model archives: write (``archive``), read (``read_manifest``) and extract (``extract``).

Attributes are imported lazily: the engine imports ``reader`` and ``errors`` (no torch),
while ``archive`` pulls in torch and the format machinery only when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ArchiveError, ArchiveWarning, CaptureError, PreflightError

if TYPE_CHECKING:
    from .api import ArchiveResult, archive
    from .reader import extract, read_manifest

__all__ = [
    "ArchiveError",
    "ArchiveResult",
    "ArchiveWarning",
    "CaptureError",
    "PreflightError",
    "archive",
    "extract",
    "read_manifest",
]

_LAZY = {
    "archive": "api",
    "ArchiveResult": "api",
    "extract": "reader",
    "read_manifest": "reader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
