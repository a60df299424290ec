"""`/predictions`, `/explanations` and KServe's infer routes answered straight from a parsed
request (http1.py).

These routes carry nearly all inference traffic, and for a small model the HTTP machinery
around a request cost more than the model. A TorchServe request becomes a Job whose answer
is written as soon as the worker's frame arrives (`Job.on_done`): no RequestHandler, no
coroutine, no gather.
The answers are the ones `inference.PredictionsHandler` gives (same status lines, headers,
errors and metrics); form and multipart bodies, OPTIONS and anything unusual go to that
handler through Tornado. KServe v1 `:predict`/`:explain` and v2 `/infer` run kserve.py's
envelope functions (shared with their Tornado handlers) as a task, without a RequestHandler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .errors import ApiError, unexpected_error
from .http1 import Connection, Request, Router
from .inference import (
    check_response_size,
    handler_headers,
    run_jobs,
    submit_job,
)
from .jobs import Job, Reply
from .kserve import v1_predict, v2_error_body, v2_infer

log = logging.getLogger("jupyter_torchserve.engine")

if TYPE_CHECKING:
    from .core import Engine
    from .model import ModelVersion

# the same routes as app.py's `/predictions/{SEG}(?:/{SEG})?(/.*)?` and KServe's infer routes
_ROUTE = re.compile(r"/(predictions|explanations)/([^/]+)(?:/([^/]+))?(/.*)?\Z")
_V1 = re.compile(r"/v1/models/([^/:]+):(\w+)\Z")
_V2 = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer\Z")
_PREFIXES = ("/predictions/", "/explanations/", "/v1/models/", "/v2/models/")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def make_router(engine: Engine) -> Router:
    def route(conn: Connection, req: Request) -> bool:
        if req.method not in ("POST", "PUT") or not req.target.startswith(_PREFIXES):
            return False
        path = req.path
        if path.startswith(("/v1/", "/v2/")):
            return req.method == "POST" and _kserve(engine, conn, req, path)
        m = _ROUTE.match(path)
        if m is None:
            return False
        ctype = req.headers.get("content-type", "")
        if ctype.partition(";")[0].strip().lower() in _FORMS:
            return False  # the handler parses forms (rare, and not worth a second parser)
        kind, name, version, extra = m.groups()
        try:
            name, version = _arg(name), _arg(version)
        except UnicodeDecodeError:
            return False  # Tornado's 400 for an undecodable path argument
        _predict(engine, conn, req, name, version or None, extra, kind, ctype)
        return True

    return route


def _kserve(engine: Engine, conn: Connection, req: Request, path: str) -> bool:
    """KServe v1 predict/explain and v2 infer: the envelope code of kserve.py, run as a task
    whose result is written when it completes (and which a hang-up cancels)."""
    m1 = _V1.match(path)
    m2 = None if m1 else _V2.match(path)
    if m1 is None and m2 is None:
        return False
    try:
        args = [_arg(g) for g in (m1 or m2).groups()]  # type: ignore[union-attr]
    except UnicodeDecodeError:
        return False
    request_id = str(uuid.uuid4())
    id_header = {"x-request-id": request_id}
    error_body = ApiError.to_json if m1 else v2_error_body
    try:
        engine.authorize("inference", req.headers.get("authorization"))
    except ApiError as e:
        conn.respond_error(e, id_header, error_body)
        return True

    def run(mv: ModelVersion, url_version: str | None, items: Any, headers: Any) -> Any:
        return run_jobs(engine, mv, url_version, items, headers, request_id)

    headers = handler_headers(req.raw_headers, {})
    if m1:
        coro = v1_predict(engine, args[0], args[1], req.body, headers, run)
    else:
        coro = v2_infer(engine, args[0], args[1] or None, req.body, headers, run)
    task = asyncio.ensure_future(coro)

    def hang_up() -> None:
        task.cancel()  # run_jobs withdraws the queued jobs
        engine.metrics.response("inference", 499)

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
        conn.respond_error(exc, id_header, error_body)

    conn.on_lost = hang_up
    task.add_done_callback(finished)
    return True


def _arg(value: str | None) -> str | None:
    """Unquote a path argument as Tornado does (no `+` to space; UTF-8 or an error)."""
    return unquote(value, errors="strict") if value and "%" in value else value


def _predict(
    engine: Engine,
    conn: Connection,
    req: Request,
    name: str,
    version: str | None,
    extra: str | None,
    kind: str,
    ctype: str,
) -> None:
    request_id = str(uuid.uuid4())
    exchange = _Exchange(engine, conn, version, {"x-request-id": request_id})
    try:
        engine.authorize("inference", req.headers.get("authorization"))
        exchange.mv = engine.get_version(name, version)
        extra_headers = {}
        if extra:
            extra_headers["url_path"] = extra.lstrip("/")
        if kind == "explanations":
            extra_headers["explain"] = "True"
        job = exchange.job = Job(
            id=request_id,
            headers=handler_headers(req.raw_headers, extra_headers),
            params=[("body", ctype or "application/octet-stream", req.body)],
            future=asyncio.get_running_loop().create_future(),
            on_chunk=exchange.on_chunk,
            on_done=exchange.answered,
        )
        # before submitting: the answer may come while it is being submitted
        conn.on_lost = exchange.hang_up
        submit_job(engine, exchange.mv, version, job)
    except ApiError as e:
        conn.respond_error(e, exchange.id_header)


class _Exchange:
    """One request's way back: streamed chunks, the answer, or the client hanging up."""

    __slots__ = ("engine", "conn", "version", "id_header", "mv", "job", "streamed", "failed")

    def __init__(
        self, engine: Engine, conn: Connection, version: str | None, id_header: dict[str, str]
    ) -> None:
        self.engine = engine
        self.conn = conn
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
        self.engine.metrics.response("inference", 499)

    def answered(self, job: Job) -> None:
        assert self.mv is not None
        conn = self.conn
        self.engine.metrics.request_answered(self.mv, self.version, job)
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
            check_response_size(self.engine.config.max_response_size, reply)
        except ApiError as e:
            err = e
        except Exception as e:  # noqa: BLE001 - every failure is a JSON answer
            err = unexpected_error(e)
        else:
            headers = dict(self.id_header)
            content_type = reply.content_type
            for k, v in reply.headers.items():
                low = k.lower()
                if low == "content-type":
                    content_type = v
                elif low != "content-length":
                    headers[k] = v
            try:
                conn.respond(reply.status, content_type, reply.body, headers, reply.reason)
                return
            except ValueError as e:  # nothing was written: say why instead
                err = _invalid_response(e)
        if self.streamed:
            conn.end_chunks(err.status)  # the headers went out already; end the stream cleanly
        else:
            conn.respond_error(err, self.id_header)


def _invalid_response(exc: ValueError) -> ApiError:
    return ApiError(500, "InternalServerException", f"The handler's response is invalid: {exc}")
