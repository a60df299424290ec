"""Thin Tornado handlers over the `Gateway`, mounted under `{base_url}/torchserve/`.

Every verb is `@tornado.web.authenticated` (no Jupyter credentials -> 403, as APIHandler turns
the login redirect into a 403); jupyter_server checks XSRF on every state-changing verb of a
cookie-authenticated request, while a request carrying the Jupyter token in its `Authorization`
header (curl) needs none. Every failure is answered by `write_error` in TorchServe's JSON shape
`{code, type, message}`: an engine error with the engine's own status, no engine with 503 and a
message the sidebar shows.
"""

from __future__ import annotations

import asyncio
import json
import time
from http.client import responses
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from jupyter_torchserve import contract
from jupyter_torchserve.contract import REGISTER_PARAMS, SCALE_PARAMS, EngineError, Response

from . import store
from .gateway import Gateway
from .metrics import summarize

#: Response headers of the engine that may travel back to the browser (never auth headers).
#: x-explanation: the facts of an explanation (target, prediction, delta) the sidebar shows
FORWARDED_RESPONSE_HEADERS = ("X-Request-Id", "Cache-Control", "Location", "X-Explanation")


class TorchServeHandler(APIHandler):
    """What every route shares: the gateway, JSON bodies, relaying, and the one error shape."""

    @property
    def gateway(self) -> Gateway:
        return self.settings["jupyter_torchserve_gateway"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Whatever went wrong, answer `{code, type, message}`: an `EngineError` (the
        engine's answer, no engine, a timeout) keeps its status; our own `HTTPError`s (bad
        parameters, no login) and anything unexpected get theirs."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, EngineError):
            err = exc
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message or responses.get(status_code, "Error")
            if exc.args[2:]:
                message = message % exc.args[2:]
            type_ = "BadRequest" if status_code == 400 else responses.get(status_code, "Error")
            err = EngineError(status_code, type_, message)
        else:
            message = responses.get(status_code, "Unhandled error")
            err = EngineError(status_code, "InternalServerError", message)
        reason = None if err.status in responses else "Engine Error"
        self.set_status(err.status, reason=reason)
        self.finish(json.dumps(err.to_json()))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, EngineError):
            return  # an answer to relay, not a fault of this server
        super().log_exception(typ, value, tb)

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

    def relay(self, resp: Response) -> None:
        """Send an engine response on as is (body untouched, only safe headers)."""
        reason = None if resp.status in responses else "Engine Response"
        self.set_status(resp.status, reason=reason)
        for name in FORWARDED_RESPONSE_HEADERS:
            value = resp.header(name)
            if value is not None:
                self.set_header(name, value)
        self.set_header("X-Torchserve-Latency-Ms", f"{resp.elapsed_ms:.2f}")
        self.finish(resp.body, set_content_type=resp.content_type or "application/octet-stream")


class EngineHandler(TorchServeHandler):
    """GET: status (200 with `running: false` when there is none); POST: start; DELETE: stop."""

    @web.authenticated
    async def get(self) -> None:
        self.finish(json.dumps(await self.gateway.status()))

    @web.authenticated
    async def post(self) -> None:
        self.finish(json.dumps(await self.gateway.start(self.json_body())))

    @web.authenticated
    async def delete(self) -> None:
        self.finish(json.dumps(await self.gateway.stop()))


class OverviewHandler(TorchServeHandler):
    """Everything the sidebar polls, in one request."""

    @web.authenticated
    async def get(self) -> None:
        data = await self.gateway.overview()
        if not data["engine"].get("running"):
            raise contract.EngineNotRunning(data["engine"].get("message") or "")
        self.finish(json.dumps(data))


