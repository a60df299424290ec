"""The inference port's HTTP/1.1 as clients use it: keep-alive and pipelining, curl's
`Expect: 100-continue`, chunked uploads, HTTP/1.0, early 413, malformed requests, escaped
model names, headers a handler sees, and hang-ups counted as 499. Raw sockets, so what is
asserted is what goes over the wire."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import requests
from _engine_helpers import manifest, model_store, running_engine, write_mar

pytestmark = pytest.mark.slow  # starts real processes

HEADER_HANDLER = """
import json

def handle(data, context):
    if data is None:
        return None
    for i in range(len(data)):
        evil = context.get_request_header(i, "x-evil")
        if evil:  # a handler echoing request data into a response header
            context.set_response_header(i, "X-Echo", evil.replace("|", "\\r\\n"))
    return [json.dumps(context.get_all_request_header(i)) for i in range(len(data))]
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine-http")
    store = model_store(tmp, "probe")
    write_mar(
        store / "hdr.mar",
        {"hdr_handler.py": HEADER_HANDLER, "d.txt": "x"},
        manifest("hdr", "1.0", "d.txt", "hdr_handler.py"),
    )
    with running_engine(tmp, model_store=str(store), max_request_size=4096) as (info, client):
        client.register("probe-1.0.mar", initial_workers=1)
        client.register("hdr.mar", initial_workers=1)
        host, port = info["inference_address"].removeprefix("http://").split(":")
        yield info, client, (host, int(port))


