"""Three Tornado applications (inference, management, metrics) on one asyncio loop, each
behind http1.py's server.

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
import socket
import time
from typing import NoReturn

import grpc
from tornado.ioloop import PeriodicCallback
from tornado.web import Application

from .. import discovery
from .._version import __version__
from ..config import EngineConfig, split_address
from . import autoscale
from .busypoll import BusyPollSelector
from .errors import ApiError
from .grpc.server import grpc_addresses, start_grpc
from .http.http1 import Connection, HTTP1Server, Request, Router, serve_http1
from .http.routes import make_apps, make_router
from .logfiles import rotate_large_logs
from .model import UNLOAD_WAIT_S
from .registry import ModelRegistry
from .statelock import StateDirLock
from .tls import keystore_to_pem, server_context

log = logging.getLogger("jupyter_torchserve.engine")

LOG_CHECK_SECONDS = 10  # how often model logs are checked against model_log_max_bytes
STOP_MARGIN_S = 5.0  # beyond the drain and the workers' exit, for the rest of a stop


def _never(conn: Connection, req: Request) -> bool:
    """The management and metrics ports have no fast routes: Tornado answers everything."""
    return False


async def _listen(
    registry: ModelRegistry, app: Application, address: str, what: str, router: Router = _never
) -> HTTP1Server:
    """One port on http1.py's server. All three ports use it (not Tornado's HTTPServer) so a
    request its parser refuses (no Host, a bad request line, bad headers, too many of them)
    gets TorchServe's JSON error rather than Tornado's empty-body 400; the inference port
    adds its fast routes (fastpath.py) through `router`."""
    host, port = split_address(address)
    ssl = server_context(registry.config, address)
    try:
        return await serve_http1(
            app,
            router,
            host,
            port,
            ssl=ssl,
            max_request_size=lambda: registry.config.max_request_size,
            on_response=lambda status: registry.metrics.response(what, status),
        )
    except OSError as e:
        _bind_failed(e, host, port, what)


def _bind_failed(e: OSError, host: str, port: int, what: str) -> NoReturn:
    """One line that names the address and what to do, in place of asyncio's traceback."""
    cannot = f"Cannot start the {what} API on {host}:{port}"
    if e.errno == errno.EADDRINUSE:
        holder = _port_holder(port)
        raise SystemExit(
            f"Cannot start the {what} API: port {port} on {host} is already in use"
            + (f" by {holder}" if holder else "")
            + f". Choose another with --{what}-address or stop that process."
        ) from None
    if isinstance(e, socket.gaierror):
        raise SystemExit(f"{cannot}: the host {host!r} does not resolve ({e.strerror}).") from None
    if e.errno == errno.EADDRNOTAVAIL:
        raise SystemExit(
            f"{cannot}: {host} is not an address of this machine; use 127.0.0.1, 0.0.0.0 "
            "or one of its interfaces' addresses."
        ) from None
    if e.errno == errno.EACCES:
        raise SystemExit(
            f"{cannot}: binding port {port} needs privileges this process lacks; "
            "choose a port above 1023."
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

    `selector` is the running loop's, when it busy-polls: it learns from the pool when.
    """
    # one access-log line per request costs more than a tiny model's inference; errors only
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    lock = StateDirLock(config.resolved_state_dir())
    lock.acquire({"management_address": config.management_address})  # before any write there
    try:
        keystore_to_pem(config, config.resolved_state_dir() / "tls")
        await _serve_locked(config, selector)
    finally:
        lock.release()


async def _serve_locked(config: EngineConfig, selector: BusyPollSelector | None) -> None:
    registry = ModelRegistry(config)
    if selector is not None:
        selector.answer_due = registry.pool.answer_due
    addresses = {
        "inference_address": config.inference_address,
        "management_address": config.management_address,
        "metrics_address": config.metrics_address,
        **grpc_addresses(config),
    }
    _check_distinct(addresses)
    apps = make_apps(registry, addresses)
    servers = [
        await _listen(
            registry,
            apps["inference"],
            config.inference_address,
            "inference",
            make_router(registry),
        ),
        await _listen(registry, apps["management"], config.management_address, "management"),
        await _listen(registry, apps["metrics"], config.metrics_address, "metrics"),
    ]
    try:
        grpc_servers = await start_grpc(registry)
    except (OSError, RuntimeError) as e:
        raise SystemExit(f"Cannot start the gRPC APIs: {e}") from None
    await registry.pool.start()
    info = {
        "pid": os.getpid(),
        "started": time.time(),
        **addresses,
        "model_store": str(registry.model_store),
        "key_file": str(registry.keys.path) if registry.keys else None,
        # what our clients trust for https addresses and TLS gRPC: the engine's own certificate
        "certificate_file": config.certificate_file or None,
        "grpc_ssl": bool(config.enable_grpc_ssl),
        "inference_token_required": registry.inference_needs_key,
        "log_dir": str(registry.log_dir),
        "state_dir": str(registry.state_dir),
        "version": __version__,
        # how long a stop may take: `launcher.stop_engine` waits this long before it kills
        "stop_timeout": config.shutdown_timeout + UNLOAD_WAIT_S + STOP_MARGIN_S,
    }
    discovery.write_discovery(info)
    log.info(
        "engine %s serving: inference %s, management %s, metrics %s, model store %s",
        __version__,
        config.inference_address,
        config.management_address,
        config.metrics_address,
        registry.model_store,
    )
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        """The first SIGTERM or SIGINT stops gracefully; a second one (Ctrl+C again) ends
        the wait for the open connections at once, as uvicorn's does."""
        if stop.is_set():
            hurry.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    restore = loop.create_task(_restore(registry))
    rotation = PeriodicCallback(  # copying a 20 MiB log must not stall requests: a thread
        lambda: loop.run_in_executor(
            None, rotate_large_logs, registry.log_dir, config.model_log_max_bytes
        ),
        LOG_CHECK_SECONDS * 1000,
    )
    rotation.start()
    scaling = loop.create_task(autoscale.watch(registry.all_versions, config, stop))
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        rotation.stop()
        scaling.cancel()
        restore.cancel()
        await _drain(servers, grpc_servers, config.shutdown_timeout, hurry)
        await registry.shutdown()
        discovery.remove_discovery()


async def _drain(
    servers: list[HTTP1Server],
    grpc_servers: list[grpc.aio.Server],
    grace: float,
    hurry: asyncio.Event,
) -> None:
    """Let the ports answer what they have received, for `grace` seconds at most, while the
    workers serve on; `hurry` (a second signal) closes what is still open now."""
    busy = sum(len(s.connections) for s in servers)
    log.info(
        "answering the requests received on %d open connection(s), for %gs at most "
        "(signal again to close them now)",
        busy,
        grace,
    )
    drained = asyncio.ensure_future(
        asyncio.gather(
            *(s.drain(grace) for s in servers), *(g.stop(grace=grace) for g in grpc_servers)
        )
    )
    hurried = asyncio.ensure_future(hurry.wait())
    await asyncio.wait({drained, hurried}, return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    if not drained.done():
        log.warning("stopping now: closing the connections still open")
        for s in servers:
            s.close()
        await asyncio.gather(*(g.stop(grace=None) for g in grpc_servers))
    await drained


async def _restore(registry: ModelRegistry) -> None:
    try:
        await registry.restore()
    except ApiError as e:
        log.error("restoring models failed: %s", e.message)
    except Exception:  # noqa: BLE001
        log.exception("restoring models failed")
