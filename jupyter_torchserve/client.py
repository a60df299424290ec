"""A typed Python client of the engine's inference, management and metrics APIs.

It speaks TorchServe's HTTP contract, so it also works against a real TorchServe 0.12 (minus
our extra routes `GET /engine` and `GET /models/{m}/logs`). The magics, the server extension
and the tests all go through it, so there is one place that knows paths, parameters and the
shape of errors.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from . import discovery


class EngineError(Exception):
    """An error answer from the engine, with TorchServe's `{code, type, message}` fields."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message


class EngineNotRunning(EngineError):
    def __init__(self, message: str) -> None:
        super().__init__(503, "EngineNotRunning", message)


@dataclass
class Response:
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


def _encode(data: Any, content_type: str | None) -> tuple[bytes, str]:
    """Turn what a notebook user has (bytes, a path, text, JSON, an array) into a body."""
    if isinstance(data, Path):
        body = data.read_bytes()
        return body, content_type or _guess_type(data.name, body)
    if isinstance(data, (bytes, bytearray, memoryview)):
        body = bytes(data)
        return body, content_type or _guess_type("", body)
    if isinstance(data, str):
        return data.encode(), content_type or "text/plain"
    if hasattr(data, "__array__") and type(data).__module__.split(".")[0] in ("numpy", "torch"):
        import numpy as np

        if type(data).__module__.startswith("torch"):
            data = data.detach().cpu().numpy()
        buf = io.BytesIO()
        np.save(buf, np.asarray(data), allow_pickle=False)
        return buf.getvalue(), content_type or "application/x-npy"
    return json.dumps(data).encode(), content_type or "application/json"


def _guess_type(name: str, body: bytes) -> str:
    if body.startswith(b"\x89PNG"):
        return "image/png"
    if body.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if body.startswith(b"\x93NUMPY"):
        return "application/x-npy"
    if name.endswith(".json"):
        return "application/json"
    return "application/octet-stream"


