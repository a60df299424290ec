"""What the server extension does, kept apart from the Tornado handlers so it can be reasoned
about (and tested) without a request in flight.

The `Gateway` finds the engine through its discovery file, holds the management token (read from
the key file, never handed to the browser) and talks to the engine's three ports with Tornado's
`AsyncHTTPClient`, so a slow model never blocks the Jupyter server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_torchserve.prometheus import parse as parse_metrics

from .metrics import summarize as summarize_metrics

#: Sent to the browser when no engine is running; the sidebar shows it next to a Start button.
NOT_RUNNING_MESSAGE = (
    "The TorchServe engine is not running. Start it from the sidebar, with "
    "`%torchserve start` in a notebook, or with `jupyter-torchserve start`."
)

#: TorchServe's default `max_request_size` (bytes), used when the engine does not report its own.
DEFAULT_MAX_REQUEST_SIZE = 6553500

#: Response headers of the engine that may travel back to the browser (never auth headers).
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "X-Request-Id", "Cache-Control", "Location")

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
    "model_store",
    "log_dir",
)


#: Request bodies `deploy()` writes next to an archive (`{name}-{version}.example.*`).
EXAMPLE_TYPES = (
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".json", "application/json"),
    (".txt", "text/plain"),
)


class EngineNotRunning(Exception):
    """No live engine was found, or its port refused the connection."""

    status = 503

    def __init__(self, message: str = NOT_RUNNING_MESSAGE) -> None:
        super().__init__(message)
        self.message = message


class EngineHTTPError(Exception):
    """The engine answered with an error; carries TorchServe's `{code, type, message}`."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"code": self.status, "type": self.type, "message": self.message}


@dataclass
class EngineResponse:
    """A raw answer of the engine, kept as bytes so bodies are forwarded untouched."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def raise_for_status(self) -> None:
        if self.status >= 400:
            raise error_from_response(self)


@dataclass
class Engine:
    """One discovered engine: its public addresses and the credentials we keep server-side."""

    info: dict[str, Any]
    inference_url: str
    management_url: str
    metrics_url: str
    management_key: str | None = None
    inference_key: str | None = None
    public: dict[str, Any] = field(default_factory=dict)


def base_url(address: str | None) -> str:
    """`http://0.0.0.0:8080`, `127.0.0.1:8080` or `https://h:1` -> a URL we can connect to."""
    if not address:
        return ""
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def read_keys(key_file: str | None) -> tuple[str | None, str | None]:
    """Management and inference keys from TorchServe's `key_file.json` layout."""
    if not key_file:
        return None, None
    try:
        data = json.loads(Path(key_file).read_text())
    except (OSError, ValueError):
        return None, None
    mgmt = (data.get("management") or {}).get("key")
    inf = (data.get("inference") or {}).get("key")
    return mgmt, inf


