"""The server extension's one way to the engine: find it, send it contract calls, start it.

The `Gateway` finds the engine through its discovery file on every call (so a `%torchserve`
restart is picked up at once), keeps the keys server-side (read from the key file, never
handed to the browser), and sends `contract.Call`s with Tornado's `AsyncHTTPClient`, so a
slow model never blocks the Jupyter server's event loop. What a call means (paths,
parameters, errors, paging) is `contract.py`'s, shared with the notebook's `Client`.

An engine serving https (often with a self-signed certificate) is trusted through the
`certificate_file` its discovery file names, pinned: that certificate and no other
(`engine.tls.pinned_context`), never by turning verification off.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_torchserve import contract, discovery
from jupyter_torchserve.contract import (
    Call,
    EngineEndpoint,
    EngineError,
    EngineNotRunning,
    Response,
)
from jupyter_torchserve.discovery import EngineInfo
from jupyter_torchserve.engine.tls import pinned_context
from jupyter_torchserve.prometheus import Family, parse

from .metrics import summarize
from .store import attach_evaluations

#: Sent to the browser when no engine is running; the sidebar shows it next to a Start button.
NOT_RUNNING_MESSAGE = (
    "The TorchServe engine is not running. Start it from the sidebar, with "
    "`%torchserve start` in a notebook, or with `jupyter-torchserve start`."
)

#: TorchServe's default `max_request_size` (bytes), used when the engine does not report its own.
DEFAULT_MAX_REQUEST_SIZE = 6553500

#: Request headers of the browser that travel on to the inference API. `Authorization` and
#: cookies are Jupyter's own credentials and must not leak to the engine.
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "Explain", "X-Request-Id", "Model-Version")

#: Keys of the discovery file that are safe to show in the browser.
PUBLIC_DISCOVERY_KEYS = (
    "pid",
    "started",
    "version",
    "inference_address",
    "management_address",
    "metrics_address",
    "grpc_inference_address",
    "grpc_management_address",
    "model_store",
    "log_dir",
)


class Gateway:
    """One per Jupyter server; the handlers share it."""

    def __init__(
        self,
        *,
        request_timeout: float = 120.0,
        start_options: dict[str, Any] | None = None,
        log: Any = None,
    ) -> None:
        self.request_timeout = request_timeout
        self.start_options = dict(start_options or {})
        self.log = log
        self._client = AsyncHTTPClient()
        self._lifecycle_lock = asyncio.Lock()
        # the pinned context of the engine's certificate, kept while the file is unchanged
        self._tls: tuple[tuple[str, int, int], ssl.SSLContext] | None = None

    # -- discovery --------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        """The live engine's discovery info; `EngineNotRunning` when there is none."""
        info = discovery.find_engine()
        if not info:
            raise EngineNotRunning(NOT_RUNNING_MESSAGE)
        return info

    def log_file(self, name: str) -> Path | None:
        """`{log_dir}/{name}.log`, the file a follow streams from, if it is on this machine."""
        try:
            log_dir = self.info().get("log_dir")
        except EngineNotRunning:
            return None
        if not log_dir or "/" in name or name.startswith("."):
            return None
        return Path(log_dir) / f"{name}.log"

    # -- transport --------------------------------------------------------------------------
    def ssl_context(self, info: EngineInfo) -> ssl.SSLContext | None:
        """What an https engine is checked against: its own certificate, pinned; None (the
        system's CAs) when its discovery file names none. A new engine (a restart, a new
        certificate) is picked up as the file changes."""
        cert = info.get("certificate_file")
        if not cert:
            return None
        try:
            st = os.stat(cert)
        except OSError as exc:
            raise EngineError(
                502, "EngineNotTrusted", f"cannot read the engine's certificate {cert}: {exc}"
            ) from exc
        key = (cert, st.st_mtime_ns, st.st_size)
        if self._tls is None or self._tls[0] != key:
            try:
                self._tls = (key, pinned_context(cert))
            except ValueError as exc:
                raise EngineError(502, "EngineNotTrusted", str(exc)) from exc
        return self._tls[1]

    async def send(
        self, call: Call, *, timeout: float | None = None, info: EngineInfo | None = None
    ) -> Response:
        """Send one call to the engine and return its answer, error statuses included."""
        info = info or self.info()
        endpoint = EngineEndpoint.from_info(info)
        url = endpoint.url(call)
        pinned = self.ssl_context(info) if url.startswith("https:") else None
        body = call.body
        if body is None and call.method in ("POST", "PUT", "PATCH"):
            body = b""  # Tornado wants a body on these verbs
        request = HTTPRequest(
            url,
            method=call.method,
            body=body,
            headers=endpoint.headers(call),
            request_timeout=timeout or self.request_timeout,
            connect_timeout=5,
            follow_redirects=False,
            decompress_response=True,
            allow_nonstandard_methods=True,
            ssl_options=pinned,
        )
        start = time.perf_counter()
        try:
            resp = await self._client.fetch(request, raise_error=False)
        except ssl.SSLError as exc:  # before OSError, its base: a running but untrusted port
            raise untrusted(url, info, exc) from exc
        except (ConnectionError, OSError) as exc:
            raise EngineNotRunning(f"{NOT_RUNNING_MESSAGE} ({exc})") from exc
        elapsed = (time.perf_counter() - start) * 1000
        if resp.code == 599:
            err = resp.error
            if isinstance(err, ssl.SSLError):
                raise untrusted(url, info, err)
            if isinstance(err, (ConnectionError, OSError)):
                raise EngineNotRunning(f"{NOT_RUNNING_MESSAGE} ({err})")
            raise contract.no_answer(err)
        return Response(
            resp.code,
            resp.headers.get("Content-Type", ""),
            resp.body or b"",
            dict(resp.headers.get_all()),
            elapsed,
        )

    async def call(self, call: Call, **kwargs: Any) -> Any:
        """Send one call and read its answer (an error answer raises `EngineError`)."""
        return call.read(await self.send(call, **kwargs))

    async def forward(
        self, method: str, path_and_query: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Response:
        """A browser's (or curl's) inference request; only harmless headers travel on."""
        passed = {n: headers[n] for n in FORWARDED_REQUEST_HEADERS if headers.get(n)}
        return await self.send(contract.forward(method, path_and_query, body, passed))

    # -- engine -----------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """Engine status for the sidebar: `{"running": false, "message"}` when there is none."""
        try:
            info = self.info()
        except EngineNotRunning as exc:
            return {"running": False, "message": exc.message}
        public = {k: info.get(k) for k in PUBLIC_DISCOVERY_KEYS if k in info}
        try:
            resp = await self.send(contract.engine_status(), timeout=10, info=info)
        except EngineNotRunning as exc:
            return {"running": False, "message": exc.message, **public}
        status: dict[str, Any] = {"running": True, **public}
        if resp.status < 400:
            try:
                data = resp.json()
            except ValueError:
                data = None
            if isinstance(data, dict):
                data.pop("key_file", None)
                status.update(data)
        status.setdefault("gpus", [])
        status.setdefault("max_request_size", DEFAULT_MAX_REQUEST_SIZE)
        status["token_auth"] = discovery.read_keys(info).management is not None
        return status

    async def start(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start an engine (or return the one already running), off the event loop."""
        async with self._lifecycle_lock:
            try:
                self.info()
            except EngineNotRunning:
                from jupyter_torchserve import launcher

                kwargs = {**self.start_options, **(options or {})}
                try:
                    await asyncio.to_thread(launcher.start_engine, **kwargs)
                except (TypeError, ValueError, RuntimeError, OSError, TimeoutError) as exc:
                    raise EngineError(
                        500, "EngineStartError", f"could not start the engine: {exc}"
                    ) from exc
            return await self.status()

    async def stop(self) -> dict[str, Any]:
        """Stop the running engine; stopping an engine that is not there is not an error."""
        async with self._lifecycle_lock:
            try:
                info = self.info()
            except EngineNotRunning:
                return {"running": False, "message": NOT_RUNNING_MESSAGE}
            from jupyter_torchserve import launcher

            await asyncio.to_thread(launcher.stop_engine, info)
            return {"running": False, "message": "The engine was stopped."}

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[dict[str, Any]]:
        return await contract.run_async(contract.every_model(), self.send)

    async def describe_all(self, name: str) -> list[dict[str, Any]]:
        """Every version of a model, with `isDefault` set on the default one."""
        versions, default = await asyncio.gather(
            self.call(contract.describe(name, "all")),
            self.call(contract.describe(name)),
        )
        if isinstance(default, list):
            default = default[0] if default else {}
        default_version = (default or {}).get("modelVersion")
        for v in versions:
            v.setdefault("isDefault", v.get("modelVersion") == default_version)
        return versions

    async def families(self) -> list[Family]:
        """The engine's metrics page, parsed."""
        return parse(await self.call(contract.metrics(), timeout=10))

    async def overview(self) -> dict[str, Any]:
        """One poll's worth for the sidebar: engine, models with versions, per-model stats."""
        status = await self.status()
        if not status.get("running"):
            return {"engine": status, "models": [], "metrics": None}
        entries = await self.list_models()
        described = await asyncio.gather(
            *(self.describe_all(m["modelName"]) for m in entries), return_exceptions=True
        )
        try:
            metrics = summarize(await self.families())
        except (EngineError, ValueError) as exc:
            metrics = {"error": str(exc), "models": {}, "totals": {}}
        models = []
        for entry, versions in zip(entries, described, strict=True):
            name = entry["modelName"]
            item: dict[str, Any] = {"modelName": name, "modelUrl": entry.get("modelUrl")}
            if isinstance(versions, BaseException):
                # a model unregistered between the list and the describe: show it, say why
                item["versions"] = []
                item["error"] = str(versions)
            else:
                item["versions"] = versions
            item["stats"] = metrics["models"].get(name, {})
            models.append(item)
        # each version's held-out report, from its archive in the store (evaluation.py)
        await asyncio.to_thread(attach_evaluations, status.get("model_store"), models)
        return {"engine": status, "models": models, "metrics": metrics}


def untrusted(url: str, info: EngineInfo, exc: BaseException) -> EngineError:
    """The port answered TLS with a certificate we do not trust: not the engine's own (the
    one its discovery file names) or, with none named, not one the system trusts."""
    cert = info.get("certificate_file")
    trusted = (
        f"its own certificate {cert}" if cert else "the system's CAs (it names no certificate_file)"
    )
    return EngineError(
        502,
        "EngineNotTrusted",
        f"the engine at {url.split('/', 3)[2]} did not present a certificate trusted by "
        f"{trusted}: {exc}",
    )