class ModelsHandler(TorchServeHandler):
    """GET: TorchServe's model list; POST: register an archive of the model store."""

    @web.authenticated
    async def get(self) -> None:
        self.finish(json.dumps({"models": await self.gateway.list_models()}))

    @web.authenticated
    async def post(self) -> None:
        params = self.params(REGISTER_PARAMS)
        if not params.get("url"):
            raise web.HTTPError(400, "`url` (an archive in the model store) is required")
        params.setdefault("synchronous", "true")
        params.setdefault("initial_workers", "1")
        self.relay(await self.gateway.send(contract.register(**params), timeout=600))


class ModelHandler(TorchServeHandler):
    """GET: describe (all versions, or one); PUT: scale workers; DELETE: unregister."""

    @web.authenticated
    async def get(self, name: str, version: str | None = None) -> None:
        if version:
            self.relay(await self.gateway.send(contract.describe(name, version)))
        else:
            self.finish(json.dumps(await self.gateway.describe_all(name)))

    @web.authenticated
    async def put(self, name: str, version: str | None = None) -> None:
        params = self.params(SCALE_PARAMS)
        if "min_worker" not in params:
            raise web.HTTPError(400, "`min_worker` is required")
        params.setdefault("synchronous", "true")
        call = contract.scale(name, version, **params)
        self.relay(await self.gateway.send(call, timeout=600))

    @web.authenticated
    async def delete(self, name: str, version: str | None = None) -> None:
        call = contract.unregister(name, version)
        self.relay(await self.gateway.send(call, timeout=120))


class SetDefaultHandler(TorchServeHandler):
    @web.authenticated
    async def put(self, name: str, version: str) -> None:
        self.relay(await self.gateway.send(contract.set_default(name, version)))


class PredictHandler(TorchServeHandler):
    """A test prediction from the sidebar: the body and its content type go on untouched."""

    @web.authenticated
    async def post(self, name: str) -> None:
        version = self.get_query_argument("version", None)
        ctype = self.request.headers.get("Content-Type")
        call = contract.predict(name, self.request.body, ctype, version)
        self.relay(await self.gateway.send(call))


class SampleHandler(TorchServeHandler):
    """The archive's stored sample input, so the Test tab can send it with one click."""

    @web.authenticated
    async def get(self, name: str) -> None:
        version = self.get_query_argument("version", None)
        versions = await self.gateway.describe_all(name)
        chosen = [
            v
            for v in versions
            if (v.get("modelVersion") == version if version else v.get("isDefault"))
        ] or versions
        url = (chosen[0].get("modelUrl") if chosen else None) or ""
        model_store = self.gateway.info().get("model_store")
        sample = await asyncio.to_thread(store.sample_input, model_store, url)
        if sample is None:
            raise EngineError(
                404, "SampleNotFound", f"the archive of {name!r} stores no sample input"
            )
        data, ctype, protocol = sample
        # where the body goes: "predictions" (/predictions/{m}) or "v2" (/v2/models/{m}/infer)
        self.set_header("X-Torchserve-Sample-Protocol", protocol)
        self.finish(data, set_content_type=ctype)


class ExportHandler(TorchServeHandler):
    """GET: what the sidebar may offer (the targets; Ray's "run" only where Ray is
    installed). POST: export a served model into the Jupyter root, as `%torchserve export`
    does, and answer the files written and the next commands."""

    @web.authenticated
    async def get(self, name: str) -> None:
        from jupyter_torchserve.export.options import PROTOCOLS, TARGETS
        from jupyter_torchserve.export.ray_cluster import ray_installed

        ray = await asyncio.to_thread(ray_installed)
        self.finish(json.dumps({"targets": TARGETS, "protocols": PROTOCOLS, "ray_run": ray}))

    @web.authenticated
    async def post(self, name: str) -> None:
        from jupyter_torchserve.client import Client
        from jupyter_torchserve.export import ExportError, export

        body = self.json_body()
        root = Path(self.settings.get("server_root_dir") or ".").expanduser().resolve()
        to = str(body.get("to") or "kserve")
        out = (root / str(body.get("out") or f"{name}-{to}")).resolve()
        if not out.is_relative_to(root):
            raise web.HTTPError(400, "`out` must be a folder inside the Jupyter root")
        options = {k: body[k] for k in _EXPORT_OPTIONS if body.get(k) is not None}
        client = Client.from_info(self.gateway.info(), timeout=self.gateway.request_timeout)
        try:
            bundle = await asyncio.to_thread(export, name, to=to, out=out, client=client, **options)
        except ExportError as exc:
            raise web.HTTPError(400, str(exc)) from None
        except (ValueError, TypeError) as exc:  # a knob of the wrong type from the body
            raise web.HTTPError(400, f"bad export option: {exc}") from None
        self.finish(
            json.dumps(
                {
                    "target": bundle.target,
                    "model": bundle.model,
                    "versions": bundle.versions,
                    "out": str(out.relative_to(root)),
                    "files": [str(f) for f in bundle.files],
                    "next_steps": [{"what": w, "command": c} for w, c in bundle.next_steps],
                    "notes": bundle.notes,
                    "url": bundle.url,
                    "text": str(bundle),
                }
            )
        )


