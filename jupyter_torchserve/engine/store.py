"""Resolving a register `url` to a local archive, safely.

Register URLs were the door of ShellTorch (CVE-2023-43654): any URL was fetched and its code
ran. Here a name is looked up inside the model store only (no `..`, no absolute paths; a
store entry that is a symlink is followed, as in TorchServe), and anything else must match an
`allowed_urls` regex; http(s) archives are downloaded into the store, never elsewhere
(download.py). The URL checks themselves are urls.py's.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .download import download
from .errors import ApiError, bad_request
from .urls import MAX_NAME_BYTES, allowed, check_path


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


async def resolve_url(
    url: str, store: Path, allowed_urls: list[str], max_size: int, timeout: float = 300.0
) -> Path:
    """The local path a register `url` stands for; downloads allow-listed http(s) URLs
    (at most `max_size` bytes, within `timeout` seconds)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not allowed(url, allowed_urls):
            raise bad_request(
                f"Given URL {url} does not match any allowed URL(s) "
                "(set allowed_urls to permit downloads)"
            )
        return await download(url, store, allowed_urls, max_size, timeout)
    if scheme == "file":
        check_path(url, parts.path)
        path = Path(unquote(parts.path))
        if _inside(path, store) or allowed(url, allowed_urls):
            if not _exists(path):
                raise ApiError(404, "ModelNotFoundException", f"Model not found at: {url}")
            return path
        raise bad_request(f"Given URL {url} is outside the model store and not in allowed_urls")
    if scheme and len(scheme) > 1:
        raise bad_request(f"Unsupported URL scheme in {url}")
    parts_ = Path(url).parts
    if (
        os.path.isabs(url)
        or ".." in parts_
        or any(len(p.encode()) > MAX_NAME_BYTES for p in parts_)
    ):
        raise ApiError(404, "ModelNotFoundException", f"Model not found at: {url}")
    # a store entry that is a symlink is followed, as TorchServe does: the store's owner put
    # it there (what a request names cannot leave the store: no `..`, nothing absolute)
    path = store / url
    if not _exists(path):
        raise ApiError(404, "ModelNotFoundException", f"Model not found at: {url}")
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long, a NUL: nothing by that name can be there
        return False
