"""Length-prefixed frames between the engine and its workers.

One frame per message: `!II` (header length, payload length), a compact JSON header, then the
raw payload. Request and response bodies travel in the payload and are located by (offset,
length) in the header, so an image is never base64-encoded, JSON-escaped or copied per field;
each side does one read of the prefix and one read of the rest (TorchServe's worker does
dozens of small `recv` calls per request, see docs/performance.md).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

PREFIX = struct.Struct("!II")
MAX_HEADER = 64 * 1024 * 1024

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(header: dict[str, Any], payload: bytes | list[bytes] = b"") -> list[bytes]:
    """A frame as a list of buffers, ready for `writelines`/`sendmsg` without joining."""
    head = _dumps(header).encode()
    if isinstance(payload, list):
        size = sum(len(p) for p in payload)
        return [PREFIX.pack(len(head), size), head, *payload]
    return [PREFIX.pack(len(head), len(payload)), head, payload]


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], memoryview]:
    prefix = await reader.readexactly(PREFIX.size)
    hlen, plen = PREFIX.unpack(prefix)
    if hlen > MAX_HEADER:
        raise ValueError(f"frame header of {hlen} bytes is too large")
    data = await reader.readexactly(hlen + plen)
    view = memoryview(data)
    return json.loads(view[:hlen].tobytes()), view[hlen:]


class SyncConnection:
    """The worker's side: a blocking socket with whole-frame reads and writes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def _recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if k == 0:
                raise EOFError("engine closed the connection")
            got += k
        return buf

    def read_frame(self) -> tuple[dict[str, Any], memoryview]:
        hlen, plen = PREFIX.unpack(self._recv_exact(PREFIX.size))
        data = self._recv_exact(hlen + plen)
        view = memoryview(data)
        return json.loads(bytes(view[:hlen])), view[hlen:]

    def send(self, header: dict[str, Any], payload: bytes | list[bytes] = b"") -> None:
        buffers = encode(header, payload)
        total = sum(len(b) for b in buffers)
        if total <= 256 * 1024:
            # one syscall; the copy of a small frame costs less than a second write
            self.sock.sendall(b"".join(buffers))
        else:
            for buf in buffers:
                self.sock.sendall(buf)
