"""The HTTP/1.1 server of the engine's three ports: an asyncio Protocol with httptools' C parser.

Why not Tornado's own HTTPServer here: profiling a near-free model at one connection showed
Tornado's IOStream and pure-Python HTTP/1 parsing plus a RequestHandler per request taking
the largest share of the engine's busy time (docs/performance.md, "Where the engine's time
goes at c=1"). This server parses with httptools (llhttp, the parser behind Node.js and
uvicorn) and gives each complete request to a *router* (routes.make_router): the hot routes
answer straight from the parsed request (fastpath.py); every other request is replayed into
the same Tornado Application, through `TornadoConnection`, Tornado's `HTTPConnection`
interface, so all other routes keep their handlers unchanged.

Requests on one connection are answered strictly in order (HTTP/1.1 pipelining); a body is
read whole before its request is dispatched, and refused with 413 as soon as its declared or
running size passes `max_request_size`. A request line plus headers over `MAX_HEADER_BYTES`,
or more than `MAX_HEADERS` header fields, is refused with 431.

All three ports are served here (engine/app.py): the management and metrics ports with a
router that declines everything, so only their malformed requests are answered by this
module, as JSON errors like the inference port's, never Tornado's empty-body 400.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import time
from collections.abc import Callable
from ssl import SSLContext
from typing import Any

import httptools
from tornado import httputil, web

from ..errors import ApiError, unexpected_error

log = logging.getLogger("jupyter_torchserve.engine")

MAX_HEADER_BYTES = 64 * 1024  # Tornado's default max_header_size (request line + headers)
# header fields a request may have: each costs a dict entry and a Tornado HTTPHeaders entry,
# and 64 KiB of one-byte headers would be ~10,000 of them; Apache's LimitRequestFields is 100
MAX_HEADERS = 100
MAX_PIPELINED = 16  # complete requests buffered behind the one being answered


class Request:
    """One parsed request. Header names keep their case; `headers` is looked up lower-case."""

    __slots__ = (
        "method",
        "target",
        "version",
        "raw_headers",
        "headers",
        "body",
        "keep_alive",
        "too_large",
        "size",
    )

    def __init__(self) -> None:
        self.method = ""
        self.target = ""
        self.version = "HTTP/1.1"
        self.raw_headers: list[tuple[str, str]] = []
        self.headers: dict[str, str] = {}
        self.body = b""
        self.keep_alive = True
        self.too_large = False
        self.size = 0

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


Router = Callable[["Connection", Request], bool]
"""Answers a request itself (returns True) or leaves it to Tornado (False)."""


class _Date:
    """The `Date` header, formatted once a second rather than per response."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.value = t, httputil.format_timestamp(t)
        return cls.value


def _header_value(text: str) -> bytes:
    if "\r" in text or "\n" in text:
        raise ValueError(f"header {text[:40]!r} contains a line break")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {text[:40]!r} is not Latin-1") from None


def status_line(status: int, reason: str | None = None) -> bytes:
    return f"HTTP/1.1 {status} {httputil.responses.get(status) or reason or 'Unknown'}\r\n".encode()


