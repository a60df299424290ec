"""Every route of the server extension: auth, XSRF, forwarding, errors, no engine, no token leak.

These run against `RecordingEngine` (a double of the engine's HTTP boundary, see
`_serverext_helpers.py`) so they can assert what the extension sends; `test_serverext_engine.py`
repeats the main paths against a real engine.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from _serverext_helpers import INF_KEY, MGMT_KEY, SERVER_CONFIG, RecordingEngine, predict
from tornado.httpclient import HTTPClientError
from tornado.simple_httpclient import HTTPTimeoutError

pytestmark = pytest.mark.slow  # starts real processes

SECRETS = (MGMT_KEY, INF_KEY, "api-SECRET")

# (method, path, body) for every route; bodies only where the verb carries one
ROUTES: list[tuple[str, str, bytes | None]] = [
    ("GET", "torchserve/engine", None),
    ("POST", "torchserve/engine", b"{}"),
    ("DELETE", "torchserve/engine", None),
    ("GET", "torchserve/overview", None),
    ("GET", "torchserve/models", None),
    ("POST", "torchserve/models?url=mnist.mar", b""),
    ("GET", "torchserve/models/mnist", None),
    ("GET", "torchserve/models/mnist/1.0", None),
    ("PUT", "torchserve/models/mnist?min_worker=2", b""),
    ("PUT", "torchserve/models/mnist/1.0/set-default", b""),
    ("DELETE", "torchserve/models/mnist", None),
    ("POST", "torchserve/models/mnist/predict", b"[1]"),
    ("GET", "torchserve/models/mnist/sample", None),
    ("GET", "torchserve/models/mnist/logs?tail=5", None),
    ("GET", "torchserve/metrics", None),
    ("GET", "torchserve/store", None),
    ("POST", "torchserve/predictions/mnist", b"[1]"),
    ("POST", "torchserve/v1/models/mnist:predict", b'{"instances": [1]}'),
    ("POST", "torchserve/v2/models/mnist/infer", b"{}"),
    ("GET", "torchserve/ping", None),
]
STATE_CHANGES = [r for r in ROUTES if r[0] != "GET"]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return SERVER_CONFIG


@pytest.fixture
def fake_engine(
    jp_serverapp: Any, jp_runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The double on a free port, found through a discovery file; start/stop are recorded
    (the discovery file names this very process, which a real stop would SIGTERM)."""
    from jupyter_torchserve import launcher

    engine = RecordingEngine()
    engine.start()
    path = engine.write_discovery(Path(jp_runtime_dir), tmp_path)
    engine.lifecycle = []

    def start_engine(**config: Any) -> dict[str, Any]:
        engine.lifecycle.append(("start", config))
        path.write_text(json.dumps(engine.info))
        return engine.info

    def stop_engine(info: dict[str, Any] | None = None, timeout: float = 20.0) -> bool:
        engine.lifecycle.append(("stop", info))
        path.unlink(missing_ok=True)
        return True

    monkeypatch.setattr(launcher, "start_engine", start_engine)
    monkeypatch.setattr(launcher, "stop_engine", stop_engine)
    yield engine
    engine.stop()


