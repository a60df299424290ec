"""`/predictions` and `/explanations` answered straight from a parsed request (http1.py).

These two routes carry nearly all inference traffic, and for a small model the HTTP machinery
around a request cost more than the model. Here a request becomes a Job and its answer is
written from the job future's done-callback: no RequestHandler, no coroutine, no gather.
The answers are the ones `inference.PredictionsHandler` gives (same status lines, headers,
errors and metrics); form and multipart bodies, OPTIONS and anything unusual go to that
handler through Tornado.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .errors import ApiError, invalid_key
from .http1 import Connection, Request, Router
from .inference import check_response_size, handler_headers, submit_job, unexpected_error
from .jobs import Job, Reply

if TYPE_CHECKING:
    from .core import Engine
    from .model import ModelVersion

# the same routes as app.py's `/predictions/{SEG}(?:/{SEG})?(/.*)?`
_ROUTE = re.compile(r"/(predictions|explanations)/([^/]+)(?:/([^/]+))?(/.*)?\Z")
_PREFIXES = ("/predictions/", "/explanations/")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def make_router(engine: Engine) -> Router:
    def route(conn: Connection, req: Request) -> bool:
        if req.method not in ("POST", "PUT") or not req.target.startswith(_PREFIXES):
            return False
        m = _ROUTE.match(req.path)
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
        keys = engine.keys
        if (
            keys is not None
            and engine.config.inference_token_required
            and not keys.check("inference", req.headers.get("authorization"))
        ):
            raise invalid_key()
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
