"""Resolving a register `url` to a local archive, safely.

Register URLs were the door of ShellTorch (CVE-2023-43654): any URL was fetched and its code
ran. Here a name is looked up inside the model store only (no `..`, no absolute paths, no
symlink out), and anything else must match an `allowed_urls` regex; http(s) archives are
downloaded into the store, never elsewhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import ApiError, bad_request


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _allowed(url: str, allowed: list[str]) -> bool:
    return any(re.fullmatch(pattern, url) for pattern in allowed)


async def resolve_url(url: str, store: Path, allowed: list[str], max_size: int) -> Path:
    """The local path a register `url` stands for; downloads allow-listed http(s) URLs."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        if not _allowed(url, allowed):
            raise bad_request(
                f"Given URL {url} does not match any allowed URL(s) "
                "(set allowed_urls to permit downloads)"
            )
        return await _download(url, store, max_size)
    if scheme == "file":
        path = Path(unquote(urlsplit(url).path))
        if _inside(path, store) or _allowed(url, allowed):
            if not path.exists():
                raise ApiError(404, "ModelNotFoundException", f"Model not found at: {url}")
            return path
        raise bad_request(f"Given URL {url} is outside the model store and not in allowed_urls")
    if scheme and len(scheme) > 1:
        raise bad_request(f"Unsupported URL scheme in {url}")
    if os.path.isabs(url):  # the same policy as its file:// URL, and the same clear 400
        return await resolve_url(Path(url).as_uri(), store, allowed, max_size)
    if ".." in Path(url).parts:
        raise ApiError(404, "ModelNotFoundException", f"Model not found at: {url}")
    path = store / url
    if not _inside(path, store) or not path.exists():
        raise ApiError(404, "ModelNotFoundException", f"Model not found at: {url}")
    return path


async def _download(url: str, store: Path, max_size: int) -> Path:
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError

    name = Path(urlsplit(url).path).name
    if not name or name in (".", ".."):
        raise bad_request(f"Cannot derive an archive name from {url}")
    target = store / name
    if target.exists():
        raise ApiError(
            409, "ConflictStatusException", f"Model file {name} already exists in the model store"
        )
    try:
        resp = await AsyncHTTPClient().fetch(url, max_body_size=max_size, request_timeout=300)
    except (HTTPClientError, OSError) as e:
        raise bad_request(f"Failed to download archive from: {url}: {e}") from None
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(resp.body)
    tmp.replace(target)
    return target