@pytest.fixture
def rawfetch(http_server_client: Any, jp_base_url: str) -> Any:
    """Requests on the Jupyter server without pytest-jupyter's URL escaping or auth headers."""

    async def fetch(
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        return await http_server_client.fetch(
            jp_base_url + path,
            method=method,
            body=body,
            headers=headers or {},
            raise_error=False,
            allow_nonstandard_methods=True,
            **kw,
        )

    return fetch


def assert_no_secret(resp: Any) -> None:
    text = (resp.body or b"").decode("utf-8", "replace") + repr(dict(resp.headers))
    for secret in SECRETS:
        assert secret not in text


# --------------------------------------------------------------------------- auth and XSRF
@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_needs_jupyter_auth(
    rawfetch: Any, fake_engine: RecordingEngine, method: str, path: str, body: bytes | None
) -> None:
    resp = await rawfetch(method, path, body)
    assert resp.code == 403
    assert not fake_engine.requests, "an unauthenticated request reached the engine"


async def _cookie_login(rawfetch: Any, token: str) -> tuple[str, str]:
    """Log in like a browser: returns (Cookie header, xsrf token)."""
    resp = await rawfetch("GET", "login")
    cookies = {}
    for header in resp.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        cookies[name] = rest.split(";")[0]
    xsrf = cookies["_xsrf"]
    body = urlencode({"password": token, "_xsrf": xsrf}).encode()
    resp = await rawfetch(
        "POST",
        "login",
        body,
        headers={"Cookie": f"_xsrf={xsrf}", "Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert resp.code in (200, 302), resp.body
    for header in resp.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        cookies[name] = rest.split(";")[0]
    return "; ".join(f"{k}={v}" for k, v in cookies.items()), xsrf


@pytest.mark.parametrize(("method", "path", "body"), STATE_CHANGES)
async def test_state_changes_need_xsrf_with_cookie_auth(
    rawfetch: Any,
    jp_serverapp: Any,
    fake_engine: RecordingEngine,
    method: str,
    path: str,
    body: bytes | None,
) -> None:
    cookie, xsrf = await _cookie_login(rawfetch, jp_serverapp.identity_provider.token)
    # the cookie alone is a logged-in browser: reads work
    ok = await rawfetch("GET", "torchserve/engine", headers={"Cookie": cookie})
    assert ok.code == 200
    refused = await rawfetch(method, path, body, headers={"Cookie": cookie})
    assert refused.code == 403
    before = len(fake_engine.requests)
    allowed = await rawfetch(method, path, body, headers={"Cookie": cookie, "X-XSRFToken": xsrf})
    assert allowed.code != 403
    if path.startswith("torchserve/engine"):
        # start on a running engine is a no-op that answers its status
        assert method == "POST" or fake_engine.lifecycle[-1][0] == "stop"
    else:
        assert len(fake_engine.requests) > before


# --------------------------------------------------------------------------- no engine
async def test_no_engine_status_says_not_running(jp_fetch: Any) -> None:
    resp = await jp_fetch("torchserve", "engine")
    data = json.loads(resp.body)
    assert data["running"] is False
    assert "not running" in data["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [r for r in ROUTES if not r[1].startswith("torchserve/engine")],
)
async def test_no_engine_is_503_with_message(
    rawfetch: Any, jp_auth_header: dict[str, str], method: str, path: str, body: Any
) -> None:
    resp = await rawfetch(method, path, body, headers=jp_auth_header)
    assert resp.code == 503, (path, resp.body)
    data = json.loads(resp.body)
    assert data["code"] == 503
    assert data["type"] == "EngineNotRunning"
    assert "not running" in data["message"]


async def test_stale_discovery_file_is_not_an_engine(jp_fetch: Any, jp_runtime_dir: Path) -> None:
    stale = Path(jp_runtime_dir) / "jupyter-torchserve-999999.json"
    stale.write_text(json.dumps({"pid": 999999, "management_address": "http://127.0.0.1:1"}))
    resp = await jp_fetch("torchserve", "engine")
    assert json.loads(resp.body)["running"] is False
    assert not stale.exists()


async def test_dead_port_is_503(jp_fetch: Any, jp_runtime_dir: Path, tmp_path: Path) -> None:
    engine = RecordingEngine()  # never started: its port refuses connections
    engine.write_discovery(Path(jp_runtime_dir), tmp_path)
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "models")
    assert err.value.code == 503
    assert json.loads(err.value.response.body)["type"] == "EngineNotRunning"


# --------------------------------------------------------------------------- management
async def test_start_and_stop(jp_fetch: Any, fake_engine: RecordingEngine) -> None:
    resp = await jp_fetch("torchserve", "engine", method="DELETE")
    assert json.loads(resp.body)["running"] is False
    assert fake_engine.lifecycle[-1][0] == "stop"
    resp = await jp_fetch("torchserve", "engine", method="DELETE")  # nothing to stop: fine
    assert json.loads(resp.body)["running"] is False
    assert len(fake_engine.lifecycle) == 1
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "overview")
    assert err.value.code == 503
    resp = await jp_fetch("torchserve", "engine", method="POST", body=json.dumps({"workers": 2}))
    assert json.loads(resp.body)["running"] is True
    assert fake_engine.lifecycle[-1] == ("start", {"workers": 2})
    # already running: start is a no-op that reports the status
    await jp_fetch("torchserve", "engine", method="POST", body=b"{}")
    assert len(fake_engine.lifecycle) == 2


async def test_engine_status(jp_fetch: Any, fake_engine: RecordingEngine) -> None:
    resp = await jp_fetch("torchserve", "engine")
    data = json.loads(resp.body)
    assert data["running"] is True
    assert data["gpus"][0]["name"] == "Fake GPU"
    assert data["uptime_s"] == 12.5
    assert data["max_request_size"] == 6553500
    assert "key_file" not in data
    assert fake_engine.requests[-1]["headers"]["Authorization"] == f"Bearer {MGMT_KEY}"
    assert_no_secret(resp)


async def test_overview_has_versions_default_and_stats(
    jp_fetch: Any, fake_engine: RecordingEngine
) -> None:
    resp = await jp_fetch("torchserve", "overview")
    data = json.loads(resp.body)
    assert data["engine"]["running"] is True
    (mnist,) = data["models"]
    assert mnist["modelName"] == "mnist"
    assert mnist["versions"][0]["isDefault"] is True
    assert len(mnist["versions"][0]["workers"]) == 1
    stats = mnist["stats"]
    assert stats["requests"] == 10
    assert stats["latency_ms_mean"] == pytest.approx(5.0)
    assert 1.0 <= stats["latency_ms_p50"] <= 10.0
    assert_no_secret(resp)


async def test_list_and_describe(jp_fetch: Any, fake_engine: RecordingEngine) -> None:
    models = json.loads((await jp_fetch("torchserve", "models")).body)
    assert models["models"][0]["modelName"] == "mnist"
    described = json.loads((await jp_fetch("torchserve", "models", "mnist")).body)
    assert described[0]["modelVersion"] == "1.0"
    one = json.loads((await jp_fetch("torchserve", "models", "mnist", "1.0")).body)
    assert one[0]["modelName"] == "mnist"


async def test_unknown_model_passes_engine_error_through(
    jp_fetch: Any, fake_engine: RecordingEngine
) -> None:
    for parts, method, body in [
        (("models", "nope"), "GET", None),
        (("models", "nope"), "DELETE", None),
        (("models", "nope", "logs"), "GET", None),
    ]:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("torchserve", *parts, method=method, body=body)
        assert err.value.code == 404
        data = json.loads(err.value.response.body)
        assert data == {
            "code": 404,
            "type": "ModelNotFoundException",
            "message": "Model not found: nope",
        }


async def test_scale_forwards_parameters_with_management_token(
    jp_fetch: Any, fake_engine: RecordingEngine
) -> None:
    resp = await jp_fetch(
        "torchserve", "models", "mnist", "1.0", method="PUT", body=b"", params={"min_worker": "3"}
    )
    assert resp.code == 200
    sent = fake_engine.requests[-1]
    assert sent["method"] == "PUT"
    assert sent["uri"].startswith("/models/mnist/1.0?")
    assert "min_worker=3" in sent["uri"] and "synchronous=true" in sent["uri"]
    assert sent["headers"]["Authorization"] == f"Bearer {MGMT_KEY}"
    assert len(fake_engine.models["mnist"]["workers"]) == 3
    # JSON body works too, and min_worker is required
    await jp_fetch(
        "torchserve", "models", "mnist", method="PUT", body=json.dumps({"min_worker": 1})
    )
    assert len(fake_engine.models["mnist"]["workers"]) == 1
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "models", "mnist", method="PUT", body=b"")
    assert err.value.code == 400
    assert "min_worker" in json.loads(err.value.response.body)["message"]


