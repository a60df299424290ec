"""The inference routes that nearly all traffic takes, answered straight from a parsed
request (http1.py) instead of through a Tornado RequestHandler.

For a small model the HTTP machinery around a request cost more than the model. A
TorchServe request here becomes a Job whose answer is written as soon as the worker's frame
arrives (`Job.on_done`): no RequestHandler, no coroutine, no gather. KServe v1
`:predict`/`:explain` (with a KServe envelope; any other body is a prediction) and v2
`/infer`/`/explain` run http/kserve.py's calls (the ones their Tornado
handlers run) as a task. Both prepare requests and shape answers with
inference/predictions.py, as the Tornado handlers do, so both paths give the same status
lines, headers, errors and metrics.

Each function here is a route's `fast` answer in routes.py: it returns False to leave the
request to the route's Tornado handler (form and multipart bodies, a path argument that is
not UTF-8), which then answers as it always has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from ...contract import OWNER_HEADER
from ..errors import ApiError, unexpected_error
from ..inference import kserve
from ..inference.predictions import (
    check_response_size,
    handler_headers,
    prediction_headers,
    reply_headers,
    run_jobs,
    submit_job,
)
from ..jobs import Job, Reply
from ..model import ModelVersion
from ..registry import ModelRegistry
from .http1 import Connection, Request
from .kserve import V1_VERBS, v1_http, v2_http

log = logging.getLogger("jupyter_torchserve.engine")

_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_OWNER = OWNER_HEADER.lower()

FastAnswer = Callable[..., bool]
"""(registry, connection, request, *path arguments) -> answered here (else Tornado does)."""


def v1_predict(
    registry: ModelRegistry, conn: Connection, req: Request, name: str, verb: str
) -> bool:
    explain = V1_VERBS.get(verb)
    try:
        payload = kserve.v1_envelope(req.body)
    except ApiError as refused:  # JSON too deep to read: answered as the call's error
        error = refused

        async def refuse(_run_jobs: Any) -> dict[str, Any]:
            raise error

        return _kserve(registry, conn, req, refuse, ApiError.to_json)
    if explain is not None and payload is None:
        return predict(registry, conn, req, name, None, None, explain=explain)

    def call(run_jobs: Any) -> Coroutine[Any, Any, dict[str, Any]]:
        headers = handler_headers(req.raw_headers, {})
        return v1_http(registry, name, verb, payload, headers, run_jobs)

    return _kserve(registry, conn, req, call, ApiError.to_json)


def v2_infer(
    registry: ModelRegistry,
    conn: Connection,
    req: Request,
    name: str,
    version: str | None,
    verb: str,
) -> bool:
    def call(run_jobs: Any) -> Coroutine[Any, Any, dict[str, Any]]:
        headers = handler_headers(req.raw_headers, {})
        return v2_http(registry, name, version or None, req.body, headers, run_jobs, verb)

    return _kserve(registry, conn, req, call, kserve.error_body)


def _kserve(
    registry: ModelRegistry,
    conn: Connection,
    req: Request,
    call: Callable[[Any], Coroutine[Any, Any, dict[str, Any]]],
    error_body: Callable[[ApiError, bool], dict[str, Any]],
) -> bool:
    """Run a KServe call as a task whose result is written when it completes, and which a
    hang-up cancels (run_jobs then withdraws its jobs)."""
    request_id = str(uuid.uuid4())
    id_header = {"x-request-id": request_id}
    try:
        registry.authorize("inference", req.headers.get("authorization"))
    except ApiError as e:
        conn.respond_error(e, id_header, error_body)
        return True

    def run(mv: ModelVersion, url_version: str | None, items: Any, headers: Any) -> Any:
        return run_jobs(registry, mv, url_version, items, headers, request_id)

    task = asyncio.ensure_future(call(run))

    def hang_up() -> None:
        task.cancel()  # run_jobs withdraws the queued jobs
        registry.metrics.response("inference", 499)

    def finished(t: asyncio.Task[dict[str, Any]]) -> None:
        if t.cancelled() or conn.current is not req:
            return
        exc = t.exception()
        if exc is None:
            answer = json.dumps(t.result(), indent=2).encode()
            conn.respond(200, "application/json", answer, id_header)
            return
        if not isinstance(exc, ApiError):
            log.error("KServe request failed", exc_info=exc)
            exc = unexpected_error(exc)
        owner = registry.is_owner(req.headers.get(_OWNER))
        conn.respond_error(exc, id_header, error_body, owner)

    conn.on_lost = hang_up
    task.add_done_callback(finished)
    return True


def predict(
    registry: ModelRegistry,
    conn: Connection,
    req: Request,
    name: str,
    version: str | None,
    extra: str | None,
    *,
    explain: bool,
) -> bool:
    """`/predictions/{name}[/{version}][/…]`, or `/explanations/…` with `explain`."""
    ctype = req.headers.get("content-type", "")
    if ctype.partition(";")[0].strip().lower() in _FORMS:
        return False  # the handler parses forms (rare, and not worth a second parser)
    version = version or None
    request_id = str(uuid.uuid4())
    exchange = _Exchange(registry, conn, req, version, {"x-request-id": request_id})
    try:
        registry.authorize("inference", req.headers.get("authorization"))
        exchange.mv = registry.get_version(name, version)
        job = exchange.job = Job(
            id=request_id,
            headers=prediction_headers(req.raw_headers, extra, explain),
            params=[("body", ctype or "application/octet-stream", req.body)],
            future=asyncio.get_running_loop().create_future(),
            on_chunk=exchange.on_chunk,
            on_done=exchange.answered,
        )
        # before submitting: the answer may come while it is being submitted
        conn.on_lost = exchange.hang_up
        submit_job(registry, exchange.mv, version, job)
    except ApiError as e:
        conn.respond_error(e, exchange.id_header)
    return True


class _Exchange:
    """One request's way back: streamed chunks, the answer, or the client hanging up."""

    __slots__ = (
        "registry",
        "conn",
        "req",
        "version",
        "id_header",
        "mv",
        "job",
        "streamed",
        "failed",
    )

    def __init__(
        self,
        registry: ModelRegistry,
        conn: Connection,
        req: Request,
        version: str | None,
        id_header: dict[str, str],
    ) -> None:
        self.registry = registry
        self.conn = conn
        self.req = req
        self.version = version
        self.id_header = id_header
        self.mv: ModelVersion | None = None
        self.job: Job | None = None
        self.streamed = False
        self.failed = False  # answered with an error already; the rest of the job is ignored

    def on_chunk(self, reply: Reply) -> None:
        if self.failed:
            return
        if not self.streamed:
            try:
                self.conn.start_chunks(reply.status, reply.content_type, self.id_header)
            except ValueError as e:  # nothing was written
                self.failed = True
                self.conn.respond_error(_invalid_response(e), self.id_header)
                return
            self.streamed = True
        self.conn.chunk(reply.body)

    def hang_up(self) -> None:
        if self.job is not None:
            self.job.future.cancel()  # withdrawn: dispatch skips it, a late answer is dropped
        self.registry.metrics.response("inference", 499)

    def answered(self, job: Job) -> None:
        assert self.mv is not None
        conn = self.conn
        self.registry.metrics.request_answered(self.mv, self.version, job)
        exc = job.future.exception()
        if self.failed:
            return
        try:
            if exc is not None:
                raise exc
            reply = job.future.result()
            if self.streamed:
                conn.chunk(reply.body)
                conn.end_chunks(reply.status)
                return
            check_response_size(self.registry.config.max_response_size, reply)
        except ApiError as e:
            err = e
        except Exception as e:  # noqa: BLE001 - every failure is a JSON answer
            err = unexpected_error(e)
        else:
            content_type, headers = reply_headers(reply)
            try:
                conn.respond(
                    reply.status,
                    content_type,
                    reply.body,
                    {**self.id_header, **headers},
                    reply.reason,
                )
                return
            except ValueError as e:  # nothing was written: say why instead
                err = _invalid_response(e)
        if self.streamed:
            conn.end_chunks(err.status)  # the headers went out already; end the stream cleanly
        else:
            owner = self.registry.is_owner(self.req.headers.get(_OWNER))
            conn.respond_error(err, self.id_header, with_traceback=owner)


def _invalid_response(exc: ValueError) -> ApiError:
    return ApiError(500, "InternalServerException", f"The handler's response is invalid: {exc}")
