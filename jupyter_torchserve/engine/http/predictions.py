"""TorchServe's inference routes under Tornado: /ping, and the /predictions and
/explanations requests the fast path leaves to it (forms, multipart, OPTIONS). The calls
themselves are inference/predictions.py's, shared with the fast path.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from urllib.parse import parse_qsl

from tornado import httputil, web

from ..errors import ApiError, bad_request
from ..inference.predictions import (
    Params,
    check_response_size,
    handler_headers,
    prediction_headers,
    reply_headers,
    run_jobs,
    withdraw,
)
from ..jobs import Job, Reply
from ..model import ModelVersion
from .base import BaseHandler


class InferenceHandler(BaseHandler):
    def handler_headers(self, **extra: str) -> dict[str, str]:
        return handler_headers(self.request.headers.get_all(), extra)

    async def run_jobs(
        self,
        mv: ModelVersion,
        url_version: str | None,
        items: list[Params],
        headers: dict[str, str],
        on_chunk: object = None,
    ) -> list[Reply]:
        """`run_jobs` for this request; a hang-up withdraws its jobs and answers 499."""
        jobs: list[Job] = []
        self._jobs = jobs
        request_id = self._headers.get("x-request-id") or str(uuid.uuid4())
        try:
            return await run_jobs(
                self.registry, mv, url_version, items, headers, request_id, jobs, on_chunk
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
        withdraw(self._jobs)
        super().on_connection_close()

    def send_reply(self, reply: Reply) -> None:
        check_response_size(self.registry.config.max_response_size, reply)
        self.set_status(
            reply.status, reply.reason if reply.status not in httputil.responses else None
        )
        content_type, headers = reply_headers(reply)
        self.set_header("Content-Type", content_type)
        for k, v in headers.items():
            self.set_header(k, v)
        self.finish(reply.body)


class PingHandler(InferenceHandler):
    def get(self) -> None:
        if self.registry.healthy():
            self.write_json({"status": "Healthy"})
        else:
            self.write_json({"status": "Unhealthy"}, 500)


class PredictionsHandler(InferenceHandler):
    explain = False

    async def post(self, name: str, version: str | None = None, extra: str | None = None) -> None:
        mv = self.registry.get_version(name, version or None)
        headers = prediction_headers(self.request.headers.get_all(), extra, self.explain)
        params = body_params(self.request.headers.get("Content-Type", ""), self.body)
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

        mv = self.registry.get_version(name, version or None)
        self.write_json(model_openapi(mv))


class ExplanationsHandler(PredictionsHandler):
    explain = True


#: Parts a multipart request may have: each one is a row of the handler's input.
MAX_PARTS = 1000


def body_params(content_type: str, body: bytes) -> Params:
    """A `/predictions` body as TorchServe's handler inputs: multipart fields and files, a
    form body read as what was meant, else the raw body. A plain function: the Ray Serve
    application parses its requests by the same rules."""
    main = content_type.split(";")[0].strip().lower()
    if main == "multipart/form-data":
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        try:
            httputil.parse_body_arguments(content_type, body, args, files)
        except httputil.HTTPInputError as e:  # no boundary, truncated: the client's
            raise bad_request(str(e)) from None
        params = [(n, "text/plain", v) for n, vs in args.items() for v in vs]
        params += [
            (n, f.content_type or "application/octet-stream", f.body)
            for n, fs in files.items()
            for f in fs
        ]
        if not params:
            raise ApiError(400, "BadRequestException", "Empty multipart request")
        if len(params) > MAX_PARTS:  # each part becomes a handler input row
            raise bad_request(f"{len(params)} multipart parts, over the limit of {MAX_PARTS}")
        return params
    if main == "application/x-www-form-urlencoded":
        # curl -d sends this by default; TorchServe fails with 500. Read what was meant.
        return _form_or_raw(body)
    return [("body", content_type or "application/octet-stream", body)]


def _form_or_raw(body: bytes) -> Params:
    stripped = body.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            json.loads(stripped)
            return [("body", "application/json", stripped)]
        except RecursionError:
            raise bad_request("Request body is not valid JSON: nested too deeply") from None
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