async def test_register_set_default_unregister(jp_fetch: Any, fake_engine: RecordingEngine) -> None:
    resp = await jp_fetch(
        "torchserve", "models", method="POST", body=json.dumps({"url": "digits.mar"})
    )
    assert "registered" in json.loads(resp.body)["status"]
    assert "digits" in fake_engine.models
    assert "url=digits.mar" in fake_engine.requests[-1]["uri"]
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "models", method="POST", body=b"{}")
    assert err.value.code == 400
    resp = await jp_fetch(
        "torchserve", "models", "digits", "1.0", "set-default", method="PUT", body=b""
    )
    assert "Default version" in json.loads(resp.body)["status"]
    assert fake_engine.requests[-1]["uri"] == "/models/digits/1.0/set-default"
    resp = await jp_fetch("torchserve", "models", "digits", method="DELETE")
    assert "unregistered" in json.loads(resp.body)["status"]
    assert "digits" not in fake_engine.models


async def test_bad_json_body_is_400(jp_fetch: Any, fake_engine: RecordingEngine) -> None:
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "models", method="POST", body=b"{nope")
    assert err.value.code == 400
    assert json.loads(err.value.response.body)["type"] == "BadRequest"


async def test_metrics_parsed(jp_fetch: Any, fake_engine: RecordingEngine) -> None:
    data = json.loads((await jp_fetch("torchserve", "metrics")).body)
    names = {f["name"] for f in data["families"]}
    assert "ts_inference_requests" in names
    assert data["models"]["mnist"]["requests"] == 10
    assert data["totals"]["requests"] == 10


async def test_store_lists_archives(
    jp_fetch: Any, fake_engine: RecordingEngine, tmp_path: Path
) -> None:
    (tmp_path / "a.mar").write_bytes(b"PK")
    (tmp_path / "notes.txt").write_text("x")
    data = json.loads((await jp_fetch("torchserve", "store")).body)
    assert [a["url"] for a in data["archives"]] == ["a.mar"]


