"""Inference API: TorchServe's /predictions and /explanations, /ping, and the way requests
turn into jobs. KServe v1/v2 routes (kserve.py) reuse `run_jobs`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from tornado import httputil, web

from .errors import ApiError
from .http_base import BaseHandler
from .jobs import Job, Reply
from .model import ModelVersion

if TYPE_CHECKING:
    from .core import Engine

# headers a handler never needs to see (and must not see: the token)
_HIDDEN_HEADERS = {"authorization", "cookie", "content-length", "connection", "host"}


def handler_headers(pairs: Iterable[tuple[str, str]], extra: dict[str, str]) -> dict[str, str]:
    """Request headers as a handler sees them: lower-case names, no credentials."""
    headers = {k.lower(): v for k, v in pairs if k.lower() not in _HIDDEN_HEADERS}
    headers.update(extra)
    return headers


def submit_job(engine: Engine, mv: ModelVersion, url_version: str | None, job: Job) -> None:
    engine.metrics.request_received(mv, url_version)
    mv.submit(job)


def check_response_size(limit: int, reply: Reply) -> None:
    if len(reply.body) > limit:
        raise ApiError(
            500,
            "InternalServerException",
            f"Response of {len(reply.body)} bytes exceeds max_response_size ({limit} bytes)",
        )


async def run_jobs(
    engine: Engine,
    mv: ModelVersion,
    url_version: str | None,
    items: list[list[tuple[str, str, bytes]]],
    headers: dict[str, str],
    request_id: str,
    jobs: list[Job] | None = None,
    on_chunk: Any = None,
) -> list[Reply]:
    """Queue one job per item, wait for all, keep metrics. Errors propagate as ApiError.

    `jobs`, when given, fills as they are queued, so a caller that learns of a hang-up by a
    callback can withdraw them. Jobs are withdrawn (their futures cancelled, so dispatch
    skips them and a late answer is dropped) when a later item of the same request is
    refused, e.g. by a full queue, and when the waiting is cancelled: nobody would read the
    result.
    """
    loop = asyncio.get_running_loop()
    jobs = [] if jobs is None else jobs
    try:
        for i, params in enumerate(items):
            job = Job(
                id=request_id if len(items) == 1 else f"{request_id}-{i}",
                headers=headers,
                params=params,
                future=loop.create_future(),
                on_chunk=on_chunk,
            )
            submit_job(engine, mv, url_version, job)
            jobs.append(job)
    except BaseException:
        _withdraw(jobs)
        raise
    try:
        return list(await asyncio.gather(*(j.future for j in jobs)))
    except asyncio.CancelledError:
        _withdraw(jobs)
        raise
    finally:
        for job in jobs:
            if job.future.done() and not job.future.cancelled():
                engine.metrics.request_answered(mv, url_version, job)


class InferenceHandler(BaseHandler):
    def handler_headers(self, **extra: str) -> dict[str, str]:
        return handler_headers(self.request.headers.get_all(), extra)

    def body_params(self) -> list[tuple[str, str, bytes]]:
        """The request as TorchServe's handler inputs: a raw body, form fields or files."""
        body = self.body
        ctype = self.request.headers.get("Content-Type", "")
        main = ctype.split(";")[0].strip().lower()
        if main == "multipart/form-data":
            args: dict[str, list[bytes]] = {}
            files: dict[str, list[httputil.HTTPFile]] = {}
            httputil.parse_body_arguments(ctype, body, args, files, self.request.headers)
            params = [(n, "text/plain", v) for n, vs in args.items() for v in vs]
            params += [
                (n, f.content_type or "application/octet-stream", f.body)
                for n, fs in files.items()
                for f in fs
            ]
            if not params:
                raise ApiError(400, "BadRequestException", "Empty multipart request")
            return params
        if main == "application/x-www-form-urlencoded":
            # curl -d sends this by default; TorchServe fails with 500. Read what was meant.
            return _form_or_raw(body)
        return [("body", ctype or "application/octet-stream", body)]

    async def run_jobs(
        self,
        mv: ModelVersion,
        url_version: str | None,
        items: list[list[tuple[str, str, bytes]]],
        headers: dict[str, str],
        on_chunk: Any = None,
    ) -> list[Reply]:
        """`run_jobs` for this request; a hang-up withdraws its jobs and answers 499."""
        jobs: list[Job] = []
        self._jobs = jobs
        request_id = self._headers.get("x-request-id") or str(uuid.uuid4())
        try:
            return await run_jobs(
                self.engine, mv, url_version, items, headers, request_id, jobs, on_chunk
            )
        except asyncio.CancelledError:
            if self._hung_up:
                # the client is gone; nothing to answer (counted as nginx's 499)
                self.set_status(499, "Client Closed Request")
                raise web.Finish() from None
            raise

    _hung_up = False
    _jobs: Sequence[Job] = ()

    def on_connection_close(self) -> None:
        self._hung_up = True
        _withdraw(self._jobs)
        super().on_connection_close()

    def send_reply(self, reply: Reply) -> None:
        check_response_size(self.engine.config.max_response_size, reply)
        self.set_status(
            reply.status, reply.reason if reply.status not in httputil.responses else None
        )
        self.set_header("Content-Type", reply.content_type)
        for k, v in reply.headers.items():
            self.set_header(k, v)
        self.finish(reply.body)


class PingHandler(InferenceHandler):
    def get(self) -> None:
        healthy = all(
            len(v.ready_workers) >= v.min_workers or len(v.live_workers) >= v.min_workers
            for v in self.engine.all_versions()
        )
        if healthy:
            self.write_json({"status": "Healthy"})
        else:
            self.write_json({"status": "Unhealthy"}, 500)


class PredictionsHandler(InferenceHandler):
    explain = False

    async def post(self, name: str, version: str | None = None, extra: str | None = None) -> None:
        mv = self.engine.get_version(name, version or None)
        extra_headers = {}
        if extra:
            extra_headers["url_path"] = extra.lstrip("/")
        if self.explain:
            extra_headers["explain"] = "True"
        headers = self.handler_headers(**extra_headers)
        params = self.body_params()
        streamed = False

        def on_chunk(reply: Reply) -> None:
            nonlocal streamed
            if not streamed:
                self.set_status(reply.status)
                self.set_header("Content-Type", reply.content_type)
                streamed = True
            self.write(reply.body)
            self.flush()

        (reply,) = await self.run_jobs(mv, version or None, [params], headers, on_chunk)
        if streamed:
            self.finish(reply.body)
        else:
            self.send_reply(reply)

    put = post

    def options(self, name: str, version: str | None = None, extra: str | None = None) -> None:
        from .openapi import model_openapi

        mv = self.engine.get_version(name, version or None)
        self.write_json(model_openapi(mv))


class ExplanationsHandler(PredictionsHandler):
    explain = True


def _withdraw(jobs: Sequence[Job]) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.cancel()


def _form_or_raw(body: bytes) -> list[tuple[str, str, bytes]]:
    stripped = body.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            json.loads(stripped)
            return [("body", "application/json", stripped)]
        except ValueError:
            pass
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
        if pairs and all(k.replace("_", "").replace("-", "").isalnum() for k, _ in pairs):
            return [(k, "text/plain", v.encode()) for k, v in pairs]
    except (UnicodeDecodeError, ValueError):
        pass
    return [("body", "application/octet-stream", body)]