def _post(path: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _read_response(f) -> tuple[int, dict[str, str], bytes]:
    """One response from a socket file: status, headers (lower-case), de-chunked body."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while (size := int(f.readline().strip(), 16)) > 0:
            body += f.read(size)
            f.readline()
        f.readline()
    else:
        body = f.read()
    return status, headers, body


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_answered_in_order_on_one_connection(engine):
    _, _, addr = engine
    with socket.create_connection(addr, timeout=60) as s:
        wire = b"".join(
            [
                _post("/predictions/probe", json.dumps({"echo": 1, "sleep": 0.3}).encode()),
                b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",  # a Tornado route between fast ones
                _post("/predictions/probe", json.dumps({"echo": 2}).encode()),
                _post("/predictions/nope", b"{}"),
                _post("/predictions/probe", json.dumps({"echo": 3}).encode()),
            ]
        )
        s.sendall(wire)
        f = s.makefile("rb")
        answers = [_read_response(f) for _ in range(5)]
    assert [a[0] for a in answers] == [200, 200, 200, 404, 200]
    assert json.loads(answers[0][2])["echo"] == 1
    assert json.loads(answers[1][2]) == {"status": "Healthy"}
    assert json.loads(answers[2][2])["echo"] == 2
    assert json.loads(answers[3][2])["type"] == "ModelNotFoundException"
    assert json.loads(answers[4][2])["echo"] == 3
    ids = {a[1]["x-request-id"] for a in answers}
    assert len(ids) == 5  # every answer names its own request


def test_expect_100_continue_is_answered_before_the_body(engine):
    _, _, addr = engine
    body = json.dumps({"echo": "after-continue"}).encode()
    with socket.create_connection(addr, timeout=60) as s:
        head = _post("/predictions/probe", b"", "Expect: 100-continue\r\n")
        head = head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
        s.sendall(head)
        f = s.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        s.sendall(body)
        status, _, answer = _read_response(f)
    assert status == 200 and json.loads(answer)["echo"] == "after-continue"


def test_oversize_upload_is_refused_before_it_is_sent_and_engine_keeps_serving(engine):
    _, _, addr = engine
    with socket.create_connection(addr, timeout=60) as s:
        # only the headers go out: the 413 must not wait for 1 MB that never comes
        s.sendall(
            b"POST /predictions/probe HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        )
        f = s.makefile("rb")
        status, headers, body = _read_response(f)
        assert status == 413 and headers.get("connection") == "close"
        err = json.loads(body)
        assert err["type"] == "RequestEntityTooLarge" and "1000000" in err["message"]
        assert _closed(s)
    # a chunked upload (no Content-Length) is refused when its running size passes the limit
    with socket.create_connection(addr, timeout=60) as s:
        chunk = b"x" * 3000
        s.sendall(
            b"POST /predictions/probe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2
            + b"0\r\n\r\n"
        )
        status, _, body = _read_response(s.makefile("rb"))
        assert status == 413 and "4096" in json.loads(body)["message"]
    r = requests.post(engine[0]["inference_address"] + "/predictions/probe", json={"echo": 5})
    assert r.status_code == 200 and r.json()["echo"] == 5


def test_chunked_upload_is_read_whole(engine):
    _, _, addr = engine
    body = json.dumps({"echo": "chunked"}).encode()
    with socket.create_connection(addr, timeout=60) as s:
        s.sendall(
            b"POST /predictions/probe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (5, body[:5])
            + b"%x\r\n%s\r\n" % (len(body) - 5, body[5:])
            + b"0\r\n\r\n"
        )
        status, _, answer = _read_response(s.makefile("rb"))
    assert status == 200 and json.loads(answer)["echo"] == "chunked"


def test_http10_and_connection_close_end_the_connection(engine):
    _, _, addr = engine
    for wire in (
        _post("/predictions/probe", b'{"echo": 10}', version="1.0"),
        _post("/predictions/probe", b'{"echo": 11}', "Connection: close\r\n"),
        b"GET /ping HTTP/1.0\r\n\r\n",
    ):
        with socket.create_connection(addr, timeout=60) as s:
            s.sendall(wire)
            status, _, _ = _read_response(s.makefile("rb"))
            assert status == 200
            assert _closed(s)
    # HTTP/1.0 with keep-alive asked for stays open and says so
    with socket.create_connection(addr, timeout=60) as s:
        f = s.makefile("rb")
        for echo in (12, 13):
            s.sendall(
                _post(
                    "/predictions/probe",
                    b'{"echo": %d}' % echo,
                    "Connection: keep-alive\r\n",
                    "1.0",
                )
            )
            status, headers, body = _read_response(f)
            assert status == 200 and json.loads(body)["echo"] == echo
            assert headers["connection"].lower() == "keep-alive"


def test_malformed_request_is_a_400_and_engine_keeps_serving(engine):
    info, _, addr = engine
    for wire in (
        b"THIS IS NOT HTTP\r\n\r\n",
        b"POST /predictions/probe HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    ):
        with socket.create_connection(addr, timeout=60) as s:
            s.sendall(wire)
            status, headers, body = _read_response(s.makefile("rb"))
            assert status in (400, 431), status
            assert json.loads(body)["code"] == status
            assert _closed(s)
    assert requests.get(info["inference_address"] + "/ping").json() == {"status": "Healthy"}


def test_escaped_model_name_and_url_path_reach_the_model(engine):
    info, _, _ = engine
    base = info["inference_address"]
    r = requests.post(base + "/predictions/pr%6Fbe/1.0", json={"echo": "escaped"})
    assert r.status_code == 200 and r.json()["echo"] == "escaped"
    r = requests.post(base + "/predictions/hdr/1.0/a/b", data=b"x")
    assert r.status_code == 200 and r.json()["url_path"] == "a/b"


def test_handler_sees_request_headers_but_not_credentials(engine):
    info, _, _ = engine
    r = requests.post(
        info["inference_address"] + "/predictions/hdr",
        data=b"x",
        headers={"X-Trace": "abc", "Authorization": "Bearer secret", "Content-Type": "text/plain"},
    )
    assert r.status_code == 200
    seen = r.json()
    assert seen["x-trace"] == "abc" and seen["content-type"] == "text/plain"
    assert "authorization" not in seen and "Bearer secret" not in r.text
    assert re.fullmatch(r"[0-9a-f-]{36}", r.headers["x-request-id"])


def test_hang_up_is_counted_as_499_and_the_next_client_is_served(engine):
    info, _, addr = engine
    metrics = info["metrics_address"] + "/metrics"

    def count_499() -> float:
        text = requests.get(metrics).text
        m = re.search(r'jts_http_responses_total\{api="inference",code="499"\} (\S+)', text)
        return float(m.group(1)) if m else 0.0

    before = count_499()
    v1 = json.dumps({"instances": [{"body": {"sleep": 1}}]}).encode()
    for wire in (
        _post("/predictions/probe", b'{"sleep": 1}'),
        _post("/v1/models/probe:predict", v1),
    ):
        with socket.create_connection(addr, timeout=60) as s:
            s.sendall(wire)
            time.sleep(0.3)  # in the worker now; the client gives up
    deadline = time.time() + 10
    while count_499() < before + 2 and time.time() < deadline:
        time.sleep(0.1)
    assert count_499() == before + 2
    r = requests.post(info["inference_address"] + "/predictions/probe", json={"echo": "next"})
    assert r.status_code == 200 and r.json()["echo"] == "next"


def test_idle_keep_alive_connections_are_closed_but_busy_ones_are_not():
    """Like Tornado's idle_connection_timeout: a keep-alive connection with nothing to do
    is closed after `idle_seconds`; one whose answer is still being prepared is not."""
    import asyncio

    from tornado import web

    from jupyter_torchserve.engine.http.http1 import serve_http1

    class Ping(web.RequestHandler):
        def get(self) -> None:
            self.finish("pong")

    def router(conn, req) -> bool:
        if req.path != "/slow":
            return False
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, conn.respond, 200, "text/plain", b"late")
        return True

    async def scenario() -> tuple[bytes, bytes, bytes]:
        server = await serve_http1(
            web.Application([("/ping", Ping)]),
            router,
            "127.0.0.1",
            0,
            max_request_size=lambda: 1024,
            on_response=lambda status: None,
            idle_seconds=0.4,
        )
        port = server.server.sockets[0].getsockname()[1]
        try:
            idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
            idle_w.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await idle_r.readuntil(b"pong")
            busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
            busy_w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            closed = await asyncio.wait_for(idle_r.read(), 5)  # b"" once the server closes it
            late = await asyncio.wait_for(busy_r.readuntil(b"late"), 5)
            return first, closed, late
        finally:
            server.close()

    first, closed, late = asyncio.run(scenario())
    assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"pong")
    assert closed == b""
    assert late.startswith(b"HTTP/1.1 200 OK") and late.endswith(b"late")


def test_response_header_with_a_line_break_is_a_500_not_a_split_response(engine):
    info, _, _ = engine
    url = info["inference_address"] + "/predictions/hdr"
    r = requests.post(url, data=b"x", headers={"X-Evil": "a|Injected: yes"})
    assert r.status_code == 500
    assert "Injected" not in r.headers
    assert "line break" in r.json()["message"]
    r = requests.post(url, data=b"x", headers={"X-Evil": "harmless"})
    assert r.status_code == 200 and r.headers["X-Echo"] == "harmless"


def test_kserve_routes_on_the_fast_path_keep_their_answers(engine):
    """v1/v2 infer run without a RequestHandler now; their errors, methods and pipelining
    are what they were (v2 errors carry OIP's "error" beside TorchServe's fields)."""
    info, _, addr = engine
    base = info["inference_address"]
    # a v1 instance's fields reach the handler as the row's fields (TorchServe's envelope)
    r = requests.post(
        base + "/v1/models/probe:predict", json={"instances": [{"body": {"echo": 1}}]}
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["echo"] == 1
    r = requests.post(base + "/v1/models/probe:nope", json={"instances": [{}]})
    assert r.status_code == 404 and r.json()["type"] == "ResourceNotFoundException"
    r = requests.post(base + "/v2/models/nope/infer", json={"inputs": []})
    assert r.status_code == 404 and r.json()["error"] == r.json()["message"]
    r = requests.post(base + "/v2/models/probe/infer", data=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert requests.put(base + "/v2/models/probe/infer", json={}).status_code == 405
    with socket.create_connection(addr, timeout=60) as s:
        rows = [{"body": {"echo": "a", "sleep": 0.2}}, {"body": {"echo": "b"}}]
        v1 = json.dumps({"instances": rows}).encode()
        s.sendall(
            _post("/v1/models/probe:predict", v1) + _post("/predictions/probe", b'{"echo": "c"}')
        )
        f = s.makefile("rb")
        first, second = _read_response(f), _read_response(f)
    assert [p["echo"] for p in json.loads(first[2])["predictions"]] == ["a", "b"]
    assert json.loads(second[2])["echo"] == "c"