class Client:
    """Client of one engine (or TorchServe) given its three addresses and management token."""

    def __init__(
        self,
        inference_address: str = "http://127.0.0.1:8080",
        management_address: str = "http://127.0.0.1:8081",
        metrics_address: str = "http://127.0.0.1:8082",
        token: str | None = None,
        inference_token: str | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.inference_address = inference_address.rstrip("/")
        self.management_address = management_address.rstrip("/")
        self.metrics_address = metrics_address.rstrip("/")
        self.token = token
        self.inference_token = inference_token
        self.timeout = timeout
        self._session = requests.Session()

    @classmethod
    def from_info(cls, info: dict[str, Any], **kwargs: Any) -> Client:
        token = inference_token = None
        if info.get("key_file"):
            keys = json.loads(Path(info["key_file"]).read_text())
            token = keys["management"]["key"]
            inference_token = keys["inference"]["key"]
        return cls(
            info["inference_address"],
            info["management_address"],
            info["metrics_address"],
            token=token,
            inference_token=inference_token,
            **kwargs,
        )

    @classmethod
    def from_discovery(cls, **kwargs: Any) -> Client:
        """The client of the newest running engine on this machine."""
        info = discovery.find_engine()
        if info is None:
            raise EngineNotRunning(
                "No jupyter_torchserve engine is running. Start one with "
                "`%torchserve start` or `jupyter-torchserve start`."
            )
        return cls.from_info(info, **kwargs)

    # -- plumbing ---------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        check: bool = True,
    ) -> Response:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if params:
            params = {k: _param(v) for k, v in params.items() if v is not None}
        try:
            r = self._session.request(
                method, url, params=params, data=body, headers=hdrs, timeout=self.timeout
            )
        except requests.ConnectionError as e:
            raise EngineNotRunning(f"Cannot reach the engine at {url}: {e}") from None
        resp = Response(
            status=r.status_code,
            content_type=r.headers.get("Content-Type", ""),
            body=r.content,
            headers=dict(r.headers),
            elapsed_ms=r.elapsed.total_seconds() * 1000,
        )
        if check and r.status_code >= 400:
            raise _error(resp)
        return resp

    def _mgmt(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._request(method, self.management_address + path, token=self.token, **kw)
        return resp.json() if resp.body else None

    # -- inference ----------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self._request(
            "GET", self.inference_address + "/ping", token=self.inference_token
        ).json()

    def predict(
        self,
        name: str,
        data: Any,
        version: str | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        explain: bool = False,
    ) -> Response:
        """POST one request to /predictions (or /explanations) and return the raw answer."""
        body, ctype = _encode(data, content_type)
        route = "explanations" if explain else "predictions"
        path = f"/{route}/{quote(name)}" + (f"/{quote(version)}" if version else "")
        hdrs = {"Content-Type": ctype, **(headers or {})}
        return self._request(
            "POST",
            self.inference_address + path,
            body=body,
            headers=hdrs,
            token=self.inference_token,
        )

    def explain(self, name: str, data: Any, **kw: Any) -> Response:
        return self.predict(name, data, explain=True, **kw)

    def kserve_v1(self, name: str, instances: list[Any], explain: bool = False) -> dict[str, Any]:
        verb = "explain" if explain else "predict"
        body = json.dumps({"instances": instances}).encode()
        return self._request(
            "POST",
            f"{self.inference_address}/v1/models/{quote(name)}:{verb}",
            body=body,
            headers={"Content-Type": "application/json"},
            token=self.inference_token,
        ).json()

    def kserve_v2_infer(
        self,
        name: str,
        inputs: list[dict[str, Any]],
        version: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"inputs": inputs}
        if request_id:
            payload["id"] = request_id
        path = f"/v2/models/{quote(name)}" + (f"/versions/{quote(version)}" if version else "")
        return self._request(
            "POST",
            self.inference_address + path + "/infer",
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            token=self.inference_token,
        ).json()

    def v2_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        path = f"/v2/models/{quote(name)}" + (f"/versions/{quote(version)}" if version else "")
        return self._request(
            "GET", self.inference_address + path, token=self.inference_token
        ).json()

    # -- management ---------------------------------------------------------------------------
    def engine_status(self) -> dict[str, Any]:
        return self._mgmt("GET", "/engine")

    def list_models(
        self, limit: int | None = None, next_page_token: str | int | None = None
    ) -> dict[str, Any]:
        return self._mgmt(
            "GET", "/models", params={"limit": limit, "next_page_token": next_page_token}
        )

    @property
    def models(self) -> list[dict[str, Any]]:
        """Every registered model (all pages), each with its default version."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self.list_models(limit=100, next_page_token=token)
            out.extend(page.get("models", []))
            token = page.get("nextPageToken")
            if not token or not page.get("models"):
                return out

    def describe(
        self, name: str, version: str | None = None, customized: bool = False
    ) -> list[dict[str, Any]]:
        path = f"/models/{quote(name)}" + (f"/{quote(version)}" if version else "")
        return self._mgmt("GET", path, params={"customized": customized or None})

    def register(
        self,
        url: str,
        model_name: str | None = None,
        handler: str | None = None,
        batch_size: int | None = None,
        max_batch_delay: int | None = None,
        initial_workers: int | None = None,
        synchronous: bool = True,
        response_timeout: float | None = None,
        startup_timeout: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        params = {
            "url": url,
            "model_name": model_name,
            "handler": handler,
            "batch_size": batch_size,
            "max_batch_delay": max_batch_delay,
            "initial_workers": initial_workers,
            "synchronous": synchronous,
            "response_timeout": response_timeout,
            "startup_timeout": startup_timeout,
            **extra,
        }
        return self._mgmt("POST", "/models", params=params)

    def scale(
        self,
        name: str,
        min_worker: int,
        max_worker: int | None = None,
        version: str | None = None,
        synchronous: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        path = f"/models/{quote(name)}" + (f"/{quote(version)}" if version else "")
        params = {
            "min_worker": min_worker,
            "max_worker": max_worker,
            "synchronous": synchronous,
            "timeout": timeout,
        }
        return self._mgmt("PUT", path, params=params)

    def set_default(self, name: str, version: str) -> dict[str, Any]:
        return self._mgmt("PUT", f"/models/{quote(name)}/{quote(version)}/set-default")

    def unregister(self, name: str, version: str | None = None) -> dict[str, Any]:
        path = f"/models/{quote(name)}" + (f"/{quote(version)}" if version else "")
        return self._mgmt("DELETE", path)

    def logs(self, name: str, tail: int = 200) -> str:
        resp = self._request(
            "GET",
            f"{self.management_address}/models/{quote(name)}/logs",
            params={"tail": tail},
            token=self.token,
        )
        return resp.text

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self, names: list[str] | None = None) -> str:
        params = {"name[]": names} if names else None
        return self._request("GET", self.metrics_address + "/metrics", params=params).text


def _param(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _error(resp: Response) -> EngineError:
    try:
        body = resp.json()
        return EngineError(
            int(body.get("code", resp.status)),
            str(body.get("type", "Error")),
            str(body.get("message") or body.get("error") or resp.text),
        )
    except (ValueError, AttributeError):
        return EngineError(resp.status, "HTTPError", resp.text[:2000])
