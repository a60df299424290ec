"""KServe v2 / Open Inference Protocol over gRPC: GRPCInferenceService's six calls on the
inference port, under the standard name (`inference.`, what tritonclient and KServe's
client call) and TorchServe's (`org.pytorch.serve.grpc.openinference.`).

ModelInfer reads typed `contents` and `raw_input_contents` (tritonclient's default, which
TorchServe ignores) and answers in the same form it was asked in. The request itself is
inference/kserve.py's `v2_infer_tensors`, the one REST v2 runs. Triton's other calls of the
same service (ModelStreamInfer, ModelConfig, statistics, shared memory, ...) answer
UNIMPLEMENTED saying so.
"""

from __future__ import annotations

import logging
import math
import struct
import uuid
from typing import Any

import grpc
import numpy as np

from ...protos.kserve import predict_v2_pb2 as pb
from ...v2_dtypes import GRPC_CONTENTS, V2_DTYPES
from ..errors import ApiError, bad_request, unexpected_error
from ..inference import kserve
from ..inference.predictions import handler_headers, run_jobs
from ..registry import ModelRegistry
from .status import abort, authorize, metadata_pairs

log = logging.getLogger("jupyter_torchserve.engine")

SERVICE_NAMES = (
    "inference.GRPCInferenceService",
    "org.pytorch.serve.grpc.openinference.GRPCInferenceService",
)


class OipServicer:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(context, lambda: pb.ServerLiveResponse(**kserve.v2_live()))

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(
            context, lambda: pb.ServerReadyResponse(**kserve.v2_ready(self.registry))
        )

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(context, lambda: pb.ServerMetadataResponse(**kserve.v2_server()))

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def call() -> Any:
            mv = self.registry.get_version(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=kserve.v2_model_ready(request.name, mv)["ready"])

        return await self._answer(context, call)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def call() -> Any:
            entry = self.registry.get_entry(request.name)
            mv = self.registry.get_version(request.name, request.version or None)
            meta = kserve.v2_model_metadata(entry, mv)
            tensors = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensors(**t) for t in meta["inputs"]],
                outputs=[tensors(**t) for t in meta["outputs"]],
            )

        return await self._answer(context, call)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        registry = self.registry
        try:
            authorize(registry, "inference", context)
            version = request.model_version or None
            mv = registry.get_version(request.model_name, version)
            tensors = request_tensors(request)
            request_id = request.id or str(uuid.uuid4())
            headers = handler_headers(metadata_pairs(context), {})

            def run(items: Any, headers: dict[str, str]) -> Any:
                return run_jobs(registry, mv, version, items, headers, request_id, protocol="grpc")

            output = await kserve.v2_infer_tensors(mv, tensors, headers, run)
            response = pb.ModelInferResponse(
                model_name=mv.name, model_version=mv.version, id=request_id
            )
            fill_output(response, output, raw=bool(request.raw_input_contents))
            return response
        except ApiError as e:
            await abort(context, e)
        except Exception as e:  # noqa: BLE001 - every failure is a status
            log.error("gRPC ModelInfer failed", exc_info=e)
            await abort(context, unexpected_error(e))

    async def _answer(self, context: grpc.aio.ServicerContext, call: Any) -> Any:
        try:
            authorize(self.registry, "inference", context)
            return call()
        except ApiError as e:
            await abort(context, e)


