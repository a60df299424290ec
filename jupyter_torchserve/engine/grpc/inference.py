"""TorchServe's InferenceAPIsService (Ping, Predictions, StreamPredictions,
StreamPredictions2): each call is one job through inference/predictions.py, the same queue,
batches, workers, metrics and errors as `/predictions` over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.rpc import status_pb2

from ...protos.torchserve import inference_pb2 as pb
from ...protos.torchserve import inference_pb2_grpc as pb_grpc
from ..errors import ApiError, unexpected_error
from ..inference.predictions import check_response_size, handler_headers, run_jobs
from ..jobs import Reply
from ..registry import ModelRegistry
from .status import abort, authorize, metadata_pairs, status_code

log = logging.getLogger("jupyter_torchserve.engine")

# a gRPC input carries no content type; TorchServe hands the handler raw bytes, so do we
_INPUT_TYPE = "application/octet-stream"


class InferenceServicer(pb_grpc.InferenceAPIsServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def Ping(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        body = {"status": "Healthy" if self.registry.healthy() else "Unhealthy"}
        return pb.TorchServeHealthResponse(health=json.dumps(body, indent=2))

    async def Predictions(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            (reply,) = await self._run(request, context)
            return pb.PredictionResponse(prediction=_answer(self.registry, reply))
        except ApiError as e:
            await abort(context, e)

    async def StreamPredictions(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """The handler's intermediate responses (`send_intermediate_predict_response`) as
        they come, then its last one."""
        chunks: asyncio.Queue[Reply | None] = asyncio.Queue()
        task = asyncio.ensure_future(self._run(request, context, on_chunk=chunks.put_nowait))
        task.add_done_callback(lambda _: chunks.put_nowait(None))
        try:
            while (chunk := await chunks.get()) is not None:
                yield pb.PredictionResponse(prediction=_answer(self.registry, chunk))
            (reply,) = task.result()
            yield pb.PredictionResponse(prediction=_answer(self.registry, reply))
        except ApiError as e:
            await abort(context, e)
        finally:
            task.cancel()  # a client that left: run_jobs withdraws the job

    async def StreamPredictions2(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """One answer per request, in order; an error is sent in the answer's `status` and
        the stream stays open (TorchServe's way). A request without `sequence_id` gets a
        new `ts-seq-<uuid>`; the engine keeps no per-sequence state beyond echoing it."""
        async for request in requests:
            seq = request.sequence_id if request.HasField("sequence_id") else ""
            seq = seq or f"ts-seq-{uuid.uuid4()}"
            try:
                (reply,) = await self._run(request, context)
                yield pb.PredictionResponse(
                    prediction=_answer(self.registry, reply), sequence_id=seq
                )
            except ApiError as e:
                status = status_pb2.Status(code=status_code(e).value[0], message=e.message)
                yield pb.PredictionResponse(sequence_id=seq, status=status)

    async def _run(
        self, request: Any, context: grpc.aio.ServicerContext, on_chunk: Any = None
    ) -> list[Reply]:
        registry = self.registry
        try:
            authorize(registry, "inference", context)
            version = request.model_version or None
            mv = registry.get_version(request.model_name, version)
            if not request.input:
                raise ApiError(400, "BadRequestException", "PredictionsRequest.input is empty")
            params = [(k, _INPUT_TYPE, v) for k, v in request.input.items()]
            headers = handler_headers(metadata_pairs(context), {})
            return await run_jobs(
                registry,
                mv,
                version,
                [params],
                headers,
                str(uuid.uuid4()),
                on_chunk=on_chunk,
                protocol="grpc",
            )
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure is a status, never a hang
            log.error("gRPC prediction failed", exc_info=e)
            raise unexpected_error(e) from None


def _answer(registry: ModelRegistry, reply: Reply) -> bytes:
    """A handler's reply as `prediction` bytes; an error status it set is the call's error."""
    if reply.status >= 400:
        message = reply.body.decode("utf-8", "replace")
        try:
            message = json.loads(message).get("message", message)
        except (ValueError, AttributeError):
            pass
        raise ApiError(reply.status, "PredictionException", message)
    check_response_size(registry.config.max_response_size, reply)
    return reply.body
