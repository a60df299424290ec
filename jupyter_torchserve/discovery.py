"""Discovery files: how kernels, the CLI and the Jupyter server find a running engine.

A running engine writes `jupyter-torchserve-<pid>.json` into the Jupyter runtime directory.
Readers never trust a file blindly: a file whose pid is gone (a crashed or killed engine) is
removed on sight, so a stale file never makes a client wait on a dead port.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from jupyter_core.paths import jupyter_runtime_dir

PREFIX = "jupyter-torchserve-"


class EngineInfo(TypedDict, total=False):
    """What a running engine writes into its discovery file (and readers add)."""

    pid: int
    started: float
    inference_address: str
    management_address: str
    metrics_address: str
    grpc_inference_address: str  # host:port, only when the gRPC inference API is on
    grpc_management_address: str  # host:port, only when the gRPC management API is on
    model_store: str
    key_file: str | None  # None when token authorization is off
    certificate_file: str | None  # the engine's TLS certificate, for https addresses and gRPC
    grpc_ssl: bool  # the gRPC APIs serve TLS with that certificate (enable_grpc_ssl)
    inference_token_required: bool
    log_dir: str
    state_dir: str
    version: str
    stop_timeout: float  # seconds a stop may take before `launcher.stop_engine` kills it
    discovery_file: str  # added by the reader: where this info was found
    log_file: str  # added by the launcher: the engine's own stdout/stderr


class Keys(NamedTuple):
    """The three keys of TorchServe's ``key_file.json``; None where token auth is off."""

    management: str | None = None
    inference: str | None = None
    api: str | None = None


def read_keys(info: EngineInfo | dict[str, Any] | str | os.PathLike[str] | None) -> Keys:
    """The keys of an engine (its discovery info) or of a key file (its path).

    The one reader of TorchServe's key file layout. A missing or unreadable file gives empty
    keys: the caller then gets the engine's own "token required" answer, which says what to do.
    """
    path = info.get("key_file") if isinstance(info, dict) else info
    if not path:
        return Keys()
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return Keys()
    if not isinstance(data, dict):
        return Keys()

    def key(kind: str) -> str | None:
        entry = data.get(kind)
        return entry.get("key") if isinstance(entry, dict) else None

    return Keys(key("management"), key("inference"), key("API"))


def runtime_dir() -> Path:
    """The directory discovery files live in (honours `JUPYTER_RUNTIME_DIR`)."""
    path = Path(jupyter_runtime_dir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def discovery_path(pid: int | None = None) -> Path:
    return runtime_dir() / f"{PREFIX}{pid or os.getpid()}.json"


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the state is the field after the parenthesised command name
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def write_discovery(info: EngineInfo) -> Path:
    """Write this process's discovery file atomically with mode 0600. The certificate's
    path is made absolute here, in the engine's own directory: readers run elsewhere."""
    cert = info.get("certificate_file")
    if cert:
        info = info.copy()
        info["certificate_file"] = str(Path(cert).expanduser().resolve())
    path = discovery_path(info.get("pid"))
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, path)
    return path


def remove_discovery(pid: int | None = None) -> None:
    try:
        discovery_path(pid).unlink()
    except FileNotFoundError:
        pass


def find_engines() -> list[EngineInfo]:
    """Every live engine, newest first; stale files are deleted as they are found."""
    engines = []
    for path in runtime_dir().glob(f"{PREFIX}*.json"):
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not pid_alive(pid):
            path.unlink(missing_ok=True)
            continue
        info["discovery_file"] = str(path)
        engines.append(info)
    engines.sort(key=lambda i: i.get("started", 0), reverse=True)
    return engines


def find_engine() -> EngineInfo | None:
    """The newest live engine, or None."""
    engines = find_engines()
    return engines[0] if engines else None


def select_engine(
    pid: int | None = None, port: int | None = None, management_address: str | None = None
) -> EngineInfo | None:
    """The live engine with this pid, a listener on this port, or this management address.

    The one matching rule behind ``%torchserve use`` and ``jupyter-torchserve token --pid``:
    a port names the engine whichever of its three listeners it is.
    """
    from urllib.parse import urlsplit

    for info in find_engines():
        if pid is not None and int(info["pid"]) != int(pid):
            continue
        if port is not None:
            ports = {
                urlsplit(str(info.get(k, ""))).port
                for k in ("inference_address", "management_address", "metrics_address")
            }
            if int(port) not in ports:
                continue
        if management_address is not None and str(info.get("management_address", "")).rstrip(
            "/"
        ) != management_address.rstrip("/"):
            continue
        return info
    return None


def describe_engines(engines: list[EngineInfo]) -> str:
    """One line per engine, for messages that ask the user to pick one."""
    return "\n".join(
        f"  pid {i['pid']}: inference {i.get('inference_address')}, "
        f"management {i.get('management_address')}"
        for i in engines
    )


def wait_for_engine(pid: int, timeout: float) -> EngineInfo | None:
    """Wait until the engine with this pid has written its discovery file."""
    deadline = time.monotonic() + timeout
    path = discovery_path(pid)
    while time.monotonic() < deadline:
        if path.exists():
            try:
                info = json.loads(path.read_text())
                info["discovery_file"] = str(path)
                return info
            except ValueError:
                pass
        if not pid_alive(pid):
            return None
        time.sleep(0.02)
    return None
