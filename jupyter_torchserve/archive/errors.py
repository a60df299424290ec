"""Errors raised while writing, checking or reading a model archive.

They live in their own module, free of torch, so that the engine can catch them without
importing the heavy archive writer.
"""

from __future__ import annotations


class ArchiveError(Exception):
    """An archive could not be written or read (corrupt, unsafe, incomplete)."""


class ArchiveTooLarge(ArchiveError):
    """Unpacking would pass a size limit, or the free disk space; nothing past it was written."""

    def __init__(self, message: str, *, disk: bool = False) -> None:
        super().__init__(message)
        self.disk = disk  # the disk would fill, rather than a configured limit be passed


class CaptureError(ArchiveError):
    """No requested format could capture the model; the message lists every attempt."""


class PreflightError(ArchiveError):
    """The written archive failed to load or to reproduce the model's output in a clean process.

    ``child_traceback`` holds the traceback text from the spawned process when there is one,
    so the notebook user sees *where* loading failed, not only that it did.
    """

    def __init__(self, message: str, child_traceback: str | None = None) -> None:
        super().__init__(message)
        self.child_traceback = child_traceback


class ArchiveWarning(UserWarning):
    """Something about an archive is unusual (e.g. unknown archiver version) but it still loads."""
