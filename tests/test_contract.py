"""The engine's HTTP contract as both clients send it: what goes on the wire for each verb,
how answers and errors read, and how pages chain. No server: `contract.py` does no I/O, so
each rule is checked on the values a transport would send and receive."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from jupyter_torchserve import contract
from jupyter_torchserve.client import Client
from jupyter_torchserve.contract import (
    Call,
    EngineEndpoint,
    EngineError,
    EngineNotRunning,
    Response,
)

ENDPOINT = EngineEndpoint(
    "http://127.0.0.1:1",
    "http://127.0.0.1:2",
    "http://127.0.0.1:3",
    management_key="MGMT",
    inference_key="INF",
)


def wire(call: Call, endpoint: EngineEndpoint = ENDPOINT) -> tuple[str, str, dict, dict]:
    """(method, path, query, headers) as they leave a transport."""
    url = urlsplit(endpoint.url(call))
    return call.method, url.path, dict(parse_qsl(url.query)), endpoint.headers(call)


def answer(status: int, body: object = b"", content_type: str = "application/json") -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, content_type, raw, {"Content-Type": content_type})


# -------------------------------------------------------------------------- what is sent
def test_each_port_gets_its_own_key_and_metrics_none() -> None:
    assert wire(contract.describe("m"))[3]["Authorization"] == "Bearer MGMT"
    assert wire(contract.ping())[3]["Authorization"] == "Bearer INF"
    assert "Authorization" not in wire(contract.metrics())[3]
    open_engine = EngineEndpoint("http://a:1", "http://a:2", "http://a:3")
    assert "Authorization" not in wire(contract.describe("m"), open_engine)[3]


def test_a_name_cannot_change_the_route() -> None:
    """A `/`, `?` or `#` in a model name or version stays inside its path segment."""
    method, path, query, _ = wire(contract.unregister("a/b?c#d", "1.0/x"))
    assert (method, path, query) == ("DELETE", "/models/a%2Fb%3Fc%23d/1.0%2Fx", {})
    assert wire(contract.predict("a/b", b"x", "text/plain"))[1] == "/predictions/a%2Fb"
    assert wire(contract.v2_metadata("a/b", "2"))[1] == "/v2/models/a%2Fb/versions/2"


def test_register_and_scale_parameters() -> None:
    call = contract.register(
        "mnist.mar", model_name="m", initial_workers=2, synchronous=True, handler=None, runtime=""
    )
    assert wire(call)[:3] == (
        "POST",
        "/models",
        {"url": "mnist.mar", "model_name": "m", "initial_workers": "2", "synchronous": "true"},
    )
    call = contract.scale("m", "1.0", min_worker=0, max_worker=3, synchronous=False)
    assert wire(call)[:3] == (
        "PUT",
        "/models/m/1.0",
        {"min_worker": "0", "max_worker": "3", "synchronous": "false"},
    )
    assert set(contract.SCALE_PARAMS) >= {"min_worker", "max_worker", "synchronous", "timeout"}
    assert {"url", "model_name", "initial_workers", "batch_size"} <= set(contract.REGISTER_PARAMS)


def test_the_client_names_every_register_and_scale_parameter_of_the_contract() -> None:
    """The server extension forwards exactly the contract's parameters; the sync client names
    the same ones, so a notebook completes each and none is left to `**extra` by accident."""

    def named(method: Any, *positional: str) -> set[str]:
        params = inspect.signature(method).parameters.values()
        return {p.name for p in params if p.kind is not p.VAR_KEYWORD} - {"self", *positional}

    assert named(Client.register) == set(contract.REGISTER_PARAMS)
    assert named(Client.scale, "name", "version") == set(contract.SCALE_PARAMS)


def test_metrics_names_repeat_as_name_brackets() -> None:
    url = ENDPOINT.url(contract.metrics(["a", "b"]))
    assert urlsplit(url).query == "name%5B%5D=a&name%5B%5D=b"
    assert "?" not in ENDPOINT.url(contract.metrics())


def test_a_body_without_a_type_goes_as_octet_stream() -> None:
    """An HTTP client fills a missing type with its own default (Tornado: a form), which the
    engine would parse into fields; the contract names the type the engine assumes."""
    forwarded = contract.forward("POST", "/predictions/m?x=1", b"a=1&b=2", {})
    assert wire(forwarded)[3]["Content-Type"] == "application/octet-stream"
    assert ENDPOINT.url(forwarded) == "http://127.0.0.1:1/predictions/m?x=1"
    untyped = contract.predict("m", b"a=1", None)
    assert wire(untyped)[3]["Content-Type"] == "application/octet-stream"
    typed = contract.forward("POST", "/predictions/m", b"a=1", {"content-type": "text/csv"})
    assert wire(typed)[3] == {
        "content-type": "text/csv",
        "Authorization": "Bearer INF",
        contract.OWNER_HEADER: "Bearer MGMT",  # the owner sees a failed handler's traceback
    }
    assert "Content-Type" not in wire(contract.register("m.mar"))[3]  # no body, no type


def test_kserve_bodies() -> None:
    call = contract.kserve_v2_infer("m", [{"name": "x"}], version="2", request_id="r1")
    assert wire(call)[1] == "/v2/models/m/versions/2/infer"
    assert json.loads(call.body or b"") == {"inputs": [{"name": "x"}], "id": "r1"}
    call = contract.kserve_v1("m", [[1, 2]], explain=True)
    assert wire(call)[1] == "/v1/models/m:explain"
    assert wire(call)[3]["Content-Type"] == "application/json"


def test_bind_addresses_become_connectable(tmp_path: Path) -> None:
    keys = tmp_path / "key_file.json"
    keys.write_text(json.dumps({"management": {"key": "K1"}, "inference": {"key": "K2"}}))
    endpoint = EngineEndpoint.from_info(
        {
            "inference_address": "http://0.0.0.0:8080",
            "management_address": "127.0.0.1:8081",
            "metrics_address": "https://[::]:8082",
            "key_file": str(keys),
        }
    )
    assert endpoint == EngineEndpoint(
        "http://127.0.0.1:8080", "http://127.0.0.1:8081", "https://127.0.0.1:8082", "K1", "K2"
    )
    assert contract.connectable("http://[::1]:9") == "http://[::1]:9"


# -------------------------------------------------------------------------- what comes back
def test_engine_errors_keep_torchserve_fields() -> None:
    body = {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: x"}
    with pytest.raises(EngineError) as err:
        contract.describe("x").read(answer(404, body))
    assert (err.value.status, err.value.type, err.value.message) == (
        404,
        "ModelNotFoundException",
        "Model not found: x",
    )
    assert err.value.to_json() == body


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (502, b"<html>bad gateway</html>", "<html>bad gateway</html>"),
        (500, b"", "engine answered 500"),
        (400, b"[1, 2]", "[1, 2]"),
        (503, b'{"error": "busy", "code": "x"}', "busy"),
    ],
)
def test_any_error_body_reads_as_an_engine_error(status: int, body: bytes, message: str) -> None:
    err = contract.error_from(answer(status, body, "text/html"))
    assert (err.status, err.message) == (status, message)


def test_answers_read_as_their_call_says() -> None:
    assert contract.engine_status().read(answer(200, {"pid": 1})) == {"pid": 1}
    assert contract.unregister("m").read(answer(200, b"")) is None
    assert contract.set_default("m", "1").read(answer(200, b"Default set", "text/plain")) == {
        "status": "Default set"
    }
    assert contract.logs("m", 5).read(answer(200, b"line\n", "text/plain")) == "line\n"
    raw = answer(200, b"\x89PNG", "image/png")
    assert contract.predict("m", b"x", "image/png").read(raw) is raw
    assert raw.header("content-type") == "image/png"


def test_not_running_is_a_503_engine_error() -> None:
    err = EngineNotRunning("gone")
    assert isinstance(err, EngineError) and err.to_json() == {
        "code": 503,
        "type": "EngineNotRunning",
        "message": "gone",
    }


# -------------------------------------------------------------------------- paging
class Pages:
    """Answers `GET /models` from a list of names, `limit` at a time, as the engine pages."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls: list[dict[str, str]] = []

    def __call__(self, call: Call) -> Response:
        query = wire(call)[2]
        self.calls.append(query)
        start, limit = int(query.get("next_page_token", 0)), int(query["limit"])
        page: dict[str, object] = {
            "models": [{"modelName": n} for n in self.names[start : start + limit]]
        }
        if start + limit < len(self.names):
            page["nextPageToken"] = str(start + limit)
        return answer(200, page)


