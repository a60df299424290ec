"""Three Tornado applications (inference, management, metrics) on one asyncio loop.

Start order is chosen for time-to-first-answer: the HTTP listeners and the discovery file come
first (so `/ping` answers in a fraction of a second), the forkserver imports torch in the
background, and models from the snapshot or `load_models` are restored after that.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import time
from typing import Any, NoReturn

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback

from .. import discovery
from .._version import __version__
from ..config import EngineConfig, split_address
from .busypoll import BusyPollSelector
from .core import Engine
from .errors import ApiError
from .fastpath import make_router
from .http1 import HTTP1Server, serve_http1
from .http_base import BaseHandler, NotFoundHandler
from .inference import ExplanationsHandler, PingHandler, PredictionsHandler
from .kserve import (
    V1ModelHandler,
    V1PredictHandler,
    V2HealthHandler,
    V2InferHandler,
    V2ModelHandler,
    V2ServerHandler,
)
from .logfiles import rotate_large_logs
from .management import (
    EngineStatusHandler,
    LogsHandler,
    ModelHandler,
    ModelsHandler,
    SetDefaultHandler,
    TokenHandler,
)
from .openapi import inference_document, management_document

log = logging.getLogger("jupyter_torchserve.engine")

LOG_CHECK_SECONDS = 10  # how often model logs are checked against model_log_max_bytes

NAME = r"([^/:]+)"
SEG = r"([^/]+)"


class ApiDescriptionHandler(BaseHandler):
    def initialize(self, engine: Engine, document: Any, api: str | None) -> None:  # type: ignore[override]
        super().initialize(engine)
        self.document = document
        self.api = api

    def get(self) -> None:
        self.write_json(self.document())

    options = get


class MetricsHandler(BaseHandler):
    api = None

    def get(self) -> None:
        from .metrics import parse_names

        names = parse_names(self.request.query_arguments)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.engine.metrics.exposition(names))


def make_apps(engine: Engine, addresses: dict[str, str]) -> dict[str, web.Application]:
    e = {"engine": engine}
    common: dict[str, Any] = {
        "default_handler_class": NotFoundHandler,
        "default_handler_args": e,
        "addresses": addresses,
        "compress_response": False,
    }
    inference = web.Application(
        [
            (
                r"/",
                ApiDescriptionHandler,
                {**e, "document": inference_document, "api": "inference"},
            ),
            (
                r"/api-description",
                ApiDescriptionHandler,
                {**e, "document": inference_document, "api": "inference"},
            ),
            (r"/ping", PingHandler, e),
            (rf"/predictions/{SEG}(?:/{SEG})?(/.*)?", PredictionsHandler, e),
            (rf"/explanations/{SEG}(?:/{SEG})?(/.*)?", ExplanationsHandler, e),
            (rf"/v1/models/{NAME}", V1ModelHandler, e),
            (rf"/v1/models/{NAME}:(\w+)", V1PredictHandler, e),
            (r"/v2/?", V2ServerHandler, e),
            (r"/v2/health/(live|ready)", V2HealthHandler, e),
            (rf"/v2/models/{SEG}(?:/versions/{SEG})?/infer", V2InferHandler, e),
            (rf"/v2/models/{SEG}(?:/versions/{SEG})?(/ready)?", V2ModelHandler, e),
        ],
        **common,
    )
    management = web.Application(
        [
            (
                r"/",
                ApiDescriptionHandler,
                {**e, "document": management_document, "api": "management"},
            ),
            (
                r"/api-description",
                ApiDescriptionHandler,
                {**e, "document": management_document, "api": "management"},
            ),
            (r"/models", ModelsHandler, e),
            (r"/engine", EngineStatusHandler, e),
            (r"/token", TokenHandler, e),
            (rf"/v1/models/{NAME}", _management_v1(), e),
            (rf"/models/{SEG}/logs", LogsHandler, e),
            (rf"/models/{SEG}/{SEG}/set-default", SetDefaultHandler, e),
            (rf"/models/{SEG}(?:/{SEG})?", ModelHandler, e),
        ],
        **common,
    )
    metrics = web.Application([(r"/metrics", MetricsHandler, e)], **common)
    return {"inference": inference, "management": management, "metrics": metrics}


def _management_v1() -> type[BaseHandler]:
    class ManagementV1(V1ModelHandler):
        api = "management"

    return ManagementV1


def _listen(app: web.Application, address: str, what: str) -> HTTPServer:
    host, port = split_address(address)
    server = HTTPServer(app, max_body_size=1 << 40, xheaders=False)
    try:
        server.listen(port, address=host)
    except OSError as e:
        _bind_failed(e, host, port, what)
    return server


async def _listen_inference(engine: Engine, app: web.Application, address: str) -> HTTP1Server:
    """The inference API on http1.py's server: the hot routes skip Tornado (fastpath.py)."""
    host, port = split_address(address)
    try:
        return await serve_http1(
            app,
            make_router(engine),
            host,
            port,
            max_request_size=lambda: engine.config.max_request_size,
            on_response=lambda status: engine.metrics.response("inference", status),
        )
    except OSError as e:
        _bind_failed(e, host, port, "inference")


