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
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("jupyter_torchserve.engine")

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


class FrameLink(asyncio.Protocol):
    """The engine's side: frames are decoded in `data_received` and handed to `on_frame`
    synchronously, so a worker's answer reaches its client in the same event-loop turn
    (a StreamReader task costs two more turns per answer).

    The first frame (the worker's hello) goes to `on_hello`, which attaches the link to a
    worker by setting `on_frame`/`on_lost`, or closes it.
    """

    def __init__(self, on_hello: Callable[[FrameLink, dict[str, Any]], None]) -> None:
        self.on_hello = on_hello
        self.on_frame: Callable[[dict[str, Any], memoryview], None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.broken = False  # closed because the peer sent a frame that cannot be decoded
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        try:
            while len(buf) - start >= PREFIX.size:
                hlen, plen = PREFIX.unpack_from(buf, start)
                if hlen > MAX_HEADER:
                    raise ValueError(f"frame header of {hlen} bytes is too large")
                end = start + PREFIX.size + hlen + plen
                if len(buf) < end:
                    break
                body = start + PREFIX.size
                header = json.loads(buf[body : body + hlen])
                payload = memoryview(bytes(buf[body + hlen : end])) if plen else _EMPTY
                start = end
                if self.on_frame is not None:
                    self.on_frame(header, payload)
                else:
                    self.on_hello(self, header)
        except ValueError as e:  # garbled: nothing after it can be trusted either
            log.error("closing a worker connection after an undecodable frame: %s", e)
            self.broken = True
            self.close()
        finally:
            del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.on_lost is not None:
            self.on_lost()

    def send(self, buffers: list[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(buffers)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()


_EMPTY = memoryview(b"")


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

    def poll(self, seconds: float) -> bool:
        """Spin until a frame starts to arrive (or EOF), for at most `seconds`; True if it did.

        Called after an answer, when the engine said a CPU is free: the next batch of a busy
        client usually arrives within a few hundred µs, and catching it without having slept
        saves the wake-up (see engine/busypoll.py for why that is worth a CPU).
        """
        peek = self.sock.recv
        flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            try:
                peek(1, flags)  # data or EOF: either way read_frame will not block
                return True
            except BlockingIOError:
                pass
        return False

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
