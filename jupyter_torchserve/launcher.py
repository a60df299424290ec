"""Start, find and stop engine subprocesses.

The engine runs in its own session (`start_new_session`) so that a kernel restart, a closed
terminal or a Ctrl-C in a notebook never takes it down; it is found again through its
discovery file. Start-up failures (a port in use, a bad config) are read back from the
engine's own log and raised here, so the user sees them in the cell, not in a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import contract, discovery
from .config import EngineConfig, StateDirUnusable, loaded_engine_config
from .discovery import EngineInfo


class EngineStartError(RuntimeError):
    pass


def engine_command(config: dict[str, Any], ts_config: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "jupyter_torchserve", "start", "--foreground"]
    if config:
        cmd.append("--config-json=" + json.dumps(config))
    if ts_config:
        cmd.append(f"--ts-config={ts_config}")
    return cmd


def start_engine(timeout: float = 60.0, ts_config: str | None = None, **config: Any) -> EngineInfo:
    """Start an engine subprocess and return its discovery info once it answers /ping.

    `config` holds `EngineConfig` trait values (inference_address, model_store, ...); the
    values of this process's config files (:func:`~.config.loaded_engine_config`) fill in.
    """
    config = {**loaded_engine_config(), **config}
    cfg = EngineConfig(**config)
    try:
        state_dir = cfg.resolved_state_dir()
    except StateDirUnusable as e:
        raise EngineStartError(str(e)) from None
    log_path = state_dir / "engine.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            engine_command(config, ts_config),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    info = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineStartError(
                f"The engine exited during start-up (code {proc.returncode}):\n"
                + _tail(log_path, 30)
            )
        info = info or discovery.wait_for_engine(proc.pid, 0.05)
        if info and _ping(info):
            info["log_file"] = str(log_path)
            return info
        time.sleep(0.02)
    proc.kill()
    raise EngineStartError(
        f"The engine did not answer within {timeout:.0f} s:\n" + _tail(log_path, 30)
    )


def ensure_engine(**config: Any) -> EngineInfo:
    """The running engine if there is one (matching the given addresses), else a new one."""
    wanted = {k: config[k] for k in ("inference_address", "management_address") if k in config}
    for info in discovery.find_engines():
        if all(info.get(k) == v for k, v in wanted.items()) and _ping(info):
            return info
    return start_engine(**config)


def stop_engine(info: EngineInfo | None = None, timeout: float | None = None) -> bool:
    """Stop an engine (the newest one by default). Returns False when none was running.

    SIGTERM asks it to answer what it has received and stop; one still running after
    `timeout` seconds is killed. By default that is the engine's own `stop_timeout` (its
    discovery info: `shutdown_timeout` plus its workers' exit), so a stop configured to
    wait longer is not cut short; an engine too old to say gets 20 s."""
    info = info or discovery.find_engine()
    if info is None:
        return False
    if timeout is None:
        timeout = float(info.get("stop_timeout") or 20.0)
    pid = int(info["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        discovery.remove_discovery(pid)
        return False
    deadline = time.monotonic() + timeout
    while discovery.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if discovery.pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    discovery.remove_discovery(pid)
    return True


def _ping(info: EngineInfo) -> bool:
    """Whether the engine answers `/ping` at all: 500 (a model short of workers) counts."""
    from .client import Client

    try:
        return Client.from_info(info, timeout=2).send(contract.ping()).status in (200, 500)
    except contract.EngineError:
        return False


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