def _bind_failed(e: OSError, host: str, port: int, what: str) -> NoReturn:
    if e.errno == errno.EADDRINUSE:
        holder = _port_holder(port)
        raise SystemExit(
            f"Cannot start the {what} API: port {port} on {host} is already in use"
            + (f" by {holder}" if holder else "")
            + f". Choose another with --{what}-address or stop that process."
        ) from None
    raise e


def _check_distinct(addresses: dict[str, str]) -> None:
    """Refuse one port for two APIs before binding: the second bind would otherwise fail as
    "in use" by this very engine."""
    seen: dict[int, tuple[str, str]] = {}
    for key, address in addresses.items():
        host, port = split_address(address)
        what = key.removesuffix("_address")
        other = seen.get(port)
        if other is not None and (other[1] == host or {other[1], host} & _WILDCARDS):
            raise SystemExit(
                f"Cannot start the {what} API: port {port} on {host} is already taken by"
                f" the {other[0]} API of this engine; give the inference, management and"
                " metrics APIs different ports."
            )
        seen[port] = (what, host)


_WILDCARDS = {"", "0.0.0.0", "::"}


def _port_holder(port: int) -> str | None:
    try:
        import psutil

        for conn in psutil.net_connections("inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
                p = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(p.cmdline()[:4])})"
    except Exception:  # noqa: BLE001 - best effort, needs privileges on some systems
        return None
    return None


async def serve(config: EngineConfig, selector: BusyPollSelector | None = None) -> None:
    """Run an engine until SIGTERM/SIGINT, then stop workers and clean up.

    `selector` is the running loop's, when it busy-polls: it learns from the engine when.
    """
    # one access-log line per request costs more than a tiny model's inference; errors only
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    engine = Engine(config)
    if selector is not None:
        selector.answer_due = engine.answer_due
    addresses = {
        "inference_address": config.inference_address,
        "management_address": config.management_address,
        "metrics_address": config.metrics_address,
    }
    _check_distinct(addresses)
    apps = make_apps(engine, addresses)
    inference = await _listen_inference(engine, apps["inference"], config.inference_address)
    servers = [
        _listen(apps["management"], config.management_address, "management"),
        _listen(apps["metrics"], config.metrics_address, "metrics"),
    ]
    await engine.start_worker_server()
    info = {
        "pid": os.getpid(),
        "started": time.time(),
        **addresses,
        "model_store": str(engine.model_store),
        "key_file": str(engine.keys.path) if engine.keys else None,
        "inference_token_required": config.inference_token_required,
        "log_dir": str(engine.log_dir),
        "state_dir": str(engine.state_dir),
        "version": __version__,
    }
    discovery.write_discovery(info)
    log.info(
        "engine %s serving: inference %s, management %s, metrics %s, model store %s",
        __version__,
        config.inference_address,
        config.management_address,
        config.metrics_address,
        engine.model_store,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    restore = loop.create_task(_restore(engine))
    rotation = PeriodicCallback(  # copying a 20 MiB log must not stall requests: a thread
        lambda: loop.run_in_executor(
            None, rotate_large_logs, engine.log_dir, config.model_log_max_bytes
        ),
        LOG_CHECK_SECONDS * 1000,
    )
    rotation.start()
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        rotation.stop()
        restore.cancel()
        inference.close()
        for s in servers:
            s.stop()
        await engine.shutdown()
        discovery.remove_discovery()


async def _restore(engine: Engine) -> None:
    try:
        await engine.restore()
    except ApiError as e:
        log.error("restoring models failed: %s", e.message)
    except Exception:  # noqa: BLE001
        log.exception("restoring models failed")
