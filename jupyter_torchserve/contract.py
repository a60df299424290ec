"""The engine's HTTP contract as plain values: the one description both of its clients follow.

The notebook's blocking `client.Client` (requests) and the server extension's `Gateway`
(Tornado's `AsyncHTTPClient`, on the Jupyter server's event loop) must agree on paths and
their percent-encoding, parameter names and spelling, which key goes to which port, how an
error answer reads and how pages chain. Written twice, they drifted; so here a verb is a
function that returns a `Call`, a transport sends it and hands back a `Response`, and
`Call.read` turns that into a value or an `EngineError`. An exchange of several calls
(paging) is a generator of calls that `run` or `run_async` drives with either transport.
Nothing here sends a request (reading the key file is its one file read), so every rule can
be tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from . import discovery
from .discovery import EngineInfo

Port = Literal["inference", "management", "metrics"]
#: How `Call.read` turns a successful answer into a value.
Reading = Literal["json", "text", "response"]
T = TypeVar("T")

#: Query parameters of `POST /models` (TorchServe 0.12's, plus our `device_type`).
REGISTER_PARAMS = (
    "url",
    "model_name",
    "handler",
    "runtime",
    "batch_size",
    "max_batch_delay",
    "initial_workers",
    "synchronous",
    "response_timeout",
    "startup_timeout",
    "device_type",
)
#: Query parameters of `PUT /models/{name}[/{version}]`.
SCALE_PARAMS = ("min_worker", "max_worker", "number_gpu", "synchronous", "timeout")
#: The header the owner's management key travels in on the inference port (the engine's
#: `registry.OWNER_HEADER`; `Authorization` there is the inference key's).
OWNER_HEADER = "X-Management-Authorization"
#: Models asked for per page when listing them all.
PAGE_SIZE = 100


class EngineError(Exception):
    """An error in TorchServe's `{code, type, message}` shape: an answer of the engine, or one
    its clients give in its place (no engine, a timeout), so callers handle one kind."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"code": self.status, "type": self.type, "message": self.message}


class EngineNotRunning(EngineError):
    """No live engine was found, or its port refused the connection."""

    def __init__(self, message: str = "The jupyter_torchserve engine is not running.") -> None:
        super().__init__(503, "EngineNotRunning", message)


def no_answer(detail: object) -> EngineError:
    """The engine took the connection but gave no answer within the client's timeout."""
    return EngineError(504, "GatewayTimeout", f"engine did not answer: {detail}")


@dataclass
class Response:
    """An answer as it came, the body kept as bytes so it can be relayed untouched."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    elapsed_ms: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        """A header by name in any case (requests and Tornado spell names differently)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    def raise_for_status(self) -> None:
        if self.status >= 400:
            raise error_from(self)