#: JSON body keys of an export, passed on to `export()` as they are.
_EXPORT_OPTIONS = (
    "version", "protocol", "gpu", "min_replicas", "max_replicas", "image", "storage_uri",
    "run", "ray_address", "serve_port", "force",
)  # fmt: skip


class StoreHandler(TorchServeHandler):
    """Archives in the model store, for the sidebar's Register list."""

    @web.authenticated
    async def get(self) -> None:
        model_store = self.gateway.info().get("model_store")
        archives = await asyncio.to_thread(store.archives, model_store)
        self.finish(json.dumps({"archives": archives}))


class MetricsHandler(TorchServeHandler):
    """Prometheus text parsed into JSON families plus per-model numbers for the charts."""

    @web.authenticated
    async def get(self) -> None:
        families = await self.gateway.families()
        self.finish(json.dumps({**summarize(families), "families": families}))


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
    async def get(self, name: str) -> None:
        try:
            tail = max(0, min(int(self.get_query_argument("tail", "200")), 10000))
        except ValueError as exc:
            raise web.HTTPError(400, "`tail` must be an integer") from exc
        follow = self.get_query_argument("follow", "") in ("1", "true") or (
            "text/event-stream" in self.request.headers.get("Accept", "")
        )
        if not follow:
            resp = await self.gateway.send(contract.logs(name, tail))
            path = self.gateway.log_file(name)
            if resp.status == 404 and path is not None and path.is_file():
                # an engine without the log route: read the file it writes
                lines, _ = await asyncio.to_thread(_tail_lines, path, tail)
                text = "\n".join(lines) + ("\n" if lines else "")
                self.finish(text, set_content_type="text/plain; charset=utf-8")
                return
            resp.raise_for_status()
            self.finish(resp.body, set_content_type="text/plain; charset=utf-8")
            return
        await self.gateway.call(contract.describe(name))  # unknown model -> 404
        path = self.gateway.log_file(name)
        if path is None:
            raise EngineError(404, "LogNotFound", f"no log file for {name!r} on this machine")
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

    @web.authenticated
    async def get(self, _path: str) -> None:
        await self._forward()

    post = put = delete = get

    async def _forward(self) -> None:
        method = self.request.method or "GET"
        body = self.request.body if method in ("POST", "PUT", "PATCH") else None
        resp = await self.gateway.forward(method, self._rest(), body, self.request.headers)
        self.relay(resp)


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
        (rf"/models/{_NAME}/export/?", ExportHandler),
        (rf"/models/{_NAME}/{_NAME}/set-default/?", SetDefaultHandler),
        (rf"/models/{_NAME}/?", ModelHandler),
        (rf"/models/{_NAME}/{_NAME}/?", ModelHandler),
        (r"/store/?", StoreHandler),
        (r"/metrics/?", MetricsHandler),
        (r"/((?:predictions|explanations|v1|v2|ping)(?:/.*)?)", InferenceForwardHandler),
    ]
    return [(root + pattern, handler) for pattern, handler in table]