# --------------------------------------------------------------------------- inference
async def test_test_prediction_forwards_body_and_type(
    jp_fetch: Any, fake_engine: RecordingEngine, jp_serverapp: Any
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    resp = await predict(jp_fetch, "mnist", png)
    data = json.loads(resp.body)
    assert data == {
        "path": "/predictions/mnist",
        "content_type": "image/png",
        "length": len(png),
        # the inference key, never the user's Jupyter token
        "authorization": "inference-key",
    }
    assert float(resp.headers["X-Torchserve-Latency-Ms"]) >= 0
    assert "X-Secret" not in resp.headers
    token = jp_serverapp.identity_provider.token
    assert all(token not in json.dumps(r["headers"]) for r in fake_engine.requests)
    resp = await predict(jp_fetch, "mnist", b"[1]", headers={}, params={"version": "2.0"})
    assert json.loads(resp.body)["path"] == "/predictions/mnist/2.0"


@pytest.mark.parametrize(
    ("method", "path", "engine_path"),
    [
        ("POST", "torchserve/predictions/mnist", "/predictions/mnist"),
        ("PUT", "torchserve/predictions/mnist/1.0", "/predictions/mnist/1.0"),
        ("POST", "torchserve/explanations/mnist", "/explanations/mnist"),
        ("POST", "torchserve/v1/models/mnist:predict", "/v1/models/mnist:predict"),
        ("POST", "torchserve/v2/models/mnist/infer", "/v2/models/mnist/infer"),
        ("GET", "torchserve/v2/health/ready", "/v2/health/ready"),
    ],
)
async def test_inference_forwarder_like_curl(
    rawfetch: Any,
    jp_serverapp: Any,
    fake_engine: RecordingEngine,
    method: str,
    path: str,
    engine_path: str,
) -> None:
    """`curl -H "Authorization: token $JUPYTER_TOKEN" -T x.png .../torchserve/predictions/m`."""
    token = jp_serverapp.identity_provider.token
    resp = await rawfetch(
        method,
        path + "?explain=0",
        b"payload" if method != "GET" else None,
        headers={"Authorization": f"token {token}", "Content-Type": "application/octet-stream"},
    )
    assert resp.code == 200, resp.body
    data = json.loads(resp.body)
    assert data["path"] == engine_path
    assert fake_engine.requests[-1]["uri"] == engine_path + "?explain=0"
    assert data["authorization"] == "inference-key"
    assert token not in json.dumps(fake_engine.requests[-1]["headers"])
    if engine_path.startswith("/explanations/"):  # the sidebar shows these facts
        assert json.loads(resp.headers["X-Explanation"]) == {"target": 7, "prediction": 7}


# --------------------------------------------------------------------------- logs
async def test_logs_tail(jp_fetch: Any, fake_engine: RecordingEngine) -> None:
    resp = await jp_fetch("torchserve", "models", "mnist", "logs", params={"tail": "5"})
    assert resp.body == b"line 1\nline 2\n"
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "tail=5" in fake_engine.requests[-1]["uri"]
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "models", "mnist", "logs", params={"tail": "x"})
    assert err.value.code == 400


async def test_logs_follow_streams_new_lines(
    rawfetch: Any,
    jp_auth_header: dict[str, str],
    fake_engine: RecordingEngine,
    tmp_path: Path,
) -> None:
    log = tmp_path / "mnist.log"
    log.write_text("old 1\nold 2\nold 3\n")
    chunks: list[bytes] = []

    async def append() -> None:
        await asyncio.sleep(0.8)
        with open(log, "a") as f:
            f.write("new line A\nnew ")
        await asyncio.sleep(0.8)
        with open(log, "a") as f:
            f.write("line B\n")

    task = asyncio.ensure_future(append())
    with pytest.raises(HTTPTimeoutError):  # we hang up on the endless stream
        await rawfetch(
            "GET",
            "torchserve/models/mnist/logs?tail=2&follow=1",
            headers=jp_auth_header,
            streaming_callback=chunks.append,
            request_timeout=3,
        )
    await task
    events = [
        json.loads(m.group(1))["lines"] for m in re.finditer(rb"data: (.*)\n\n", b"".join(chunks))
    ]
    assert events[0] == ["old 2", "old 3"]
    assert ["new line A"] in events
    assert ["new line B"] in events


# --------------------------------------------------------------------------- tokens
async def test_no_response_ever_carries_a_secret(
    rawfetch: Any, jp_auth_header: dict[str, str], fake_engine: RecordingEngine
) -> None:
    for method, path, body in ROUTES:
        if path.startswith("torchserve/engine") and method != "GET":
            continue  # start/stop are covered against the real engine
        resp = await rawfetch(method, path, body, headers=jp_auth_header)
        assert resp.code < 500, (path, resp.code, resp.body)
        assert_no_secret(resp)
