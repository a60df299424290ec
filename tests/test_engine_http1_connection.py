"""The inference port's HTTP/1.1 connection (`http/http1.py`) on a mock transport, the way
uvicorn tests its protocols: pipelining, `Expect: 100-continue`, 413, malformed input and
hang-ups, byte for byte. No socket and no process: fast tier."""

from __future__ import annotations

import asyncio
import json

from tornado import web

from jupyter_torchserve.engine.http.http1 import Connection, Request


class _Transport:
    """What an asyncio transport gives a Protocol, recording what the server does."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "wrote after close"
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 5555) if name == "peername" else default


class _Hello(web.RequestHandler):
    def get(self) -> None:
        self.finish("hello from tornado")


def _connection(router, max_size: int = 1024) -> tuple[Connection, _Transport, list[int]]:
    counted: list[int] = []
    conn = Connection(
        web.Application([("/tornado", _Hello)]), router, lambda: max_size, counted.append
    )
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, counted


def _responses(data: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Split what the server wrote into (status line, headers, body), by Content-Length."""
    out = []
    rest = bytes(data)
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        n = int(headers.get("content-length", 0))
        out.append((lines[0], headers, rest[:n]))
        rest = rest[n:]
    return out


def _echo(conn: Connection, req: Request) -> bool:
    conn.respond(200, "text/plain", f"{req.method} {req.target} {req.body!r}".encode())
    return True