def error_from_response(resp: EngineResponse) -> EngineHTTPError:
    """Turn an engine error into TorchServe's JSON shape, whatever the engine sent."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and "message" in data:
        return EngineHTTPError(
            int(data.get("code") or resp.status),
            str(data.get("type") or "EngineError"),
            str(data["message"]),
        )
    text = resp.body.decode("utf-8", "replace").strip()[:2000]
    return EngineHTTPError(resp.status, "EngineError", text or f"engine answered {resp.status}")


def model_path(name: str, version: str | None = None, suffix: str = "") -> str:
    """`/models/{name}[/{version}]{suffix}` with each part percent-encoded."""
    path = "/models/" + quote(name, safe="")
    if version:
        path += "/" + quote(version, safe="")
    return path + suffix


class Gateway:
    """The server extension's single way to the engine (one per Jupyter server)."""

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

    # -- discovery --------------------------------------------------------------------------
    def engine(self) -> Engine:
        """The live engine, re-read each time so a `%torchserve` restart is picked up at once."""
        from jupyter_torchserve import discovery

        info = discovery.find_engine()
        if not info:
            raise EngineNotRunning()
        mgmt_key, inf_key = read_keys(info.get("key_file"))
        return Engine(
            info=info,
            inference_url=base_url(info.get("inference_address")),
            management_url=base_url(info.get("management_address")),
            metrics_url=base_url(info.get("metrics_address")),
            management_key=mgmt_key,
            inference_key=inf_key,
            public={k: info.get(k) for k in PUBLIC_DISCOVERY_KEYS if k in info},
        )

    # -- raw HTTP ---------------------------------------------------------------------------
    async def _fetch(
        self,
        url: str,
        method: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> EngineResponse:
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        request = HTTPRequest(
            url,
            method=method,
            body=body,
            headers=headers or {},
            request_timeout=timeout or self.request_timeout,
            connect_timeout=5,
            follow_redirects=False,
            decompress_response=True,
            allow_nonstandard_methods=True,
        )
        start = time.perf_counter()
        try:
            resp = await self._client.fetch(request, raise_error=False)
        except (ConnectionError, OSError) as exc:
            raise EngineNotRunning(f"{NOT_RUNNING_MESSAGE} ({exc})") from exc
        elapsed = (time.perf_counter() - start) * 1000
        if resp.code == 599:
            err = resp.error
            if isinstance(err, (ConnectionError, OSError)):
                raise EngineNotRunning(f"{NOT_RUNNING_MESSAGE} ({err})")
            raise EngineHTTPError(504, "GatewayTimeout", f"engine did not answer: {err}")
        return EngineResponse(resp.code, dict(resp.headers.get_all()), resp.body or b"", elapsed)

    async def management(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> EngineResponse:
        """A call on the management port, with the management token added here."""
        engine = self.engine()
        hdrs = dict(headers or {})
        if engine.management_key:
            hdrs["Authorization"] = f"Bearer {engine.management_key}"
        url = engine.management_url + path
        query = {k: v for k, v in (query or {}).items() if v is not None and v != ""}
        if query:
            url += "?" + urlencode(query)
        return await self._fetch(url, method, body=body, headers=hdrs, timeout=timeout)

    async def management_json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self.management(method, path, **kwargs)
        resp.raise_for_status()
        try:
            return resp.json()
        except ValueError:
            return {"status": resp.body.decode("utf-8", "replace")}

    async def inference(
        self,
        method: str,
        path_and_query: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> EngineResponse:
        """A call on the inference port; only harmless request headers travel on."""
        engine = self.engine()
        hdrs = {}
        for name in FORWARDED_REQUEST_HEADERS:
            value = (headers or {}).get(name)
            if value:
                hdrs[name] = value
        if engine.inference_key:
            hdrs["Authorization"] = f"Bearer {engine.inference_key}"
        return await self._fetch(
            engine.inference_url + path_and_query, method, body=body, headers=hdrs
        )

    async def metrics_text(self) -> str:
        engine = self.engine()
        resp = await self._fetch(engine.metrics_url + "/metrics", "GET", timeout=10)
        resp.raise_for_status()
        return resp.body.decode("utf-8", "replace")

    # -- engine -----------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """Engine status for the sidebar: `{"running": false, "message"}` when there is none."""
        try:
            engine = self.engine()
        except EngineNotRunning as exc:
            return {"running": False, "message": exc.message}
        status: dict[str, Any] = {"running": True, **engine.public}
        try:
            resp = await self.management("GET", "/engine", timeout=10)
        except EngineNotRunning as exc:
            return {"running": False, "message": exc.message, **engine.public}
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
        status["token_auth"] = engine.management_key is not None
        return status

    async def start(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start an engine (or return the one already running), off the event loop."""
        async with self._lifecycle_lock:
            try:
                self.engine()
            except EngineNotRunning:
                from jupyter_torchserve import launcher

                kwargs = {**self.start_options, **(options or {})}
                await asyncio.to_thread(launcher.start_engine, **kwargs)
            return await self.status()

    async def stop(self) -> dict[str, Any]:
        """Stop the running engine; stopping an engine that is not there is not an error."""
        async with self._lifecycle_lock:
            try:
                engine = self.engine()
            except EngineNotRunning:
                return {"running": False, "message": NOT_RUNNING_MESSAGE}
            from jupyter_torchserve import launcher

            await asyncio.to_thread(launcher.stop_engine, engine.info)
            return {"running": False, "message": "The engine was stopped."}

    # -- models -----------------------------------------------------------------------------
    async def list_models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            data = await self.management_json(
                "GET", "/models", query={"limit": 1000, "next_page_token": token}
            )
            models.extend(data.get("models", []))
            token = data.get("nextPageToken")
            if not token:
                return models

    async def describe_all(self, name: str) -> list[dict[str, Any]]:
        """Every version of a model, with `isDefault` set on the default one."""
        versions, default = await asyncio.gather(
            self.management_json("GET", model_path(name, suffix="/all")),
            self.management_json("GET", model_path(name)),
        )
        if isinstance(default, list):
            default = default[0] if default else {}
        default_version = (default or {}).get("modelVersion")
        for v in versions:
            v.setdefault("isDefault", v.get("modelVersion") == default_version)
        return versions

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
            metrics = summarize_metrics(parse_metrics(await self.metrics_text()))
        except (EngineHTTPError, EngineNotRunning, ValueError) as exc:
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
        return {"engine": status, "models": models, "metrics": metrics}

    def model_store_archives(self) -> list[dict[str, Any]]:
        """Archives in the model store that `register` can take by file name."""
        store = self.engine().info.get("model_store")
        if not store or not os.path.isdir(store):
            return []
        out = []
        for entry in sorted(Path(store).iterdir()):
            is_archive = entry.suffix in (".mar", ".zip") or entry.name.endswith(".tar.gz")
            is_dir = entry.is_dir() and (entry / "MAR-INF" / "MANIFEST.json").is_file()
            if is_archive or is_dir:
                stat = entry.stat()
                out.append({"url": entry.name, "size": stat.st_size, "modified": stat.st_mtime})
        return out

    def sample_input(self, model_url: str) -> tuple[bytes, str, str] | None:
        """A ready-to-send sample request for the model in `model_url`: `(body, type, protocol)`.

        First the example `deploy()` wrote next to the archive (`{stem}.example.png|json|txt`,
        the very body its parity check sent to `/predictions`; protocol `"predictions"`), else
        the archive's stored sample input (our `MAR-INF/jupyter_torchserve.json`), which is a
        KServe v2 request document (protocol `"v2"`).
        """
        store = self.engine().info.get("model_store")
        if not store or "/" in model_url or model_url.startswith("."):
            return None
        path = Path(store) / model_url
        stem = path.name
        for suffix in (".mar", ".zip", ".tar.gz"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        for ext, ctype in EXAMPLE_TYPES:
            example = Path(store) / f"{stem}.example{ext}"
            if example.is_file():
                try:
                    return example.read_bytes(), ctype, "predictions"
                except OSError:
                    break
        try:
            if path.is_dir():
                meta = json.loads((path / "MAR-INF" / "jupyter_torchserve.json").read_text())
                sample = meta.get("sample_input")
                if not sample or "/" in sample or sample.startswith("."):
                    return None
                data = (path / sample).read_bytes()
            elif zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as zf:
                    meta = json.loads(zf.read("MAR-INF/jupyter_torchserve.json"))
                    sample = meta.get("sample_input")
                    if not sample:
                        return None
                    data = zf.read(sample)
            else:
                return None
        except (OSError, KeyError, ValueError):
            return None
        ctype = "application/json" if str(sample).endswith(".json") else "application/octet-stream"
        return data, ctype, "v2"

    def log_file(self, name: str) -> Path | None:
        """`{log_dir}/{name}.log`, the file a follow streams from, if it is on this machine."""
        try:
            log_dir = self.engine().info.get("log_dir")
        except EngineNotRunning:
            return None
        if not log_dir or "/" in name or name.startswith("."):
            return None
        return Path(log_dir) / f"{name}.log"