def test_every_model_follows_pages_in_both_drivers() -> None:
    names = [f"m{i}" for i in range(7)]
    pages = Pages(names)
    got = contract.run(contract.every_model(page_size=3), pages)
    assert [m["modelName"] for m in got] == names
    assert [c.get("next_page_token") for c in pages.calls] == [None, "3", "6"]

    async def send(call: Call) -> Response:
        return pages(call)

    got = asyncio.run(contract.run_async(contract.every_model(page_size=3), send))
    assert [m["modelName"] for m in got] == names


def test_paging_stops_on_an_empty_page_and_raises_errors() -> None:
    """A server that keeps handing out tokens with no models cannot loop a client forever."""
    looping = contract.run(
        contract.every_model(), lambda call: answer(200, {"models": [], "nextPageToken": "1"})
    )
    assert looping == []
    with pytest.raises(EngineError):
        contract.run(contract.every_model(), lambda call: answer(500, {"message": "boom"}))


def test_client_builds_its_endpoint_from_its_attributes() -> None:
    """The sync client's public attributes stay what it sends with."""
    c = Client("http://h:1/", "http://h:2", "http://h:3", token="T", inference_token="I")
    c.token = "T2"
    assert c.endpoint == EngineEndpoint("http://h:1", "http://h:2", "http://h:3", "T2", "I")


def test_explain_toward_a_target_is_a_form_with_data_and_target_fields():
    from email.parser import BytesParser
    from email.policy import HTTP

    plain = contract.explain("m", b"\x89PNG", "image/png", version="2.0")
    assert wire(plain)[1] == "/explanations/m/2.0" and plain.body == b"\x89PNG"
    call = contract.explain("m", b"\x89PNG", "image/png", target=3)
    method, path, _, headers = wire(call)
    assert (method, path) == ("POST", "/explanations/m")
    ctype = headers["Content-Type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    form = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + call.body
    )
    fields = {p.get_param("name", header="content-disposition"): p for p in form.iter_parts()}
    assert fields["data"].get_content_type() == "image/png"
    assert fields["data"].get_payload(decode=True) == b"\x89PNG"
    assert fields["target"].get_payload(decode=True) == b"3"
