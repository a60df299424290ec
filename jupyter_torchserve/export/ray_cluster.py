"""A local Ray cluster bound to loopback, and `serve deploy` / `serve status` against a cluster.

Ray needs care to stay on 127.0.0.1 (measured with Ray 2.60; ../shared/notes/
ray-on-this-machine.md): `--node-ip-address 127.0.0.1` alone is swapped for the host's
address, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` keeps every component on loopback, two
metrics ports outside the flags are moved by environment variables, and the worker port
range must not overlap any other port. `ray stop` kills every Ray process of the user, so
the cluster runs in its own session and exactly that process group is stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ports import free_port

#: Single ports Ray opens, each given explicitly so none lands on a port in use.
_PORT_FLAGS = (
    ("gcs", "--port"),
    ("dashboard", "--dashboard-port"),
    ("client_server", "--ray-client-server-port"),
    ("object_manager", "--object-manager-port"),
    ("node_manager", "--node-manager-port"),
    ("metrics_export", "--metrics-export-port"),
    ("dashboard_agent_grpc", "--dashboard-agent-grpc-port"),
    ("dashboard_agent_listen", "--dashboard-agent-listen-port"),
    ("runtime_env_agent", "--runtime-env-agent-port"),
)
_PORT_ENV = (
    ("autoscaler_metric", "AUTOSCALER_METRIC_PORT"),
    ("dashboard_metric", "DASHBOARD_METRIC_PORT"),
)
WORKER_PORTS = 150


#: how much of a failed `serve` command's output its RayError carries
SERVE_TAIL_LINES = 15


class RayError(RuntimeError):
    """Ray failed to start, deploy or report; the message carries its output."""


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None and _tool("serve").exists()


def _tool(name: str) -> Path:
    return Path(sys.executable).parent / name


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_block(size: int, taken: set[int]) -> int:
    for _ in range(200):
        base = random.randrange(20000, 40000 - size)
        block = range(base, base + size)
        if not taken.intersection(block) and all(_bindable(p) for p in block):
            taken.update(block)
            return base
    raise RayError(f"no {size} consecutive free ports for Ray's workers")


@dataclass
class RayPorts:
    ports: dict[str, int]
    min_worker: int
    max_worker: int
    serve_http: int

    @classmethod
    def free(cls) -> RayPorts:
        taken: set[int] = set()
        names = [n for n, _ in _PORT_FLAGS] + [n for n, _ in _PORT_ENV]
        ports = {n: free_port(taken) for n in names}
        serve_http = free_port(taken)
        base = _free_block(WORKER_PORTS, taken)
        return cls(ports, base, base + WORKER_PORTS - 1, serve_http)


@dataclass
class LocalRayCluster:
    """`ray start --head` on 127.0.0.1 in its own session; stop() ends exactly it."""

    num_cpus: int = 2
    object_store_bytes: int = 200 * 1024**2
    ports: RayPorts = field(default_factory=RayPorts.free)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.ports['dashboard']}"

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.serve_http}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            # On SIGTERM a node first drains, so that Serve can move its replicas to another
            # node. This cluster has no other node, so the drain could only run out its 30 s,
            # on every stop().
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        for name, variable in _PORT_ENV:
            env[variable] = str(self.ports.ports[name])
        return env

    def start(self, timeout: float = 180.0, attempts: int = 3) -> LocalRayCluster:
        """Start and wait for the node. A node that times out during start-up (Ray gives
        its agents fixed seconds to come up, which a busy 2-core machine can miss) is
        tried again on fresh ports."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except RayError as e:
                if attempt == attempts - 1 or "timed out during startup" not in str(e):
                    raise
                self.ports = RayPorts.free()
                self.temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> LocalRayCluster:
        cmd = [
            str(_tool("ray")),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--num-cpus={self.num_cpus}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={self.temp_dir}",
            f"--min-worker-port={self.ports.min_worker}",
            f"--max-worker-port={self.ports.max_worker}",
        ]
        cmd += [f"{flag}={self.ports.ports[name]}" for name, flag in _PORT_FLAGS]
        log = open(self.temp_dir / "ray-start.log", "ab")  # noqa: SIM115 - lives with proc
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        import requests

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                error = RayError(f"ray start exited ({self.proc.returncode}):\n{self.log()}")
                self.stop()
                raise error
            # `ray start --block` says so once the node registered; the dashboard may answer
            # before that and still go down with a node that failed to start
            if "Ray runtime started" in self.log(200):
                with contextlib.suppress(requests.RequestException):
                    if requests.get(self.dashboard_url + "/api/version", timeout=5).ok:
                        # its own session outlives us otherwise: a kernel that exits (or
                        # restarts) takes the cluster it started with it
                        atexit.register(self.stop)
                        return self
            time.sleep(0.5)
        self.stop()
        raise RayError(f"the Ray dashboard did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self, lines: int = 40) -> str:
        try:
            text = (self.temp_dir / "ray-start.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc = None
        atexit.unregister(self.stop)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_cli(*args: str, address: str, timeout: float = 300.0) -> str:
    """Run Ray's `serve` command against the dashboard at `address`; its output, or RayError."""
    proc = subprocess.run(
        [str(_tool("serve")), *args, "--address", address],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    if proc.returncode != 0:
        # its last line is the exception (after a chained traceback through click and
        # requests); the tail under it is for anything the last line does not say
        lines = f"{proc.stdout}{proc.stderr}".strip().splitlines() or ["(no output)"]
        tail = "\n".join(lines[-SERVE_TAIL_LINES:])
        raise RayError(f"serve {' '.join(args)} failed ({proc.returncode}): {lines[-1]}\n{tail}")
    return proc.stdout


def serve_status(address: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(serve_cli("status", address=address, timeout=60)) or {}


def running_replicas(status: dict[str, Any], app: str, deployment: str) -> int:
    apps = status.get("applications") or {}
    deployments = (apps.get(app) or {}).get("deployments") or {}
    states = (deployments.get(deployment) or {}).get("replica_states") or {}
    return int(states.get("RUNNING", 0))


def wait_running(
    address: str, app: str, deployment: str, replicas: int, timeout: float = 300.0
) -> dict[str, Any]:
    """Poll `serve status` until the application is RUNNING with `replicas` replicas."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = serve_status(address)
        app_status = ((status.get("applications") or {}).get(app) or {}).get("status")
        if app_status == "DEPLOY_FAILED":
            raise RayError(f"application {app} failed to deploy:\n{status}")
        if app_status == "RUNNING" and running_replicas(status, app, deployment) == replicas:
            return status
        time.sleep(1.0)
    raise RayError(
        f"application {app} not RUNNING with {replicas} replicas in {timeout:.0f} s:\n{status}"
    )