def request_tensors(request: Any) -> list[kserve.Tensor]:
    """The request's inputs as kserve.Tensors, their data an ndarray (BYTES: a list of
    bytes), from `raw_input_contents` when the client sent them, else typed `contents`."""
    if not request.inputs:
        raise bad_request("ModelInferRequest has no inputs")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    out = []
    for i, tensor in enumerate(request.inputs):
        dt, shape = tensor.datatype, list(tensor.shape)
        if dt != "BYTES" and dt not in V2_DTYPES:
            raise bad_request(f"unsupported datatype {dt!r} for input {tensor.name}")
        if any(d < 0 for d in shape):
            raise bad_request(f"shape of input {tensor.name} must be non-negative: {shape}")
        if raw:
            data = _from_raw(tensor.name, dt, shape, raw[i])
        elif dt in GRPC_CONTENTS:
            data = list(getattr(tensor.contents, GRPC_CONTENTS[dt]))
            if dt != "BYTES":
                data = np.asarray(data, dtype=V2_DTYPES[dt])
        else:
            raise bad_request(f"input {tensor.name}: {dt} travels only in raw_input_contents")
        count = len(data) if isinstance(data, list) else data.size
        if count != math.prod(shape):
            raise bad_request(
                f"input {tensor.name} has {count} values but shape {shape} needs {math.prod(shape)}"
            )
        if not isinstance(data, list):
            data = data.reshape(shape)
        out.append(kserve.Tensor(tensor.name, dt, shape, data))
    return out


def _from_raw(name: str, dt: str, shape: list[int], buf: bytes) -> Any:
    if dt == "BYTES":  # each element: 4-byte little-endian length, then its bytes
        items, pos = [], 0
        while pos < len(buf):
            if pos + 4 > len(buf):
                raise bad_request(f"input {name}: truncated BYTES element")
            (n,) = struct.unpack_from("<I", buf, pos)
            if pos + 4 + n > len(buf):
                raise bad_request(f"input {name}: truncated BYTES element")
            items.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        return items
    dtype = np.dtype(V2_DTYPES[dt]).newbyteorder("<")
    if len(buf) % dtype.itemsize:
        raise bad_request(f"input {name}: {len(buf)} raw bytes is not a whole number of {dt}")
    return np.frombuffer(buf, dtype=dtype)


def fill_output(response: Any, output: dict[str, Any], raw: bool) -> None:
    """Add v2_infer_tensors' output to `response`: as raw_output_contents when the request
    came raw (tritonclient reads only those), else as typed contents."""
    dt, data = output["datatype"], output["data"]
    tensor = response.outputs.add(name=output["name"], datatype=dt, shape=output["shape"])
    if dt == "BYTES":
        elements = [d if isinstance(d, bytes) else str(d).encode() for d in data]
        if raw:
            response.raw_output_contents.append(
                b"".join(struct.pack("<I", len(e)) + e for e in elements)
            )
        else:
            tensor.contents.bytes_contents.extend(elements)
        return
    array = np.asarray(data, dtype=np.dtype(V2_DTYPES[dt]).newbyteorder("<"))
    if raw or dt not in GRPC_CONTENTS:
        response.raw_output_contents.append(array.tobytes())
    else:
        getattr(tensor.contents, GRPC_CONTENTS[dt]).extend(array.reshape(-1).tolist())


_CALLS = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


def handlers(registry: ModelRegistry) -> list[grpc.GenericRpcHandler]:
    """The servicer under both service names, and UNIMPLEMENTED for the rest of Triton's."""
    servicer = OipServicer(registry)
    methods = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString,
        )
        for name, (req, resp) in _CALLS.items()
    }
    return [grpc.method_handlers_generic_handler(s, methods) for s in SERVICE_NAMES] + [
        _TritonOnly()
    ]


class _TritonOnly(grpc.GenericRpcHandler):
    """Any other method of GRPCInferenceService: a clear UNIMPLEMENTED, without reading the
    request (a stream handler fits unary and streaming calls alike)."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = details.method.lstrip("/").rpartition("/")
        if service not in SERVICE_NAMES:
            return None
        message = (
            f"{method} is a Triton extension of GRPCInferenceService that this engine does not"
            f" serve; it serves {', '.join(_CALLS)}"
        )

        async def unimplemented(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            yield  # pragma: no cover - makes this a stream handler

        return grpc.stream_stream_rpc_method_handler(unimplemented)
