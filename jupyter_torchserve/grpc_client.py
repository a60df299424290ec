"""A blocking client of the engine's gRPC APIs (or TorchServe's), from our own stubs.

`Client.grpc()` gives one for a running engine. It exists so a notebook can try the gRPC
path the way its production clients will call it: TorchServe's Predictions and
StreamPredictions, KServe v2 ModelInfer with raw tensors (what tritonclient sends), and the
management calls, each answering what the HTTP client's verb answers. An engine that serves
gRPC over TLS (`enable_grpc_ssl`) gets secure channels pinned to its own certificate
(`pinned_credentials`), as the HTTP client pins it on https.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import empty_pb2

from .contract import EngineError, EngineNotRunning
from .protos.kserve import predict_v2_pb2 as v2
from .protos.kserve import predict_v2_pb2_grpc as v2_grpc
from .protos.torchserve import inference_pb2 as ts
from .protos.torchserve import inference_pb2_grpc as ts_grpc
from .protos.torchserve import management_pb2 as mg
from .protos.torchserve import management_pb2_grpc as mg_grpc
from .v2_dtypes import V2_DTYPES

# gRPC code -> the HTTP status an EngineError carries (REST's for the same failure)
_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class GrpcClient:
    """`credentials` (with `target_name`, the name gRPC checks the certificate against)
    make both channels TLS; without them both are plaintext."""

    def __init__(
        self,
        inference_address: str | None,
        management_address: str | None,
        token: str | None = None,
        inference_token: str | None = None,
        timeout: float = 300.0,
        credentials: grpc.ChannelCredentials | None = None,
        target_name: str | None = None,
    ) -> None:
        if not inference_address and not management_address:
            raise EngineNotRunning(
                "This engine serves no gRPC API: start it with grpc_inference_port and "
                "grpc_management_port (config.properties, or --grpc-inference-port)"
            )
        self.timeout = timeout
        self._credentials, self._target_name = credentials, target_name
        self._inference = self._open(inference_address)
        self._management = self._open(management_address)
        self._keys = {"inference": inference_token, "management": token}

    def _open(self, address: str | None) -> grpc.Channel | None:
        """The one place channels are made: TLS with the credentials given, else plaintext."""
        if not address:
            return None
        if self._credentials is None:
            return grpc.insecure_channel(address)
        options = (
            [("grpc.ssl_target_name_override", self._target_name)] if self._target_name else []
        )
        return grpc.secure_channel(address, self._credentials, options)

    def close(self) -> None:
        for channel in (self._inference, self._management):
            if channel is not None:
                channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- TorchServe's inference service ---------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return json.loads(self._call(self._ts().Ping, empty_pb2.Empty()).health)

    def predict(
        self, name: str, data: bytes | str, version: str | None = None, key: str = "data"
    ) -> bytes:
        """`Predictions`: the handler sees `data[key]`; returns its answer's bytes."""
        return self._call(
            self._ts().Predictions, self._request(name, data, version, key)
        ).prediction

    def stream_predict(
        self, name: str, data: bytes | str, version: str | None = None, key: str = "data"
    ) -> Iterator[bytes]:
        """`StreamPredictions`: the handler's intermediate answers, then its last."""
        request = self._request(name, data, version, key)
        try:
            for reply in self._ts().StreamPredictions(
                request, metadata=self._metadata("inference"), timeout=self.timeout
            ):
                yield reply.prediction
        except grpc.RpcError as e:
            raise _error(e) from None

    # -- KServe v2 ------------------------------------------------------------------------------
    def infer(
        self, name: str, inputs: Mapping[str, Any], version: str | None = None
    ) -> dict[str, np.ndarray]:
        """`ModelInfer` with raw tensors: {input name: array} -> {output name: array}."""
        request = v2.ModelInferRequest(model_name=name, model_version=version or "")
        for input_name, value in inputs.items():
            array = np.ascontiguousarray(value)
            datatype = _DATATYPES.get(array.dtype.name)
            if datatype is None:
                raise ValueError(f"no v2 datatype for {array.dtype} ({input_name})")
            request.inputs.add(name=input_name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
        reply = self._call(self._v2().ModelInfer, request)
        out = {}
        for i, tensor in enumerate(reply.outputs):
            dtype = np.dtype(V2_DTYPES[tensor.datatype]).newbyteorder("<")
            out[tensor.name] = np.frombuffer(reply.raw_output_contents[i], dtype).reshape(
                list(tensor.shape)
            )
        return out

    def model_ready(self, name: str, version: str | None = None) -> bool:
        request = v2.ModelReadyRequest(name=name, version=version or "")
        return self._call(self._v2().ModelReady, request).ready

    # -- management -------------------------------------------------------------------------------
    def list_models(self, limit: int = 0, next_page_token: int = 0) -> dict[str, Any]:
        request = mg.ListModelsRequest(limit=limit, next_page_token=next_page_token)
        return json.loads(self._manage("ListModels", request))

    def describe(self, name: str, version: str | None = None) -> list[dict[str, Any]]:
        request = mg.DescribeModelRequest(model_name=name, model_version=version or "")
        return json.loads(self._manage("DescribeModel", request))

    def register(self, url: str, **params: Any) -> str:
        """`RegisterModel`; `params` are RegisterModelRequest's fields. Returns the sentence."""
        return self._manage("RegisterModel", mg.RegisterModelRequest(url=url, **params))

    def scale(self, name: str, min_worker: int, **params: Any) -> str:
        request = mg.ScaleWorkerRequest(model_name=name, min_worker=min_worker, **params)
        return self._manage("ScaleWorker", request)

    def set_default(self, name: str, version: str) -> str:
        request = mg.SetDefaultRequest(model_name=name, model_version=version)
        return self._manage("SetDefault", request)

    def unregister(self, name: str, version: str | None = None) -> str:
        request = mg.UnregisterModelRequest(model_name=name, model_version=version or "")
        return self._manage("UnregisterModel", request)

    # -- plumbing ---------------------------------------------------------------------------------
    def _ts(self) -> Any:
        return ts_grpc.InferenceAPIsServiceStub(self._channel("inference"))

    def _v2(self) -> Any:
        return v2_grpc.GRPCInferenceServiceStub(self._channel("inference"))

    def _manage(self, method: str, request: Any) -> str:
        stub = mg_grpc.ManagementAPIsServiceStub(self._channel("management"))
        return self._call(getattr(stub, method), request, "management").msg

    def _channel(self, api: str) -> grpc.Channel:
        channel = self._inference if api == "inference" else self._management
        if channel is None:
            raise EngineNotRunning(f"This engine serves no gRPC {api} API")
        return channel

    def _metadata(self, api: str) -> list[tuple[str, str]]:
        key = self._keys[api]
        return [("authorization", f"Bearer {key}")] if key else []

    def _call(self, method: Any, request: Any, api: str = "inference") -> Any:
        try:
            return method(request, metadata=self._metadata(api), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    @staticmethod
    def _request(name: str, data: bytes | str, version: str | None, key: str) -> Any:
        body = data.encode() if isinstance(data, str) else bytes(data)
        return ts.PredictionsRequest(
            model_name=name, model_version=version or "", input={key: body}
        )


_DATATYPES = {np.dtype(v).name: k for k, v in V2_DTYPES.items()}


def pinned_credentials(certificate_file: str) -> tuple[grpc.ChannelCredentials, str]:
    """(credentials, target name) that trust exactly the engine's own certificate, for
    `GrpcClient`: `engine.tls.grpc_pin` says why the name is taken from the certificate
    (a `CN=localhost` certificate then serves the 127.0.0.1 the engine reports)."""
    from .engine.tls import grpc_pin

    pem, name = grpc_pin(certificate_file)
    return grpc.ssl_channel_credentials(root_certificates=pem), name


def _error(e: grpc.RpcError) -> EngineError:
    code = e.code()
    if code == grpc.StatusCode.UNAVAILABLE and "connect" in (e.details() or "").lower():
        return EngineNotRunning(f"Cannot reach the engine's gRPC API: {e.details()}")
    return EngineError(_STATUS.get(code, 500), code.name, e.details() or "")
