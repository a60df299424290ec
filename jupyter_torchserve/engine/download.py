"""Downloading a register URL's archive into the model store, within the engine's limits.

What an allowed URL may do to the engine is bounded here:

* **Redirects are followed by hand**, one hop at a time, and each target must pass the
  same checks as the URL the caller gave (http(s), no traversal, a match in
  `allowed_urls`). TorchServe follows a redirect anywhere, which turns one allowed host
  into every host.
* **Size**: a declared Content-Length over `max_archive_size`, or over the store's free
  disk space, is refused before a byte is written; a body is counted while it streams to
  disk and abandoned the moment it passes the limit (a server may lie or send no length).
* **Time**: the whole exchange, redirects included, has `download_timeout` seconds.
* **Nothing half-written stays**: the body goes to a hidden `.part` file that is linked
  into place only when complete, and removed on any failure.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.simple_httpclient import HTTPTimeoutError, SimpleAsyncHTTPClient

from .errors import ApiError, bad_request
from .urls import allowed, archive_name, check_path

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
DISK_MARGIN = 64 << 20  # left free after a download, for logs, snapshots and unpacking


class _Refused(Exception):  # noqa: N818 - not an error of ours, a way out of a callback
    """Raised inside Tornado's callbacks to abandon a body; carries the answer to give."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def no_space(what: str, needed: int, free: int) -> ApiError:
    return ApiError(
        507,
        "InsufficientStorageException",
        f"Not enough disk space for {what}: it needs {needed} bytes, "
        f"{max(0, free)} are free (keeping {DISK_MARGIN >> 20} MiB spare)",
    )


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free - DISK_MARGIN


def _check_hop(url: str, allowed_urls: list[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise bad_request(f"Refused to follow a redirect to {url}: only http(s) is downloaded")
    check_path(url, parts.path)
    if not allowed(url, allowed_urls):
        raise bad_request(
            f"Refused to follow a redirect to {url}: it does not match any allowed URL(s)"
        )


async def download(
    url: str, store: Path, allowed_urls: list[str], max_size: int, timeout: float
) -> Path:
    """Fetch an allowed `url` into `store`; the archive keeps the URL's file name."""
    name = archive_name(url, urlsplit(url).path)
    target = store / name
    if target.exists():
        raise ApiError(
            409, "ConflictStatusException", f"Model file {name} already exists in the model store"
        )
    fd, part = tempfile.mkstemp(dir=store, prefix=f".{name[:100]}.", suffix=".part")
    deadline = time.monotonic() + timeout
    client = SimpleAsyncHTTPClient(force_instance=True, max_body_size=1 << 62)
    try:
        with os.fdopen(fd, "wb") as out:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _timed_out(url, timeout)
                out.seek(0)
                out.truncate()
                resp = await _fetch(client, current, out, store, max_size, left)
                if resp.code in REDIRECTS and resp.headers.get("Location"):
                    nxt = urljoin(current, resp.headers["Location"])
                    _check_hop(nxt, allowed_urls)
                    current = nxt
                    continue
                if resp.code != 200:
                    raise bad_request(
                        f"Failed to download archive from: {url}: the server answered "
                        f"{resp.code} {resp.reason}"
                    )
                break
            else:
                raise bad_request(
                    f"Failed to download archive from: {url}: more than {MAX_REDIRECTS} redirects"
                )
        try:
            os.link(part, target)
        except FileExistsError:
            raise ApiError(
                409,
                "ConflictStatusException",
                f"Model file {name} already exists in the model store",
            ) from None
        return target
    finally:
        client.close()
        Path(part).unlink(missing_ok=True)


def _timed_out(url: str, timeout: float) -> ApiError:
    return bad_request(
        f"Failed to download archive from: {url}: no complete answer within {timeout:g} s "
        "(download_timeout)"
    )


async def _fetch(
    client: SimpleAsyncHTTPClient,
    url: str,
    out: object,
    store: Path,
    max_size: int,
    timeout: float,
) -> HTTPResponse:
    """One hop: the answer's status and headers; a 200's body streamed into `out`."""
    state = {"status": 0, "size": 0}
    refused: list[ApiError] = []  # Tornado may report a refusal as "Connection closed"

    def refuse(error: ApiError) -> _Refused:
        refused.append(error)
        return _Refused(error)

    def on_header(line: str) -> None:
        if line.startswith("HTTP/"):
            state["status"] = int(line.split()[1])
            return
        name, _, value = line.partition(":")
        if state["status"] != 200 or name.strip().lower() != "content-length":
            return
        value = value.strip()
        if value.isdigit() and int(value) > max_size:
            raise refuse(_too_large(url, max_size, int(value)))
        if value.isdigit() and int(value) > free_bytes(store):
            raise refuse(no_space(f"the archive at {url}", int(value), free_bytes(store)))

    def on_chunk(chunk: bytes) -> None:
        if state["status"] != 200:
            return  # a redirect's or an error's body: not the archive
        state["size"] += len(chunk)
        if state["size"] > max_size:
            raise refuse(_too_large(url, max_size))
        try:
            out.write(chunk)  # type: ignore[attr-defined]
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise refuse(no_space(f"the archive at {url}", state["size"], 0)) from None
            raise

    request = HTTPRequest(
        url,
        follow_redirects=False,
        request_timeout=timeout,
        connect_timeout=min(timeout, 30.0),
        header_callback=on_header,
        streaming_callback=on_chunk,
        decompress_response=False,
    )
    try:
        # raise_error=False still raises what is not an HTTP status: a refusal from the
        # callbacks above, a timeout, a refused or reset connection
        resp = await asyncio.wait_for(client.fetch(request, raise_error=False), timeout + 1)
    except (asyncio.TimeoutError, HTTPTimeoutError):
        raise _timed_out(url, timeout) from None
    except Exception as e:  # noqa: BLE001 - any failure to fetch is the URL's, told as a 400
        if refused:
            raise refused[0] from None
        raise bad_request(f"Failed to download archive from: {url}: {e}") from None
    if refused:
        raise refused[0]
    return resp


def _too_large(url: str, limit: int, declared: int | None = None) -> ApiError:
    size = f"declares {declared} bytes" if declared is not None else "is larger"
    return ApiError(
        413,
        "RequestEntityTooLarge",
        f"The archive at {url} {size} than max_archive_size allows ({limit} bytes)"
        if declared is None
        else f"The archive at {url} {size}, over max_archive_size ({limit} bytes)",
    )
