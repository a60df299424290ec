"""What every API handler shares: JSON errors, token checks, bounded request bodies.

Bodies are streamed (`stream_request_body`) so an oversized upload is refused with
TorchServe's 413 as soon as its Content-Length (or its running size) passes
`max_request_size`, instead of being read into memory first.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from tornado import web

from ...contract import OWNER_HEADER
from .. import params
from ..errors import ApiError, not_found_route, unexpected_error
from ..registry import ModelRegistry

log = logging.getLogger("jupyter_torchserve.engine")


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    api = "inference"  # which key protects this handler: "inference" | "management" | None

    def initialize(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False

    def set_default_headers(self) -> None:
        self.set_header("x-request-id", str(uuid.uuid4()))
        self.clear_header("Server")

    # -- auth -----------------------------------------------------------------------------
    def prepare(self) -> None:
        if self.api is not None:
            self.registry.authorize(self.api, self.request.headers.get("Authorization"))
        length = self.request.headers.get("Content-Length")
        limit = self.registry.config.max_request_size
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(
                413,
                "RequestEntityTooLarge",
                f"Request body of {int(length)} bytes exceeds max_request_size ({limit} bytes)",
            )

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.registry.config.max_request_size:
            self._too_large = True
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        if self._too_large:
            limit = self.registry.config.max_request_size
            raise ApiError(
                413,
                "RequestEntityTooLarge",
                f"Request body exceeds max_request_size ({limit} bytes)",
            )
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    # -- answers --------------------------------------------------------------------------
    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, indent=2))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            err = exc
        elif isinstance(exc, web.HTTPError) and exc.status_code == 405:
            err = ApiError(
                405,
                "MethodNotAllowedException",
                "Requested method is not allowed, please refer to API document.",
            )
        elif isinstance(exc, web.HTTPError):
            err = ApiError(
                exc.status_code,
                "BadRequestException" if exc.status_code < 500 else "InternalServerException",
                exc.log_message or self._reason,
            )
        else:
            err = unexpected_error(exc)
        self.set_status(err.status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.error_body(err), indent=2))

    def error_body(self, err: ApiError) -> dict[str, Any]:
        return err.to_json(self.is_owner())

    def is_owner(self) -> bool:
        """Whether the caller may see a worker's traceback (errors.ApiError)."""
        return self.registry.is_owner(self.request.headers.get(OWNER_HEADER))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            return  # an expected answer, not a server fault
        super().log_exception(typ, value, tb)

    def on_finish(self) -> None:
        self.registry.metrics.response(self.api or "metrics", self.get_status())

    # -- parameters -----------------------------------------------------------------------
    def int_arg(self, name: str, default: int | None = None) -> int | None:
        raw = self.get_query_argument(name, None)
        return default if raw is None or raw == "" else params.integer(name, raw)

    def float_arg(self, name: str, default: float | None = None) -> float | None:
        raw = self.get_query_argument(name, None)
        return default if raw is None or raw == "" else params.seconds(name, raw)

    def bool_arg(self, name: str, default: bool) -> bool:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        value = raw.strip().lower()
        if value not in ("true", "false", "1", "0"):
            raise ApiError(
                400, "BadRequestException", f"Parameter {name} must be true or false, got {raw!r}"
            )
        return value in ("true", "1")


class NotFoundHandler(BaseHandler):
    api = None

    def prepare(self) -> None:
        raise not_found_route()
