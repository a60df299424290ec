"""A typed, blocking Python client of the engine's inference, management and metrics APIs.

It speaks TorchServe's HTTP contract (`contract.py`, shared with the server extension), so it
also works against a real TorchServe 0.12 (minus our extra routes `GET /engine` and
`GET /models/{m}/logs`). The notebook side and the tests go through it; what is its own is
the transport (requests) and turning what a notebook user holds into a request body.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from . import contract, discovery
from .content import guess_type
from .contract import Call, EngineEndpoint, EngineError, EngineNotRunning, Response
from .discovery import EngineInfo

if TYPE_CHECKING:
    from .grpc_client import GrpcClient

__all__ = ["Client", "EngineError", "EngineNotRunning", "Response"]


def _encode(data: Any, content_type: str | None) -> tuple[bytes, str]:
    """Turn what a notebook user has (bytes, a path, text, JSON, an array) into a body."""
    if isinstance(data, Path):
        body = data.read_bytes()
        return body, content_type or guess_type(data.name, body)
    if isinstance(data, (bytes, bytearray, memoryview)):
        body = bytes(data)
        return body, content_type or guess_type("", body)
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
        grpc_inference_address: str | None = None,
        grpc_management_address: str | None = None,
        grpc_certificate_file: str | None = None,
    ) -> None:
        """`grpc_certificate_file`: the engine serves gRPC over TLS with this certificate,
        which `grpc()` pins; None: its gRPC is plaintext."""
        self.grpc_inference_address = grpc_inference_address
        self.grpc_management_address = grpc_management_address
        self.grpc_certificate_file = grpc_certificate_file
        self.inference_address = inference_address.rstrip("/")
        self.management_address = management_address.rstrip("/")
        self.metrics_address = metrics_address.rstrip("/")
        self.token = token
        self.inference_token = inference_token
        self.timeout = timeout
        self._session = requests.Session()

    @classmethod
    def from_info(cls, info: EngineInfo, **kwargs: Any) -> Client:
        endpoint = EngineEndpoint.from_info(info)
        client = cls(
            endpoint.inference_url,
            endpoint.management_url,
            endpoint.metrics_url,
            token=endpoint.management_key,
            inference_token=endpoint.inference_key,
            grpc_inference_address=info.get("grpc_inference_address"),
            grpc_management_address=info.get("grpc_management_address"),
            grpc_certificate_file=info.get("certificate_file") if info.get("grpc_ssl") else None,
            **kwargs,
        )
        if info.get("certificate_file"):
            client.pin_certificate(info["certificate_file"])
        return client

    def pin_certificate(self, certificate_file: str) -> None:
        """Trust exactly the engine's own (often self-signed) certificate on https, as the
        sidebar's gateway does (`engine.tls.pinned_context` says why the name is not
        checked: a `CN=localhost` certificate serves the 127.0.0.1 the engine reports)."""
        self._session.mount("https://", _PinnedAdapter(certificate_file))

    @classmethod
    def from_discovery(cls, **kwargs: Any) -> Client:
        """The client of the newest running engine on this machine."""
        info = discovery.find_engine()
        if info is None:
            # how to start one depends on where the user is: each front says it
            raise EngineNotRunning("No jupyter_torchserve engine is running.")
        return cls.from_info(info, **kwargs)

    @property
    def endpoint(self) -> EngineEndpoint:
        return EngineEndpoint(
            self.inference_address,
            self.management_address,
            self.metrics_address,
            management_key=self.token,
            inference_key=self.inference_token,
        )

    def grpc(self) -> GrpcClient:
        """A client of the same engine's gRPC APIs, with the same keys (close it after use);
        over TLS, pinned to the engine's certificate, when the engine serves gRPC so."""
        from .grpc_client import GrpcClient, pinned_credentials

        credentials, name = (
            pinned_credentials(self.grpc_certificate_file)
            if self.grpc_certificate_file
            else (None, None)
        )
        return GrpcClient(
            self.grpc_inference_address,
            self.grpc_management_address,
            token=self.token,
            inference_token=self.inference_token,
            timeout=self.timeout,
            credentials=credentials,
            target_name=name,
        )

    # -- transport ----------------------------------------------------------------------------
    def send(self, request: Call) -> Response:
        """Send one call and return its answer, error statuses included."""
        endpoint = self.endpoint
        url = endpoint.url(request)
        try:
            r = self._session.request(
                request.method,
                url,
                data=request.body,
                headers=endpoint.headers(request),
                timeout=self.timeout,
            )
        except requests.ConnectionError as e:
            raise EngineNotRunning(f"Cannot reach the engine at {url}: {e}") from None
        except requests.Timeout as e:
            raise contract.no_answer(e) from None
        return Response(
            status=r.status_code,
            content_type=r.headers.get("Content-Type", ""),
            body=r.content,
            headers=dict(r.headers),
            elapsed_ms=r.elapsed.total_seconds() * 1000,
        )

    def call(self, request: Call) -> Any:
        """Send one call and read its answer (an error answer raises `EngineError`)."""
        return request.read(self.send(request))

    # -- inference ----------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self.call(contract.ping())

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
        return self.call(contract.predict(name, body, ctype, version, explain, headers))

    def explain(
        self,
        name: str,
        data: Any,
        version: str | None = None,
        content_type: str | None = None,
        target: int | list[int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """POST one request to /explanations, toward `target` (else the handler's default:
        the predicted class for our built-ins), and return the raw answer."""
        body, ctype = _encode(data, content_type)
        return self.call(contract.explain(name, body, ctype, version, target, headers))

    def kserve_v1(self, name: str, instances: list[Any], explain: bool = False) -> dict[str, Any]:
        return self.call(contract.kserve_v1(name, instances, explain))

    def kserve_v2_infer(
        self,
        name: str,
        inputs: list[dict[str, Any]],
        version: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        return self.call(contract.kserve_v2_infer(name, inputs, version, request_id))

    def v2_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.call(contract.v2_metadata(name, version))

    # -- management ---------------------------------------------------------------------------
    def engine_status(self) -> dict[str, Any]:
        return self.call(contract.engine_status())

    def list_models(
        self, limit: int | None = None, next_page_token: str | int | None = None
    ) -> dict[str, Any]:
        return self.call(contract.list_models(limit, next_page_token))

    @property
    def models(self) -> list[dict[str, Any]]:
        """Every registered model (all pages), each with its default version."""
        return contract.run(contract.every_model(), self.send)

    def describe(
        self, name: str, version: str | None = None, customized: bool = False
    ) -> list[dict[str, Any]]:
        return self.call(contract.describe(name, version, customized))

    def register(
        self,
        url: str,
        model_name: str | None = None,
        handler: str | None = None,
        runtime: str | None = None,
        batch_size: int | None = None,
        max_batch_delay: int | None = None,
        initial_workers: int | None = None,
        synchronous: bool = True,
        response_timeout: float | None = None,
        startup_timeout: float | None = None,
        device_type: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """`POST /models`; the keywords are `contract.REGISTER_PARAMS`, named so that a notebook
        completes them, and `extra` passes any other of TorchServe's through."""
        params = {k: v for k, v in locals().items() if k not in ("self", "url", "extra")}
        return self.call(contract.register(url, **params, **extra))

    def scale(
        self,
        name: str,
        min_worker: int,
        max_worker: int | None = None,
        version: str | None = None,
        synchronous: bool = True,
        timeout: float | None = None,
        number_gpu: int | None = None,
    ) -> dict[str, Any]:
        """`PUT /models/{name}[/{version}]`; the keywords are `contract.SCALE_PARAMS`."""
        params = {k: v for k, v in locals().items() if k not in ("self", "name", "version")}
        return self.call(contract.scale(name, version, **params))

    def set_default(self, name: str, version: str) -> dict[str, Any]:
        return self.call(contract.set_default(name, version))

    def unregister(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.call(contract.unregister(name, version))

    def canary(self, name: str) -> dict[str, Any]:
        """The default route's split (ours: `GET /models/{name}/canary`)."""
        return self.call(contract.canary(name))

    def start_canary(self, name: str, version: str, percent: float) -> dict[str, Any]:
        return self.call(contract.start_canary(name, version, percent))

    def end_canary(self, name: str) -> dict[str, Any]:
        return self.call(contract.end_canary(name))

    def logs(self, name: str, tail: int = 200) -> str:
        return self.call(contract.logs(name, tail))

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self, names: list[str] | None = None) -> str:
        return self.call(contract.metrics(names))


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """https with the pinned context alone: requests would otherwise hand urllib3 its CA
    bundle (`ca_certs`), which the context would load beside the pin, and any certificate
    a public CA signed, for any name, would pass."""

    def __init__(self, certificate_file: str) -> None:
        from .engine.tls import pinned_context

        self._context = pinned_context(certificate_file)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        kwargs["assert_hostname"] = False
        super().init_poolmanager(*args, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, _ = super().build_connection_pool_key_attributes(request, verify, cert)
        return host_params, {"cert_reqs": "CERT_REQUIRED"}
