"""Thin Tornado handlers over `logic.Gateway`, mounted under `{base_url}/torchserve/`.

Every verb is `@tornado.web.authenticated` (no Jupyter credentials -> 403, as APIHandler turns
the login redirect into a 403); jupyter_server checks XSRF on every state-changing verb of a
cookie-authenticated request, while a request carrying the Jupyter token in its `Authorization`
header (curl) needs none. Engine errors keep the engine's status and TorchServe's JSON shape
`{code, type, message}`; no engine -> 503 with a message the sidebar shows.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from http.client import responses
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from .logic import (
    FORWARDED_RESPONSE_HEADERS,
    EngineHTTPError,
    EngineNotRunning,
    EngineResponse,
    Gateway,
    model_path,
)

#: Query parameters of TorchServe's register call that the sidebar may pass on.
REGISTER_PARAMS = (
    "url",
    "model_name",
    "handler",
    "runtime",
    "batch_size",
    "max_batch_delay",
    "initial_workers",
    "synchronous",
    "response_timeout",
    "startup_timeout",
)
SCALE_PARAMS = ("min_worker", "max_worker", "number_gpu", "synchronous", "timeout")


def engine_errors(
    method: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    """Answer engine failures as JSON with the engine's own status (not a generic 500)."""

    @functools.wraps(method)
    async def wrapper(self: TorchServeHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except EngineNotRunning as exc:
            self.reply_error(503, "EngineNotRunning", exc.message)
        except EngineHTTPError as exc:
            self.reply_error(exc.status, exc.type, exc.message)

    return wrapper


class TorchServeHandler(APIHandler):
    """Common helpers: the gateway, JSON bodies, and errors in TorchServe's shape."""

    @property
    def gateway(self) -> Gateway:
        return self.settings["jupyter_torchserve_gateway"]

    def reply_error(self, status: int, type_: str, message: str) -> None:
        reason = None if status in responses else "Engine Error"
        self.set_status(status, reason=reason)
        self.finish(json.dumps({"code": status, "type": type_, "message": message}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """HTTP errors of our own (bad parameters) in the same `{code,type,message}` shape."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError):
            message = exc.log_message or responses.get(status_code, "Error")
            if exc.args[2:]:
                message = message % exc.args[2:]
            type_ = "BadRequest" if status_code == 400 else responses.get(status_code, "Error")
        else:
            message, type_ = responses.get(status_code, "Unhandled error"), "InternalServerError"
        self.finish(json.dumps({"code": status_code, "type": type_, "message": message}))

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError as exc:
            raise web.HTTPError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return data

    def params(self, names: tuple[str, ...]) -> dict[str, str]:
        """Parameters from the query string, overridden by a JSON body's keys."""
        out = {n: self.get_query_argument(n) for n in names if self.get_query_argument(n, None)}
        for key, value in self.json_body().items():
            if key in names and value is not None:
                out[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return out

    def relay(self, resp: EngineResponse) -> None:
        """Send an engine response on as is (body untouched, only safe headers)."""
        reason = None if resp.status in responses else "Engine Response"
        self.set_status(resp.status, reason=reason)
        for name in FORWARDED_RESPONSE_HEADERS:
            if name in resp.headers and name != "Content-Type":
                self.set_header(name, resp.headers[name])
        self.set_header("X-Torchserve-Latency-Ms", f"{resp.elapsed_ms:.2f}")
        ctype = resp.headers.get("Content-Type", "application/octet-stream")
        self.finish(resp.body, set_content_type=ctype)


class EngineHandler(TorchServeHandler):
    """GET: status (200 with `running: false` when there is none); POST: start; DELETE: stop."""

    @web.authenticated
    @engine_errors
    async def get(self) -> None:
        self.finish(json.dumps(await self.gateway.status()))

    @web.authenticated
    @engine_errors
    async def post(self) -> None:
        options = self.json_body()
        try:
            status = await self.gateway.start(options)
        except (TypeError, ValueError, RuntimeError, OSError, TimeoutError) as exc:
            self.reply_error(500, "EngineStartError", f"could not start the engine: {exc}")
            return
        self.finish(json.dumps(status))

    @web.authenticated
    @engine_errors
    async def delete(self) -> None:
        self.finish(json.dumps(await self.gateway.stop()))


class OverviewHandler(TorchServeHandler):
    """Everything the sidebar polls, in one request."""

    @web.authenticated
    @engine_errors
    async def get(self) -> None:
        data = await self.gateway.overview()
        if not data["engine"].get("running"):
            raise EngineNotRunning(data["engine"].get("message") or "")
        self.finish(json.dumps(data))


class ModelsHandler(TorchServeHandler):
    """GET: TorchServe's model list; POST: register an archive of the model store."""

    @web.authenticated
    @engine_errors
    async def get(self) -> None:
        self.finish(json.dumps({"models": await self.gateway.list_models()}))

    @web.authenticated
    @engine_errors
    async def post(self) -> None:
        params = self.params(REGISTER_PARAMS)
        if not params.get("url"):
            raise web.HTTPError(400, "`url` (an archive in the model store) is required")
        params.setdefault("synchronous", "true")
        params.setdefault("initial_workers", "1")
        resp = await self.gateway.management("POST", "/models", query=params, timeout=600)
        self.relay(resp)


class ModelHandler(TorchServeHandler):
    """GET: describe (all versions, or one); PUT: scale workers; DELETE: unregister."""

    @web.authenticated
    @engine_errors
    async def get(self, name: str, version: str | None = None) -> None:
        if version:
            self.relay(await self.gateway.management("GET", model_path(name, version)))
        else:
            self.finish(json.dumps(await self.gateway.describe_all(name)))

    @web.authenticated
    @engine_errors
    async def put(self, name: str, version: str | None = None) -> None:
        params = self.params(SCALE_PARAMS)
        if "min_worker" not in params:
            raise web.HTTPError(400, "`min_worker` is required")
        params.setdefault("synchronous", "true")
        path = model_path(name, version)
        self.relay(await self.gateway.management("PUT", path, query=params, timeout=600))

    @web.authenticated
    @engine_errors
    async def delete(self, name: str, version: str | None = None) -> None:
        path = model_path(name, version)
        self.relay(await self.gateway.management("DELETE", path, timeout=120))


class SetDefaultHandler(TorchServeHandler):
    @web.authenticated
    @engine_errors
    async def put(self, name: str, version: str) -> None:
        path = model_path(name, version, "/set-default")
        self.relay(await self.gateway.management("PUT", path))


class PredictHandler(TorchServeHandler):
    """A test prediction from the sidebar: the body and its content type go on untouched."""

    @web.authenticated
    @engine_errors
    async def post(self, name: str) -> None:
        version = self.get_query_argument("version", None)
        path = "/predictions/" + model_path(name, version)[len("/models/") :]
        headers = {"Content-Type": self.request.headers.get("Content-Type", "")}
        resp = await self.gateway.inference("POST", path, body=self.request.body, headers=headers)
        self.relay(resp)


class SampleHandler(TorchServeHandler):
    """The archive's stored sample input, so the Test tab can send it with one click."""

    @web.authenticated
    @engine_errors
    async def get(self, name: str) -> None:
        version = self.get_query_argument("version", None)
        versions = await self.gateway.describe_all(name)
        chosen = [
            v
            for v in versions
            if (v.get("modelVersion") == version if version else v.get("isDefault"))
        ] or versions
        url = (chosen[0].get("modelUrl") if chosen else None) or ""
        sample = await asyncio.to_thread(self.gateway.sample_input, url)
        if sample is None:
            self.reply_error(
                404, "SampleNotFound", f"the archive of {name!r} stores no sample input"
            )
            return
        data, ctype, protocol = sample
        # where the body goes: "predictions" (/predictions/{m}) or "v2" (/v2/models/{m}/infer)
        self.set_header("X-Torchserve-Sample-Protocol", protocol)
        self.finish(data, set_content_type=ctype)


class StoreHandler(TorchServeHandler):
    """Archives in the model store, for the sidebar's Register list."""

    @web.authenticated
    @engine_errors
    async def get(self) -> None:
        archives = await asyncio.to_thread(self.gateway.model_store_archives)
        self.finish(json.dumps({"archives": archives}))


class MetricsHandler(TorchServeHandler):
    """Prometheus text parsed into JSON families plus per-model numbers for the charts."""

    @web.authenticated
    @engine_errors
    async def get(self) -> None:
        from .logic import parse_metrics, summarize_metrics

        families = parse_metrics(await self.gateway.metrics_text())
        summary = summarize_metrics(families)
        self.finish(json.dumps({**summary, "families": families}))


def _tail_lines(path: Path, n: int) -> tuple[list[str], int]:
    """The last `n` lines of a file and the offset after them (where following starts)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        block = 64 * 1024
        data = b""
        pos = size
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:] if n else [], size


class LogsHandler(TorchServeHandler):
    """`?tail=N` -> text; `?follow=1` or `Accept: text/event-stream` -> server-sent events.

    Following reads `{log_dir}/{model}.log` on this machine (the engine's log route gives no
    stream); each event carries `{"lines": [...]}`; a comment line every 15 s keeps proxies open.
    """

    _closed = False
    poll_interval = 0.5

    def on_connection_close(self) -> None:
        self._closed = True

    @web.authenticated
    @engine_errors
    async def get(self, name: str) -> None:
        try:
            tail = max(0, min(int(self.get_query_argument("tail", "200")), 10000))
        except ValueError as exc:
            raise web.HTTPError(400, "`tail` must be an integer") from exc
        follow = self.get_query_argument("follow", "") in ("1", "true") or (
            "text/event-stream" in self.request.headers.get("Accept", "")
        )
        if not follow:
            resp = await self.gateway.management(
                "GET", model_path(name, suffix="/logs"), query={"tail": tail}
            )
            path = self.gateway.log_file(name)
            if resp.status == 404 and path is not None and path.is_file():
                # an engine without the log route: read the file it writes
                lines, _ = await asyncio.to_thread(_tail_lines, path, tail)
                self.finish(
                    "\n".join(lines) + ("\n" if lines else ""),
                    set_content_type="text/plain; charset=utf-8",
                )
                return
            resp.raise_for_status()
            self.finish(resp.body, set_content_type="text/plain; charset=utf-8")
            return
        await self.gateway.management_json("GET", model_path(name))  # unknown model -> 404
        path = self.gateway.log_file(name)
        if path is None:
            self.reply_error(404, "LogNotFound", f"no log file for {name!r} on this machine")
            return
        await self._follow(path, tail)

    async def _send(self, lines: list[str]) -> None:
        self.write(f"data: {json.dumps({'lines': lines})}\n\n")
        await self.flush()

    async def _follow(self, path: Path, tail: int) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        pos = 0
        if path.is_file():
            lines, pos = await asyncio.to_thread(_tail_lines, path, tail)
        else:
            lines = []
        partial = b""
        last_beat = time.monotonic()
        try:
            await self._send(lines)
            while not self._closed:
                await asyncio.sleep(self.poll_interval)
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    size = 0
                if size < pos:  # truncated or rotated: start again from the top
                    pos, partial = 0, b""
                if size > pos:
                    with open(path, "rb") as f:
                        f.seek(pos)
                        chunk = f.read(min(size - pos, 1 << 20))
                    pos += len(chunk)
                    data = partial + chunk
                    *complete, partial = data.split(b"\n")
                    if complete:
                        await self._send([c.decode("utf-8", "replace") for c in complete])
                        last_beat = time.monotonic()
                if time.monotonic() - last_beat > 15:
                    self.write(": keep-alive\n\n")
                    await self.flush()
                    last_beat = time.monotonic()
        except StreamClosedError:
            return
        if not self._closed:
            self.finish(set_content_type="text/event-stream")


class InferenceForwardHandler(TorchServeHandler):
    """`{base_url}/torchserve/{predictions,explanations,v1,v2,ping}/...` -> the inference port,
    so a user who can reach only Jupyter can curl with their Jupyter token."""

    def _rest(self) -> str:
        prefix = url_path_join(self.base_url, "torchserve")
        return self.request.uri[len(prefix) :] if self.request.uri else "/"

    async def _forward(self) -> None:
        headers = {k: v for k, v in self.request.headers.get_all()}
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        resp = await self.gateway.inference(
            self.request.method or "GET", self._rest(), body=body, headers=headers
        )
        self.relay(resp)

    @web.authenticated
    @engine_errors
    async def get(self, _path: str) -> None:
        await self._forward()

    @web.authenticated
    @engine_errors
    async def post(self, _path: str) -> None:
        await self._forward()

    @web.authenticated
    @engine_errors
    async def put(self, _path: str) -> None:
        await self._forward()

    @web.authenticated
    @engine_errors
    async def delete(self, _path: str) -> None:
        await self._forward()


_NAME = r"([^/]+)"


def route_table(base_url: str) -> list[tuple[str, type[TorchServeHandler]]]:
    """All routes, joined onto the server's base URL (most specific first)."""
    root = url_path_join(base_url, "torchserve")
    table: list[tuple[str, type[TorchServeHandler]]] = [
        (r"/engine/?", EngineHandler),
        (r"/overview/?", OverviewHandler),
        (r"/models/?", ModelsHandler),
        (rf"/models/{_NAME}/logs/?", LogsHandler),
        (rf"/models/{_NAME}/predict/?", PredictHandler),
        (rf"/models/{_NAME}/sample/?", SampleHandler),
        (rf"/models/{_NAME}/{_NAME}/set-default/?", SetDefaultHandler),
        (rf"/models/{_NAME}/?", ModelHandler),
        (rf"/models/{_NAME}/{_NAME}/?", ModelHandler),
        (r"/store/?", StoreHandler),
        (r"/metrics/?", MetricsHandler),
        (r"/((?:predictions|explanations|v1|v2|ping)(?:/.*)?)", InferenceForwardHandler),
    ]
    return [(root + pattern, handler) for pattern, handler in table]
