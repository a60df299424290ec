"""A real engine under what an attacker or a fault does: hostile download servers, poisoned
values, archive bombs, a handler's traceback asked for by a stranger.

Downloads come from a local `http.server` on loopback; every answer is checked for what a
user relies on: a JSON 4xx naming the cause, nothing left behind, other models still served.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from _engine_helpers import PROBE_HANDLER, manifest, probe_mar, running_engine

pytestmark = pytest.mark.slow  # starts real engines


class _Archives(http.server.BaseHTTPRequestHandler):
    """Serves /ok/<name>.mar from `files`; /ok/hop and /ok/away redirect; /ok/big streams
    past any limit with no Content-Length; /ok/slow dawdles."""

    files: dict[str, bytes] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path
        if path == "/ok/hop":
            return self._redirect("/ok/second.mar")
        if path == "/ok/away":
            return self._redirect("/bad/probe.mar")
        if path == "/ok/big.mar":
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * (1 << 16))
            return None
        if path == "/ok/slow.mar":
            time.sleep(4)
        name = path.rsplit("/", 1)[-1]
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return None
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def archive_server(files: dict[str, bytes]):
    _Archives.files = files
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Archives)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _keys(info) -> dict[str, str]:
    keys = json.loads(Path(info["key_file"]).read_text())
    return {k: v["key"] for k, v in keys.items()}


def _mgmt(info, method: str, path: str, **kw) -> requests.Response:
    headers = {"Authorization": "Bearer " + _keys(info)["management"]}
    return requests.request(
        method, info["management_address"] + path, headers=headers, timeout=60, **kw
    )


def _assert_json_error(r: requests.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == status and body["type"] and body["message"]
    return body


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    src = tmp / "src"
    src.mkdir()
    files = {
        "probe.mar": probe_mar(src, "probe").read_bytes(),
        "second.mar": probe_mar(src, "second").read_bytes(),
        "slow.mar": probe_mar(src, "slowdl").read_bytes(),
    }
    with archive_server(files) as base:
        store = tmp / "store"
        store.mkdir()
        probe_mar(store, "resident")
        with running_engine(
            tmp,
            model_store=str(store),
            allowed_urls=[base.replace(".", r"\.") + "/ok/.*"],
            max_archive_size=1 << 20,
            download_timeout=1.5,
            max_workers_per_model=3,
            max_workers=4,
        ) as (info, client):
            client.register("resident-1.0.mar", initial_workers=1)
            yield info, client, base, store


def _resident_still_served(info) -> None:
    r = requests.post(info["inference_address"] + "/predictions/resident", json={"echo": 1})
    assert r.status_code == 200 and r.json()["echo"] == 1
    assert _mgmt(info, "GET", "/models/resident").status_code == 200


def test_download_from_an_allowed_url_registers_the_model(served):
    info, _, base, store = served
    r = _mgmt(info, "POST", "/models", params={"url": base + "/ok/probe.mar", "initial_workers": 1})
    assert r.status_code == 200, r.text
    assert (store / "probe.mar").exists()
    r = requests.post(info["inference_address"] + "/predictions/probe", json={"echo": 7})
    assert r.status_code == 200 and r.json()["echo"] == 7


def test_a_redirect_to_an_allowed_url_is_followed(served):
    info, _, base, store = served
    r = _mgmt(info, "POST", "/models", params={"url": base + "/ok/hop", "initial_workers": 0})
    assert r.status_code == 200, r.text
    assert (store / "hop").exists()  # the archive keeps the name the caller asked for


def test_a_redirect_to_a_url_not_allowed_is_refused(served):
    info, _, base, store = served
    r = _mgmt(info, "POST", "/models", params={"url": base + "/ok/away"})
    body = _assert_json_error(r, 400)
    assert "/bad/probe.mar" in body["message"] and "allowed" in body["message"]
    assert not (store / "away").exists()
    _resident_still_served(info)


@pytest.mark.parametrize(
    "path", ["/ok/%2e%2e/bad/probe.mar", "/ok/%252e%252e/x.mar", "/ok/..%2fx.mar"]
)
def test_encoded_traversal_is_refused(served, path):
    info, _, base, _ = served
    _assert_json_error(_mgmt(info, "POST", "/models", params={"url": base + path}), 400)


def test_a_download_past_max_archive_size_stops_and_leaves_nothing(served):
    info, _, base, store = served
    r = _mgmt(info, "POST", "/models", params={"url": base + "/ok/big.mar"})
    body = _assert_json_error(r, 413)
    assert "max_archive_size" in body["message"]
    assert sorted(p.name for p in store.iterdir() if "big" in p.name) == []  # no .part either
    _resident_still_served(info)


def test_a_slow_download_times_out(served):
    info, _, base, store = served
    r = _mgmt(info, "POST", "/models", params={"url": base + "/ok/slow.mar"})
    body = _assert_json_error(r, 400)
    assert "download_timeout" in body["message"]
    assert not (store / "slow.mar").exists()


def test_a_url_not_allowed_is_refused(served):
    info, _, _, _ = served
    r = _mgmt(info, "POST", "/models", params={"url": "http://127.0.0.1:9/x.mar"})
    _assert_json_error(r, 400)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("response_timeout", "nan"),
        ("response_timeout", "inf"),
        ("startup_timeout", "nan"),
        ("initial_workers", "1_000"),
        ("initial_workers", "+1"),
        ("initial_workers", "\u0661"),
        ("initial_workers", "\uff11"),
        ("batch_size", "0"),
        ("initial_workers", "99999999999999999999"),
    ],
)
def test_poisoned_register_values_are_refused_and_harm_nothing(served, param, value):
    info, _, _, _ = served
    r = _mgmt(info, "POST", "/models", params={"url": "resident-1.0.mar", param: value})
    _assert_json_error(r, 400)
    _resident_still_served(info)


@pytest.mark.parametrize(
    "query",
    [
        {"min_worker": "99999999999999999999"},
        {"min_worker": "nan"},
        {"min_worker": "\uff12"},
        {"timeout": "inf"},
        {"min_worker": "1", "max_worker": "1_0"},
    ],
)
def test_poisoned_scale_values_are_refused(served, query):
    info, _, _, _ = served
    _assert_json_error(_mgmt(info, "PUT", "/models/resident", params=query), 400)
    d = _mgmt(info, "GET", "/models/resident").json()[0]
    assert d["minWorkers"] == 1
    _resident_still_served(info)


def test_workers_past_the_caps_get_400_and_507(served):
    info, _, _, _ = served
    body = _assert_json_error(_mgmt(info, "PUT", "/models/resident", params={"min_worker": 4}), 400)
    assert "max_workers_per_model" in body["message"]
    # the engine's cap is 4: resident holds 1 (or 3 after this), probe a further 1
    r = _mgmt(info, "PUT", "/models/resident", params={"min_worker": 3, "synchronous": "true"})
    assert r.status_code in (200, 507), r.text
    total = sum(m["minWorkers"] for m in _all_described(info))
    assert total <= 4
    if r.status_code == 200:
        body = _assert_json_error(
            _mgmt(info, "PUT", "/models/probe", params={"min_worker": 3}), 507
        )
        assert "max_workers" in body["message"]
        _mgmt(info, "PUT", "/models/resident", params={"min_worker": 1, "synchronous": "true"})
    _resident_still_served(info)


def _all_described(info) -> list[dict]:
    names = [m["modelName"] for m in _mgmt(info, "GET", "/models").json()["models"]]
    return [v for n in names for v in _mgmt(info, "GET", f"/models/{n}/all").json()]


def test_a_traceback_goes_only_to_the_owner(served):
    info, _, _, _ = served
    url = info["inference_address"] + "/predictions/resident"
    stranger = requests.post(url, json={"raise": "boom"})
    body = _assert_json_error(stranger, stranger.status_code)
    assert stranger.status_code >= 400
    assert "boom" in body["message"] and "Traceback" not in body["message"]
    assert "probe_handler.py" not in body["message"]
    owner = requests.post(
        url,
        json={"raise": "boom"},
        headers={"X-Management-Authorization": "Bearer " + _keys(info)["management"]},
    )
    assert "Traceback" in owner.json()["message"]
    # a wrong key is a stranger's
    wrong = requests.post(
        url, json={"raise": "boom"}, headers={"X-Management-Authorization": "Bearer nope"}
    )
    assert "Traceback" not in wrong.json()["message"]


def test_an_archive_bomb_is_refused_before_it_is_written(served):
    info, _, _, store = served
    bomb = store / "bomb.mar"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(4):
            z.writestr(f"m{i}.bin", b"\0" * (1 << 20))  # 4 MiB of zeros, max_archive_size 1
        z.writestr("probe_handler.py", PROBE_HANDLER)
        z.writestr(
            "MAR-INF/MANIFEST.json",
            json.dumps(manifest("bomb", "1.0", "m0.bin", "probe_handler.py")),
        )
    assert bomb.stat().st_size < 1 << 20
    body = _assert_json_error(_mgmt(info, "POST", "/models", params={"url": "bomb.mar"}), 413)
    assert "max_archive_size" in body["message"] and "max_total_size" not in body["message"]
    cache = Path(info["state_dir"]) / "cache"
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file() and "m" in p.name)
    assert written < 1 << 20
    _resident_still_served(info)


def test_a_too_long_register_url_is_a_404_not_a_500(served):
    info, _, _, _ = served
    r = _mgmt(info, "POST", "/models", params={"url": "a" * 300 + ".mar"})
    _assert_json_error(r, 404)


def _raw(address: str, data: bytes) -> tuple[int, bytes]:
    host, port = address.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


_DEEP = b"[" * 5000 + b"]" * 5000


def _v2(datatype, data) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": datatype, "data": data}]}
    ).encode()


MALFORMED = {
    "deep JSON, v2": ("inference", "POST", "/v2/models/resident/infer", _DEEP),
    "deep JSON, v1": ("inference", "POST", "/v1/models/resident:predict", _DEEP),
    "deep JSON, register": ("management", "POST", "/models", _DEEP),
    "v2 datatype []": ("inference", "POST", "/v2/models/resident/infer", _v2([], [1])),
    "v2 datatype {}": ("inference", "POST", "/v2/models/resident/infer", _v2({}, [1])),
    "v2 INT8 1000": ("inference", "POST", "/v2/models/resident/infer", _v2("INT8", [1000])),
    "v2 UINT8 -1": ("inference", "POST", "/v2/models/resident/infer", _v2("UINT8", [-1])),
    "v2 INT64 1e400": (
        "inference",
        "POST",
        "/v2/models/resident/infer",
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1e400]}]}',
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bodies_get_a_json_4xx(served, case):
    info, _, _, _ = served
    port, method, path, body = MALFORMED[case]
    headers = {"Content-Type": "application/json"}
    if port == "management":
        headers["Authorization"] = "Bearer " + _keys(info)["management"]
    r = requests.request(method, info[f"{port}_address"] + path, data=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text[:300]
    assert r.json()["message"]
    _resident_still_served(info)


@pytest.mark.parametrize(
    ("port", "raw"),
    [
        ("inference", b"GET /ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\r\n\r\n"),
        ("management", b"GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n\r\n"),
        ("inference", b"GET /api-description HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("inference", b"GET /api-description\r\n\r\n"),  # HTTP/0.9
        ("metrics", b"GET /metrics?name[]=%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ],
)
def test_malformed_requests_get_no_5xx_and_errors_are_json(served, port, raw):
    """A bad key, no Host, HTTP/0.9, undecodable filters: answered (HTTP/0.9 is served
    as 1.0), or refused with a JSON 4xx; never a 500."""
    info, _, _, _ = served
    if b"Connection: close" not in raw and b"HTTP/1.1" in raw:
        raw = raw.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    status, body = _raw(info[f"{port}_address"], raw)
    assert status < 500, body[:300]
    if status >= 400:
        assert json.loads(body)["message"]
    _resident_still_served(info)


_PATHS = {"inference": b"/ping", "management": b"/models", "metrics": b"/metrics"}
_FIELDS = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
UNPARSABLE = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "bad method token": b"G(T {path} HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET {path} HTTP/9.Z\r\nHost: x\r\n\r\n",
    "space in a header name": b"GET {path} HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "header without a colon": b"GET {path} HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "bad Content-Length": b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
    "101 header fields": b"GET {path} HTTP/1.1\r\nHost: x\r\n" + _FIELDS + b"\r\n",
    "headers over 64 KiB": b"GET {path} HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("port", sorted(_PATHS))
@pytest.mark.parametrize("case", sorted(UNPARSABLE))
def test_requests_the_parser_refuses_get_a_json_4xx_on_every_port(served, port, case):
    """Tornado's own parser answered these with an empty-body 400 on the management and
    metrics ports; all three ports now share http1.py's server and its JSON errors."""
    info, _, _, _ = served
    raw = UNPARSABLE[case].replace(b"{path}", _PATHS[port])
    status, body = _raw(info[f"{port}_address"], raw)
    assert status in (400, 431), body[:300]
    err = json.loads(body)
    assert err["code"] == status and err["type"] and err["message"]