def error_from(resp: Response) -> EngineError:
    """An error answer as an `EngineError`, whatever the server put in its body."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and (data.get("message") or data.get("error")):
        code = data.get("code")
        return EngineError(
            code if isinstance(code, int) and code >= 400 else resp.status,
            str(data.get("type") or "EngineError"),
            str(data.get("message") or data.get("error")),
        )
    text = resp.text.strip()[:2000]
    return EngineError(resp.status, "EngineError", text or f"engine answered {resp.status}")


@dataclass(frozen=True)
class Call:
    """One request of the contract, before any transport has touched it."""

    method: str
    port: Port
    path: str  # percent-encoded; a forwarded path may carry its own query string
    params: Mapping[str, str | list[str]] = field(default_factory=dict)
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    reads: Reading = "json"

    def read(self, resp: Response) -> Any:
        """The value of a successful answer; an error answer raises `EngineError`."""
        resp.raise_for_status()
        if self.reads == "response":
            return resp
        if self.reads == "text":
            return resp.text
        if not resp.body:
            return None
        try:
            return resp.json()
        except ValueError:
            # TorchServe answers some management calls with a plain sentence
            return {"status": resp.text}


@dataclass(frozen=True)
class EngineEndpoint:
    """Where one engine listens and the keys that open it: all a transport needs to send."""

    inference_url: str
    management_url: str
    metrics_url: str
    management_key: str | None = None
    inference_key: str | None = None

    @classmethod
    def from_info(cls, info: EngineInfo) -> EngineEndpoint:
        keys = discovery.read_keys(info)
        return cls(
            connectable(info.get("inference_address")),
            connectable(info.get("management_address")),
            connectable(info.get("metrics_address")),
            management_key=keys.management,
            inference_key=keys.inference,
        )

    def url(self, call: Call) -> str:
        base = {
            "inference": self.inference_url,
            "management": self.management_url,
            "metrics": self.metrics_url,
        }[call.port]
        query = urlencode(call.params, doseq=True)
        return base + call.path + ("?" + query if query else "")

    def headers(self, call: Call) -> dict[str, str]:
        """The call's headers (empty ones left out) plus its port's key; the metrics port
        takes none, as TorchServe's does not. Inference calls carry the management key too,
        in `OWNER_HEADER`: the engine sends a failed handler's traceback only to its owner,
        and the notebook and the sidebar show it where the user needs it."""
        out = {k: v for k, v in call.headers.items() if v}
        key = {"management": self.management_key, "inference": self.inference_key}.get(call.port)
        if key:
            out["Authorization"] = f"Bearer {key}"
        if call.port == "inference" and self.management_key:
            out[OWNER_HEADER] = f"Bearer {self.management_key}"
        if call.body and not any(k.lower() == "content-type" for k in out):
            # Said outright because an HTTP client fills the gap with its own default, and
            # Tornado's is application/x-www-form-urlencoded: the engine would then read the
            # body as form fields. octet-stream is what the engine assumes for no type at all.
            out["Content-Type"] = "application/octet-stream"
        return out


#: A multi-call exchange: yields the calls to send, receives their responses, returns a value.
Exchange = Generator[Call, Response, T]


def connectable(address: str | None) -> str:
    """A bind address (`http://0.0.0.0:8080`, `127.0.0.1:8080`) as a URL one can connect to."""
    if not address:
        return ""
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def query(**values: Any) -> dict[str, str | list[str]]:
    """Query parameters as the engine reads them: booleans as `true`/`false`, unset ones out."""
    out: dict[str, str | list[str]] = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[name] = [str(v) for v in value]
        else:
            out[name] = str(value)
    return out


def segment(value: str) -> str:
    """One path segment, percent-encoded so a `/` in a name cannot change the route."""
    return quote(value, safe="")


def model_path(name: str, version: str | None = None, suffix: str = "") -> str:
    """`/models/{name}[/{version}]{suffix}`."""
    return "/models/" + _name_version(name, version) + suffix


def _name_version(name: str, version: str | None) -> str:
    return segment(name) + (f"/{segment(version)}" if version else "")


def _json_body(payload: Any) -> tuple[bytes, dict[str, str]]:
    return json.dumps(payload).encode(), {"Content-Type": "application/json"}


# -- inference ---------------------------------------------------------------------------------
def ping() -> Call:
    return Call("GET", "inference", "/ping")


def predict(
    name: str,
    body: bytes,
    content_type: str | None,
    version: str | None = None,
    explain: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Call:
    """`POST /predictions|explanations/{name}[/{version}]`; the answer comes back raw."""
    route = "explanations" if explain else "predictions"
    return Call(
        "POST",
        "inference",
        f"/{route}/{_name_version(name, version)}",
        body=body,
        headers={"Content-Type": content_type or "", **(headers or {})},
        reads="response",
    )


def kserve_v1(name: str, instances: list[Any], explain: bool = False) -> Call:
    body, headers = _json_body({"instances": instances})
    verb = "explain" if explain else "predict"
    return Call(
        "POST", "inference", f"/v1/models/{segment(name)}:{verb}", body=body, headers=headers
    )


def _v2_path(name: str, version: str | None) -> str:
    return f"/v2/models/{segment(name)}" + (f"/versions/{segment(version)}" if version else "")


def kserve_v2_infer(
    name: str,
    inputs: list[dict[str, Any]],
    version: str | None = None,
    request_id: str | None = None,
) -> Call:
    payload: dict[str, Any] = {"inputs": inputs}
    if request_id:
        payload["id"] = request_id
    body, headers = _json_body(payload)
    return Call("POST", "inference", _v2_path(name, version) + "/infer", body=body, headers=headers)


def v2_metadata(name: str, version: str | None = None) -> Call:
    return Call("GET", "inference", _v2_path(name, version))


def forward(
    method: str, path_and_query: str, body: bytes | None, headers: Mapping[str, str]
) -> Call:
    """Any inference route, passed on as it came (the server extension's curl path)."""
    return Call(method, "inference", path_and_query, body=body, headers=headers, reads="response")


# -- management --------------------------------------------------------------------------------
def engine_status() -> Call:
    """`GET /engine`: ours, not TorchServe's (version, pid, GPUs, limits)."""
    return Call("GET", "management", "/engine")


def list_models(limit: int | None = None, next_page_token: str | int | None = None) -> Call:
    return Call("GET", "management", "/models", query(limit=limit, next_page_token=next_page_token))


def every_model(page_size: int = PAGE_SIZE) -> Exchange[list[dict[str, Any]]]:
    """Every registered model, following `nextPageToken` until the pages run out."""
    models: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        call = list_models(page_size, token)
        page = call.read((yield call)) or {}
        models.extend(page.get("models", []))
        token = page.get("nextPageToken")
        if not token or not page.get("models"):
            return models


def describe(name: str, version: str | None = None, customized: bool = False) -> Call:
    """`GET /models/{name}[/{version}]`; version `all` lists every version."""
    return Call(
        "GET", "management", model_path(name, version), query(customized=customized or None)
    )


def register(url: str, **params: Any) -> Call:
    """`POST /models?url=...`; `params` are named as in `REGISTER_PARAMS`."""
    return Call("POST", "management", "/models", query(url=url, **params))


def scale(name: str, version: str | None = None, **params: Any) -> Call:
    """`PUT /models/{name}[/{version}]`; `params` are named as in `SCALE_PARAMS`."""
    return Call("PUT", "management", model_path(name, version), query(**params))


def set_default(name: str, version: str) -> Call:
    return Call("PUT", "management", model_path(name, version, "/set-default"))


def unregister(name: str, version: str | None = None) -> Call:
    return Call("DELETE", "management", model_path(name, version))


def canary(name: str) -> Call:
    """`GET /models/{name}/canary`: ours, not TorchServe's (the default route's split)."""
    return Call("GET", "management", model_path(name, suffix="/canary"))


def start_canary(name: str, version: str, percent: float) -> Call:
    """`PUT /models/{name}/canary`: send `percent` % of the default route to `version`."""
    params = query(version=version, percent=f"{percent:g}")
    return Call("PUT", "management", model_path(name, suffix="/canary"), params)


def end_canary(name: str) -> Call:
    return Call("DELETE", "management", model_path(name, suffix="/canary"))


def logs(name: str, tail: int | None = None) -> Call:
    """`GET /models/{name}/logs`: ours, not TorchServe's (the worker log's last lines)."""
    return Call(
        "GET", "management", model_path(name, suffix="/logs"), query(tail=tail), reads="text"
    )


# -- metrics -----------------------------------------------------------------------------------
def metrics(names: list[str] | None = None) -> Call:
    """`GET /metrics`, Prometheus text; `names` keeps only those families (`name[]`)."""
    return Call("GET", "metrics", "/metrics", query(**{"name[]": names or None}), reads="text")


# -- driving exchanges -------------------------------------------------------------------------
def run(exchange: Exchange[T], send: Callable[[Call], Response]) -> T:
    """Drive an exchange with a blocking transport."""
    try:
        call = next(exchange)
        while True:
            call = exchange.send(send(call))
    except StopIteration as done:
        return done.value


async def run_async(exchange: Exchange[T], send: Callable[[Call], Awaitable[Response]]) -> T:
    """Drive an exchange with an asynchronous transport."""
    try:
        call = next(exchange)
        while True:
            call = exchange.send(await send(call))
    except StopIteration as done:
        return done.value