class Connection(asyncio.Protocol):
    """One client connection. `current` is the request being answered; answers go through
    `respond`/`start_chunks` (router) or `TornadoConnection` (everything else)."""

    def __init__(
        self,
        app: web.Application,
        router: Router,
        max_request_size: Callable[[], int],
        on_response: Callable[[int], None],
    ) -> None:
        self.app = app
        self.router = router
        self.max_request_size = max_request_size
        self.on_response = on_response
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: collections.deque[Request] = collections.deque()
        self.current: Request | None = None
        self.on_lost: Callable[[], None] | None = None  # what the current answer does on hang-up
        self._incoming: Request | None = None
        self._url = bytearray()
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._dispatching = False
        self._paused_reading = False
        self._write_paused = False
        self._drained: list[asyncio.Future[None]] = []
        self._refusal: tuple[int, str] | None = None
        self._head_sent = False  # the current answer's status line is written
        self._eof = False  # the client half-closed: answer what is complete, then close
        self._closing = False  # the engine is stopping: answer what is here, then close
        self._probes: list[asyncio.TimerHandle] = []
        self.context = _Context("http", "127.0.0.1")
        self.last_active = time.monotonic()
        self.on_closed: Callable[[Connection], None] | None = None

    # -- transport events -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        if isinstance(peer, tuple) and peer:
            self.context = _Context(scheme, str(peer[0]))

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "Protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            # a callback's exception comes back wrapped, with the original as its context
            if not isinstance(e.__context__, _Refused):
                self._refuse(400, f"Malformed HTTP request: {e}")

    def eof_received(self) -> bool | None:
        """The client sent FIN. Nothing pending: close, as before. Complete requests still to
        answer: a half-close (`shutdown(SHUT_WR)`, as `nc -N` and some batch clients do)
        and a full close look the same here, so keep the write side open and ask the
        socket (`_probe_peer`); a client that really went away is then dropped as a hang-up
        (499, its queued work withdrawn) and a half-closed one gets its answers.
        TLS is left as it was: asyncio's SSL transport cannot stay half-open."""
        self._incoming = None  # a request cut off by the FIN can never complete
        self._body = []
        if self.transport is None or self.transport.get_extra_info("sslcontext") is not None:
            return None
        if self.current is None and not self.queue:
            return None
        self._eof = True
        self._probe_peer()
        return True

    def _probe_peer(self) -> None:
        """Tell a full close from a half-close: TCP says which only when we send. An HTTP/1.1
        client must accept an interim 1xx before the answer (RFC 9110 15.2), so an answer
        not yet begun is preceded by `100 Continue`; a closed socket replies to it with a
        reset, which the checks below see (`_peer_gone`) within a round trip. An answer
        already being written probes by itself; HTTP/1.0 cannot be sent a 1xx, so its
        client is told apart only when its answer cannot be written."""
        req = self.current
        if req is not None and req.version == "HTTP/1.1" and not self._head_sent:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        loop = asyncio.get_running_loop()
        self._probes = [loop.call_later(delay, self._check_peer) for delay in PROBE_SECONDS]

    def close_when_done(self) -> None:
        """The engine is stopping: answer the requests already received (the last answer
        says `Connection: close`), then close; an idle connection closes now."""
        self._closing = True
        if self.current is None and not self.queue and self.transport is not None:
            self.transport.close()

    def _last_answer(self, req: Request) -> bool:
        return not req.keep_alive or (self._closing and not self.queue)

    def _check_peer(self) -> None:
        if self.transport is not None and _peer_gone(self.transport):
            self.transport.abort()  # connection_lost: the answer in progress hears of it

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for probe in self._probes:
            probe.cancel()
        self.queue.clear()
        if self.on_closed is not None:
            self.on_closed(self)
        for fut in self._drained:
            if not fut.done():
                fut.set_result(None)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for fut in self._drained:
            if not fut.done():
                fut.set_result(None)
        self._drained.clear()

    def drained(self) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        if self._write_paused and self.transport is not None:
            self._drained.append(fut)
        else:
            fut.set_result(None)
        return fut

    # -- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._incoming = Request()
        self._url.clear()
        self._header_bytes = 0
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header(len(name) + len(value))
        req = self._incoming
        assert req is not None
        if len(req.raw_headers) >= MAX_HEADERS:
            self._refuse(431, f"Request has more than {MAX_HEADERS} header fields")
            raise _Refused
        n, v = name.decode("latin-1"), value.decode("latin-1")
        req.raw_headers.append((n, v))
        key = n.lower()
        req.headers[key] = f"{req.headers[key]},{v}" if key in req.headers else v

    def on_headers_complete(self) -> None:
        req = self._incoming
        assert req is not None
        p = self.parser
        req.method = p.get_method().decode("ascii")
        req.target = self._url.decode("latin-1")
        req.version = f"HTTP/{p.get_http_version()}"
        req.keep_alive = p.should_keep_alive()
        length = req.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_request_size():
            req.too_large = True
            req.size = int(length)
            if self.current is None and not self.queue:
                self._answer_too_large(req)  # nothing before it: say so before the upload
                raise _Refused
        elif req.headers.get("expect", "").lower() == "100-continue" and self.current is None:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        req = self._incoming
        assert req is not None
        if req.too_large:
            return
        req.size += len(body)
        if req.size > self.max_request_size():
            req.too_large = True
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._incoming
        assert req is not None
        self._incoming = None
        if not req.too_large:
            req.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self.queue.append(req)
        if len(self.queue) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self._paused_reading = True
        self._next()

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "Request header fields too large")
            raise _Refused

    # -- request cycle --------------------------------------------------------------------
    def _next(self) -> None:
        if self._dispatching:
            return  # the loop below picks it up
        self._dispatching = True
        try:
            while self.current is None and self.queue and self.transport is not None:
                req = self.current = self.queue.popleft()
                if self._paused_reading and len(self.queue) <= MAX_PIPELINED // 2:
                    self.transport.resume_reading()
                    self._paused_reading = False
                self._dispatch(req)
        finally:
            self._dispatching = False

    def _dispatch(self, req: Request) -> None:
        if req.too_large:
            self._answer_too_large(req)
            return
        try:
            if self.router(self, req):
                return
        except Exception as e:  # noqa: BLE001 - a router bug must still produce an answer
            log.exception("error routing %s %s", req.method, req.target)
            self.respond_error(unexpected_error(e))
            return
        asyncio.ensure_future(TornadoConnection(self, req).run())

    def done(self, status: int | None) -> None:
        """The current answer is complete: count it (None: its handler counted it), then
        close or take the next request."""
        req = self.current
        self.current = None
        self.on_lost = None
        self._head_sent = False
        self.last_active = time.monotonic()
        if status is not None:
            self.on_response(status)
        if self._refusal is not None:
            self._refuse(*self._refusal)
            return
        if req is not None and self._last_answer(req) and self.transport is not None:
            self.transport.close()
            return
        self._next()
        if self._eof and self.current is None and not self.queue and self.transport is not None:
            self.transport.close()  # half-closed: nothing more can come

    # -- answers for routers --------------------------------------------------------------
    def respond(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        """Write a whole answer. Raises ValueError, having written nothing, for a header that
        cannot be sent (CR/LF in it: response splitting; not Latin-1)."""
        req = self.current
        assert req is not None
        head = [
            status_line(status, reason),
            b"Content-Type: ",
            _header_value(content_type),
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\nDate: ",
            _Date.now().encode(),
        ]
        if headers:
            for k, v in headers.items():
                head += (b"\r\n", _header_value(k), b": ", _header_value(v))
        if self._last_answer(req):
            head.append(b"\r\nConnection: close")
        elif req.version == "HTTP/1.0":
            head.append(b"\r\nConnection: Keep-Alive")
        head.append(b"\r\n\r\n")
        if req.method != "HEAD":
            head.append(body)
        self._head_sent = True
        self._write(b"".join(head))
        self.done(status)

    def respond_error(
        self,
        err: ApiError,
        headers: dict[str, str] | None = None,
        body: Callable[[ApiError, bool], dict[str, Any]] = ApiError.to_json,
        with_traceback: bool = False,
    ) -> None:
        """The JSON error answer; `body` shapes it (KServe v2 adds OIP's "error"), with the
        worker's traceback only for the owner (errors.ApiError says why)."""
        text = json.dumps(body(err, with_traceback), indent=2).encode()
        self.respond(err.status, "application/json", text, headers)

    def start_chunks(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        """Begin a streamed answer (Transfer-Encoding: chunked); end it with `end_chunks`."""
        head = [
            status_line(status),
            b"Content-Type: ",
            _header_value(content_type),
            b"\r\nTransfer-Encoding: chunked\r\nDate: ",
            _Date.now().encode(),
        ]
        for k, v in headers.items():
            head += (b"\r\n", _header_value(k), b": ", _header_value(v))
        req = self.current
        if req is not None and self._last_answer(req):
            head.append(b"\r\nConnection: close")
        head.append(b"\r\n\r\n")
        self._head_sent = True
        self._write(b"".join(head))

    def chunk(self, data: bytes) -> None:
        if data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunks(self, status: int) -> None:
        self._write(b"0\r\n\r\n")
        self.done(status)

    # -- helpers --------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _answer_too_large(self, req: Request) -> None:
        limit = self.max_request_size()
        err = ApiError(
            413,
            "RequestEntityTooLarge",
            f"Request body of {req.size} bytes exceeds max_request_size ({limit} bytes)"
            if req.headers.get("content-length", "").isdigit()
            else f"Request body exceeds max_request_size ({limit} bytes)",
        )
        # the rest of the upload is not read: the connection cannot be reused
        req.keep_alive = False
        self.current = req
        self.respond_error(err)

    def _refuse(self, status: int, message: str) -> None:
        """A request that cannot be parsed: answer it (after any before it) and close."""
        if self.transport is None:
            return
        self.transport.pause_reading()
        self.queue.clear()
        if self.current is not None:
            self._refusal = (status, message)  # an earlier request's answer comes first
            return
        self._refusal = None
        req = self.current = Request()  # the request that could not be read
        req.keep_alive = False  # so done() closes the connection after the answer
        self.respond_error(ApiError(status, "BadRequestException", message))


# when a half-closed connection's socket is asked whether the client is still there: a
# reset to the probe comes back within a round trip (microseconds on loopback)
PROBE_SECONDS = (0.05, 0.5, 2.0)
_TCP_CLOSE = 7  # linux/tcp_states.h


def _peer_gone(transport: asyncio.BaseTransport) -> bool:
    """Whether the peer reset the connection: a pending socket error, or (Linux) the TCP
    state gone from CLOSE_WAIT to CLOSE."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return True
        if hasattr(socket, "TCP_INFO"):
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE
    except OSError:
        return True
    return False


class _Refused(Exception):
    """Stop feeding the parser: the request was answered and the connection is closing.
    (httptools re-raises it as an HttpParserCallbackError.)"""


class _Context:
    """What Tornado's HTTPServerRequest reads from `connection.context`."""

    def __init__(self, protocol: str, remote_ip: str) -> None:
        self.protocol = protocol
        self.remote_ip = remote_ip

    def __str__(self) -> str:
        return self.remote_ip


class TornadoConnection(httputil.HTTPConnection):
    """Tornado's `HTTPConnection` for one already-read request, so an Application's
    handlers answer it as they would under Tornado's HTTPServer (same status lines, chunking
    and keep-alive rules as `tornado.http1connection.HTTP1Connection`)."""

    def __init__(self, conn: Connection, req: Request) -> None:
        self.conn = conn
        self.req = req
        self.context = conn.context
        self._close_callback: Callable[[], None] | None = None
        self._chunking = False
        self._finished = False

    async def run(self) -> None:
        conn, req = self.conn, self.req
        conn.on_lost = self._on_lost
        headers = httputil.HTTPHeaders()
        for name, value in req.raw_headers:
            headers.add(name, value)
        # Tornado needs Host on HTTP/1.1 and knows no HTTP/0.9 (a bare "GET /x"): 1.0 for it
        version = "HTTP/1.0" if req.version == "HTTP/0.9" else req.version
        start = httputil.RequestStartLine(req.method, req.target, version)
        delegate = conn.app.start_request(conn, self)
        try:
            waiting = delegate.headers_received(start, headers)
            if waiting is not None:
                await waiting
            if not self._finished:
                if req.body:
                    waiting = delegate.data_received(req.body)
                    if waiting is not None:
                        await waiting
                delegate.finish()
        except httputil.HTTPInputError as e:  # e.g. "Missing Host header": the client's
            if not self._finished:
                conn.respond_error(ApiError(400, "BadRequestException", f"Bad request: {e}"))
                self._finished = True
        except Exception:  # noqa: BLE001 - Tornado logged it; the client still gets an answer
            log.exception("error handling %s %s", req.method, req.target)
            if not self._finished:
                conn.respond_error(ApiError(500, "InternalServerException", "Internal error"))
                self._finished = True

    def _on_lost(self) -> None:
        callback, self._close_callback = self._close_callback, None
        if callback is not None:
            callback()

    # -- tornado.httputil.HTTPConnection --------------------------------------------------
    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        req = self.req
        code = start_line.code
        self._chunking = (
            req.version == "HTTP/1.1"
            and req.method != "HEAD"
            and code not in (204, 304)
            and not 100 <= code < 200
            and "Content-Length" not in headers
        )
        last = self.conn._last_answer(req)
        if last and (req.version == "HTTP/1.1" or req.keep_alive):
            headers["Connection"] = "close"
        elif req.version == "HTTP/1.0" and req.keep_alive:
            headers["Connection"] = "Keep-Alive"
        if self._chunking:
            headers["Transfer-Encoding"] = "chunked"
        lines = [f"HTTP/1.1 {code} {start_line.reason}"]
        lines += [f"{n}: {v}" for n, v in headers.get_all()]
        data = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
        if chunk and req.method != "HEAD":
            data += self._format(chunk)
        self.conn._head_sent = True
        self.conn._write(data)
        return self.conn.drained()

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if chunk and self.req.method != "HEAD":
            self.conn._write(self._format(chunk))
        return self.conn.drained()

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._chunking:
            self.conn._write(b"0\r\n\r\n")
        self.conn.done(None)  # Tornado's handler counted its answer (on_finish)

    def _format(self, chunk: bytes) -> bytes:
        if self._chunking:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk)
        return chunk


# Tornado's idle_connection_timeout: keep-alive connections are not kept forever
IDLE_SECONDS = 3600.0


class HTTP1Server:
    """The listening socket plus a sweep that closes connections idle for `idle_seconds`
    (no request being read or answered, no bytes received), as Tornado's HTTPServer does."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.connections: set[Connection] = set()
        self.server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            # a half-sent request with nothing more for that long counts as idle too
            idle = conn.current is None and not conn.queue
            if idle and now - conn.last_active > self.idle_seconds and conn.transport is not None:
                conn.transport.close()
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(60.0, self.idle_seconds / 4), self._sweep)

    def _stop_listening(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            self.server.close()

    async def drain(self, timeout: float) -> None:
        """Stop: take no new connection, let each open one answer the requests it has
        (`Connection.close_when_done`), and close whatever is still open after `timeout`
        seconds. A stop must not cut off an answer being computed (uvicorn's graceful
        shutdown does the same)."""
        self._stop_listening()
        for conn in list(self.connections):
            conn.close_when_done()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.close()

    def close(self) -> None:
        """Stop now: every connection is closed, answered or not."""
        self._stop_listening()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


async def serve_http1(
    app: web.Application,
    router: Router,
    host: str,
    port: int,
    max_request_size: Callable[[], int],
    on_response: Callable[[int], None],
    idle_seconds: float = IDLE_SECONDS,
    ssl: SSLContext | None = None,
) -> HTTP1Server:
    """Listen like Tornado's `HTTPServer.listen` (SO_REUSEADDR, backlog 128); TLS when `ssl`
    is given (asyncio's SSL transport: the protocol is the same)."""
    loop = asyncio.get_running_loop()
    server = HTTP1Server(idle_seconds)

    def factory() -> Connection:
        conn = Connection(app, router, max_request_size, on_response)
        conn.on_closed = server.connections.discard
        server.connections.add(conn)
        return conn

    server.server = await loop.create_server(
        factory, host=host or None, port=port, reuse_address=True, backlog=128, ssl=ssl
    )
    server._schedule()
    return server