@pytest.mark.parametrize("port", sorted(_PATHS))
def test_http_1_1_without_host_is_a_json_400_on_every_port(served, port):
    """RFC 9112: a server answers an HTTP/1.1 request without Host with 400; here with a
    JSON body on every port (the management port's was empty)."""
    info, _, _, _ = served
    raw = b"GET %s HTTP/1.1\r\nConnection: close\r\n\r\n" % _PATHS[port]
    status, body = _raw(info[f"{port}_address"], raw)
    assert status == 400 and "Missing Host header" in json.loads(body)["message"]


@pytest.mark.parametrize("port", sorted(_PATHS))
@pytest.mark.parametrize("raw", [b"GET {path}\r\n\r\n", b"GET {path} HTTP/1.0\r\n\r\n"])
def test_http_0_9_and_1_0_are_answered_on_every_port(served, port, raw):
    """Served as Tornado's routes would (HTTP/0.9 as 1.0, Host not required); the management
    port's answer is TorchServe's JSON 400 InvalidKeyException for a request without the key."""
    info, _, _, _ = served
    status, body = _raw(info[f"{port}_address"], raw.replace(b"{path}", _PATHS[port]))
    if port == "management":
        assert status == 400 and json.loads(body)["type"] == "InvalidKeyException"
    else:
        assert status == 200 and body


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("multipart/form-data", b"--x\r\nabc"),  # no boundary
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=a"),
    ],
)
def test_broken_multipart_is_a_400(served, ctype, body):
    info, _, _, _ = served
    r = requests.post(
        info["inference_address"] + "/predictions/resident",
        data=body,
        headers={"Content-Type": ctype},
    )
    _assert_json_error(r, 400)
