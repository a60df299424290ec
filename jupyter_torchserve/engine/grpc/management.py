"""TorchServe's ManagementAPIsService: the registry's calls, answered in `msg` as
TorchServe 0.12 answers them: the REST API's JSON for DescribeModel and ListModels, the
REST answer's status sentence for the others.

proto3 cannot tell 0 from unset, so 0 means "not given" as in TorchServe
(`GRPCUtils.getRegisterParam`): register's defaults apply, a scale to 0 workers is a scale
to 1, a list of 0 is a list of 100.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ...protos.torchserve import management_pb2 as pb
from ...protos.torchserve import management_pb2_grpc as pb_grpc
from ..errors import ApiError, method_not_allowed
from ..http.management import customized_metadata
from ..registration import Registration
from ..registry import ModelRegistry
from .status import abort, authorize

log = logging.getLogger(__name__)


class ManagementServicer(pb_grpc.ManagementAPIsServiceServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def DescribeModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> str:
            name, version = request.model_name, request.model_version or None
            if version == "all":
                versions = list(self.registry.get_entry(name).versions.values())
            else:
                versions = [self.registry.get_version(name, version)]
            out = [mv.describe_json() for mv in versions]
            if request.customized:
                for mv, item in zip(versions, out, strict=True):
                    item["customizedMetadata"] = await customized_metadata(
                        mv, self.registry.model_store
                    )
            return _json(out)

        return await self._answer(context, call)

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> str:
            limit = request.limit or 100
            return _json(self.registry.list_models(limit, max(0, request.next_page_token)))

        return await self._answer(context, call)

    async def RegisterModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> str:
            if not self.registry.config.enable_model_api:
                raise method_not_allowed()
            _, body = await self.registry.register(
                Registration(
                    request.url,
                    model_name=request.model_name or None,
                    handler=request.handler or None,
                    runtime=request.runtime or None,
                    batch_size=request.batch_size or None,
                    max_batch_delay=request.max_batch_delay or None,
                    initial_workers=request.initial_workers or None,
                    synchronous=request.synchronous,
                    response_timeout=request.response_timeout or None,
                    startup_timeout=request.startup_timeout or None,
                )
            )
            return body["status"]

        return await self._answer(context, call)

    async def ScaleWorker(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> str:
            min_worker = request.min_worker or 1
            _, body = await self.registry.scale(
                request.model_name,
                request.model_version or None,
                min_worker=min_worker,
                max_worker=request.max_worker or min_worker,
                synchronous=request.synchronous,
                timeout=request.timeout or None,
            )
            return body["status"]

        return await self._answer(context, call)

    async def SetDefault(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> str:
            return self.registry.set_default(request.model_name, request.model_version)["status"]

        return await self._answer(context, call)

    async def UnregisterModel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def call() -> str:
            if not self.registry.config.enable_model_api:
                raise method_not_allowed()
            name, version = request.model_name, request.model_version or None
            return (await self.registry.unregister(name, version))["status"]

        return await self._answer(context, call)

    async def _answer(
        self, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[str]]
    ) -> Any:
        """Run `call` to its end even when the caller goes (a deadline, a cancel): gRPC
        cancels the handler then, and a register cancelled midway would be rolled back.
        Over HTTP a client that hangs up does not stop the change either, nor in TorchServe.
        """
        try:
            authorize(self.registry, "management", context)
            task = asyncio.ensure_future(call())
            try:
                msg = await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(_log_late_failure)
                raise
            return pb.ManagementResponse(msg=msg)
        except ApiError as e:
            await abort(context, e)


def _log_late_failure(task: asyncio.Future[str]) -> None:
    """Nobody waits for the answer any more: a failure goes to the engine's log."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("a management call its caller left failed: %s", getattr(exc, "message", exc))


def _json(value: Any) -> str:
    """TorchServe's `GSON_PRETTY`: two-space indent."""
    return json.dumps(value, indent=2)