def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    """Three requests in one packet: the second is not looked at before the first is
    answered (even when that answer comes later), and the answers come out in order."""

    async def scenario() -> tuple[list[str], bytes]:
        seen: list[str] = []
        loop = asyncio.get_running_loop()

        def router(conn: Connection, req: Request) -> bool:
            seen.append(req.target)
            if req.target == "/slow":
                loop.call_later(0.01, conn.respond, 200, "text/plain", b"slow")
                return True
            return _echo(conn, req)

        conn, transport, counted = _connection(router)
        conn.data_received(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert seen == ["/slow"]  # the others wait their turn
        await asyncio.sleep(0.05)
        assert counted == [200, 200, 200]
        return seen, bytes(transport.data)

    seen, data = asyncio.run(scenario())
    assert seen == ["/slow", "/a", "/b"]
    assert [r[2] for r in _responses(data)] == [b"slow", b"POST /a b'abc'", b"GET /b b''"]


def test_requests_the_router_declines_are_answered_by_tornado_in_turn():
    async def scenario() -> bytes:
        conn, transport, _ = _connection(
            lambda conn, req: req.target != "/tornado" and _echo(conn, req)
        )
        conn.data_received(
            b"GET /tornado HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        for _ in range(50):
            await asyncio.sleep(0.01)
            if b"GET /b" in transport.data:
                break
        return bytes(transport.data)

    answers = _responses(asyncio.run(scenario()))
    assert [a[0] for a in answers] == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"]
    assert answers[0][2] == b"hello from tornado" and answers[1][2] == b"GET /b b''"


def test_a_stopping_engine_answers_what_it_received_then_closes():
    """`close_when_done` (the engine stopping): the request being answered and the ones
    pipelined behind it still get their answers, on either path; the last says
    `Connection: close`, then the connection closes. An idle one closes at once."""

    async def scenario() -> tuple[bytes, bool]:
        loop = asyncio.get_running_loop()

        def router(conn: Connection, req: Request) -> bool:
            if req.target == "/slow":
                loop.call_later(0.02, conn.respond, 200, "text/plain", b"slow")
                return True
            return req.target != "/tornado" and _echo(conn, req)

        conn, transport, _ = _connection(router)
        conn.data_received(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /tornado HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        conn.close_when_done()
        assert not transport.closed  # /slow is being answered
        for _ in range(50):
            await asyncio.sleep(0.01)
            if transport.closed:
                break
        idle, idle_transport, _ = _connection(router)
        idle.close_when_done()
        return bytes(transport.data), transport.closed and idle_transport.closed

    data, closed = asyncio.run(scenario())
    answers = _responses(data)
    assert [a[2] for a in answers] == [b"slow", b"GET /b b''", b"hello from tornado"]
    assert [a[1].get("connection") for a in answers] == [None, None, "close"]
    assert closed


def test_expect_100_continue_is_answered_before_the_body():
    """curl sends `Expect: 100-continue` for uploads over 1 KiB and waits for it."""

    async def scenario() -> None:
        conn, transport, _ = _connection(_echo)
        conn.data_received(
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert bytes(transport.data) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.data_received(b"data")
        head, _, body = bytes(transport.data).partition(b"\r\n\r\n")[2].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and body == b"POST /up b'data'"

    asyncio.run(scenario())


def test_a_declared_body_over_max_request_size_is_refused_before_it_is_sent():
    """413 with TorchServe's JSON as soon as the headers say so; the upload is not read, so
    the connection cannot be reused and is closed."""

    async def scenario() -> None:
        routed: list[Request] = []
        conn, transport, counted = _connection(lambda c, r: routed.append(r) or _echo(c, r), 10)
        conn.data_received(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        ((status, headers, body),) = _responses(bytes(transport.data))
        assert status == "HTTP/1.1 413 Request Entity Too Large"
        assert headers["connection"] == "close" and transport.closed
        err = json.loads(body)
        assert err["code"] == 413 and err["type"] == "RequestEntityTooLarge"
        assert "11 bytes exceeds max_request_size (10 bytes)" in err["message"]
        assert routed == [] and counted == [413]  # one answer, counted once

    asyncio.run(scenario())


def test_a_chunked_body_that_grows_past_max_request_size_is_refused():
    async def scenario() -> None:
        routed: list[Request] = []
        conn, transport, _ = _connection(lambda c, r: routed.append(r) or _echo(c, r), 10)
        conn.data_received(
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
        )
        ((status, _, body),) = _responses(bytes(transport.data))
        assert status == "HTTP/1.1 413 Request Entity Too Large" and transport.closed
        assert "exceeds max_request_size (10 bytes)" in json.loads(body)["message"]
        assert routed == []

    asyncio.run(scenario())


def test_malformed_input_gets_a_400_after_the_answers_before_it_then_the_connection_closes():
    async def scenario() -> None:
        conn, transport, _ = _connection(_echo)
        conn.data_received(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        ok, bad = _responses(bytes(transport.data))
        assert ok[0] == "HTTP/1.1 200 OK" and ok[2] == b"GET /ok b''"
        assert bad[0] == "HTTP/1.1 400 Bad Request" and transport.closed
        err = json.loads(bad[2])
        assert err["type"] == "BadRequestException"
        assert err["message"].startswith("Malformed HTTP request")

    asyncio.run(scenario())


def test_a_malformed_request_behind_a_pending_answer_waits_for_it():
    async def scenario() -> None:
        held: list[Connection] = []
        conn, transport, _ = _connection(lambda c, r: held.append(c) or True)
        conn.data_received(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01garbage\r\n\r\n")
        assert transport.data == b"" and not transport.closed  # the first answer comes first
        held[0].respond(200, "text/plain", b"held")
        first, bad = _responses(bytes(transport.data))
        assert first[2] == b"held" and bad[0] == "HTTP/1.1 400 Bad Request"
        assert transport.closed

    asyncio.run(scenario())


def test_oversized_headers_are_refused_with_431():
    async def scenario() -> None:
        conn, transport, counted = _connection(_echo)
        conn.data_received(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (65 * 1024) + b"\r\n\r\n")
        ((status, _, _),) = _responses(bytes(transport.data))
        assert status == "HTTP/1.1 431 Request Header Fields Too Large" and transport.closed
        assert counted == [431]  # one answer, counted once

    asyncio.run(scenario())


def test_too_many_header_fields_are_refused_with_a_json_431():
    """100 header fields are served; the 101st refuses the request before the router sees
    it, with a JSON body, and the connection closes."""

    async def scenario() -> None:
        conn, transport, counted = _connection(_echo)
        fields = b"".join(b"X-H%d: v\r\n" % i for i in range(100))
        conn.data_received(b"GET /ok HTTP/1.1\r\n" + fields + b"\r\n")
        ((status, _, body),) = _responses(bytes(transport.data))
        assert status == "HTTP/1.1 200 OK" and body.startswith(b"GET /ok")
        transport.data.clear()
        conn.data_received(b"GET /no HTTP/1.1\r\n" + fields + b"X-One-More: v\r\n\r\n")
        ((status, headers, body),) = _responses(bytes(transport.data))
        assert status == "HTTP/1.1 431 Request Header Fields Too Large"
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {
            "code": 431,
            "type": "BadRequestException",
            "message": "Request has more than 100 header fields",
        }
        assert transport.closed and counted == [200, 431]

    asyncio.run(scenario())


def test_keep_alive_rules_of_http_1_0_and_connection_close():
    async def scenario() -> None:
        conn, transport, _ = _connection(_echo)
        conn.data_received(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        ((_, headers, _),) = _responses(bytes(transport.data))
        assert headers["connection"] == "Keep-Alive" and not transport.closed
        transport.data.clear()
        conn.data_received(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ((_, headers, _),) = _responses(bytes(transport.data))
        assert headers["connection"] == "close" and transport.closed

    asyncio.run(scenario())


def test_a_hang_up_tells_the_answer_in_progress_and_drops_the_queue():
    async def scenario() -> None:
        lost: list[str] = []
        routed: list[str] = []

        def router(conn: Connection, req: Request) -> bool:
            routed.append(req.target)
            conn.on_lost = lambda: lost.append(req.target)
            return True

        conn, _, _ = _connection(router)
        conn.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.connection_lost(None)
        assert lost == ["/a"] and routed == ["/a"] and not conn.queue

    asyncio.run(scenario())


def test_a_half_close_after_complete_requests_gets_every_answer_then_the_close():
    """`shutdown(SHUT_WR)` after two pipelined requests: the transport stays open for the
    answers (eof_received says so), the answer not yet begun is preceded by an interim
    `100 Continue` (the probe that tells a closed client apart), and the connection closes
    after the last answer. A FIN with nothing pending closes at once, as before."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def router(conn: Connection, req: Request) -> bool:
            if req.target == "/slow":
                loop.call_later(0.01, conn.respond, 200, "text/plain", b"slow")
                return True
            return _echo(conn, req)

        conn, transport, counted = _connection(router)
        conn.data_received(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert conn.eof_received() is True
        assert bytes(transport.data) == b"HTTP/1.1 100 Continue\r\n\r\n" and not transport.closed
        await asyncio.sleep(0.05)
        answers = _responses(bytes(transport.data))
        assert [a[0] for a in answers] == [
            "HTTP/1.1 100 Continue",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
        ]
        assert [a[2] for a in answers[1:]] == [b"slow", b"GET /b b''"]
        assert transport.closed and counted == [200, 200]

        idle, idle_transport, _ = _connection(_echo)
        idle.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # answered already
        assert idle.eof_received() is None  # asyncio closes the transport

    asyncio.run(scenario())


def test_a_header_with_a_line_break_is_not_written():
    """A handler's header value with CR/LF would split the response: respond refuses it
    having written nothing, so the caller can answer with an error instead."""

    async def scenario() -> None:
        def router(conn: Connection, req: Request) -> bool:
            try:
                conn.respond(200, "text/plain", b"x", {"X-Evil": "a\r\nInjected: yes"})
            except ValueError:
                conn.respond(500, "text/plain", b"refused")
            return True

        conn, transport, _ = _connection(router)
        conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        ((status, headers, body),) = _responses(bytes(transport.data))
        assert status == "HTTP/1.1 500 Internal Server Error" and body == b"refused"
        assert "injected" not in headers

    asyncio.run(scenario())


def test_a_router_that_raises_still_answers_with_a_json_500():
    async def scenario() -> None:
        def router(conn: Connection, req: Request) -> bool:
            raise RuntimeError("router bug")

        conn, transport, counted = _connection(router)
        conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        ((status, _, body),) = _responses(bytes(transport.data))
        assert status == "HTTP/1.1 500 Internal Server Error"
        assert json.loads(body)["message"] == "RuntimeError: router bug" and counted == [500]

    asyncio.run(scenario())
