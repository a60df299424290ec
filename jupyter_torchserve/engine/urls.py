"""The checks every register URL passes, and every redirect hop of its download.

A URL's path is judged after percent-decoding, repeatedly: `%2e%2e`, `%252e%252e` or an
encoded `/` are the same traversal as `..` to a server that decodes once more, so any
segment that decodes to `.`, `..` or holds a separator is refused outright, not resolved.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from .errors import bad_request

MAX_NAME_BYTES = 255  # a file name's limit on Linux filesystems (NAME_MAX)


def allowed(url: str, patterns: list[str]) -> bool:
    """Whether `url` matches one of `allowed_urls` whole, as TorchServe's `matches` does."""
    for pattern in patterns:
        try:
            if re.fullmatch(pattern, url):
                return True
        except re.error:
            continue  # a broken pattern allows nothing
    return False


def _fully_unquoted(text: str) -> str:
    for _ in range(4):  # %25 nests; four rounds is more than any server decodes
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def check_path(url: str, path: str) -> list[str]:
    """The decoded segments of a URL's `path`; 400 for traversal in any spelling."""
    segments = []
    for raw in path.split("/"):
        seg = _fully_unquoted(raw)
        if seg in (".", "..") or "/" in seg or "\\" in seg or "\x00" in seg:
            raise bad_request(f"Refused URL {url}: its path leaves its folder ({raw!r})")
        segments.append(seg)
    return segments


def archive_name(url: str, path: str) -> str:
    """The file name a downloaded archive gets in the store: the URL path's last segment."""
    name = check_path(url, path)[-1] if path else ""
    if not name or name.startswith("."):
        raise bad_request(f"Cannot derive an archive name from {url}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise bad_request(
            f"The archive name in {url[:80]}... is {len(name.encode())} bytes long; "
            f"file names are limited to {MAX_NAME_BYTES}"
        )
    return name
