"""How an engine error becomes a gRPC status, and how a call proves its key.

The codes are TorchServe 0.12's (`GRPCUtils.getGRPCStatusCode`, HTTP status -> gRPC code),
with two deliberate differences: an unknown model or version is NOT_FOUND where TorchServe
answers INTERNAL, and a full queue is RESOURCE_EXHAUSTED where it says UNAVAILABLE, so a
client can tell "retry later" from "no such model" without reading the message.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from ..errors import ApiError, QueueFull
from ..registry import ModelRegistry

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.PERMISSION_DENIED,  # the model API is off (TorchServe #3238)
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    416: grpc.StatusCode.OUT_OF_RANGE,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(err: ApiError) -> grpc.StatusCode:
    if err.type == "InvalidKeyException":
        return grpc.StatusCode.PERMISSION_DENIED  # REST says 400; TorchServe's gRPC this
    if isinstance(err, QueueFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return _CODES.get(err.status, grpc.StatusCode.INTERNAL)


async def abort(context: grpc.aio.ServicerContext, err: ApiError) -> NoReturn:
    await context.abort(status_code(err), err.message)
    raise AssertionError("abort returns only by raising")  # pragma: no cover


def authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The `authorization: Bearer <key>` metadata, TorchServe's way of sending a key."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


def authorize(registry: ModelRegistry, api: str, context: grpc.aio.ServicerContext) -> None:
    """Raise the REST API's invalid-key ApiError unless the call carries `api`'s key."""
    registry.authorize(api, authorization(context))


def metadata_pairs(context: grpc.aio.ServicerContext) -> list[tuple[str, str]]:
    """Text metadata as header pairs (binary `-bin` keys are left out: a handler reads
    headers as text)."""
    return [
        (k, v)
        for k, v in context.invocation_metadata() or ()
        if isinstance(v, str) and not k.startswith(":")
    ]
