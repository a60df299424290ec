"""A real TorchServe 0.12 from a separate venv (scripts/torchserve-venv.sh), for compat tests.

The venv holds torchserve==0.12.0 (+ pyyaml, its missing dependency) and torch, but NOT
jupyter_torchserve: an archive it serves proves it imports nothing from our package.
Each server gets free loopback ports, a private working directory (logs/, key files) and a
private TMPDIR/TEMP (pid file, the workers' Unix sockets), so it never meets another
TorchServe on the machine, and is stopped with ``torchserve --stop`` plus a kill of its
process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from _engine_helpers import running_engine
from _ports import free_port

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO / ".torchserve-venv"


def torchserve_venv() -> Path:
    """``$JTS_TORCHSERVE_VENV``, else ``.torchserve-venv`` in the repository root."""
    return Path(os.environ.get("JTS_TORCHSERVE_VENV") or DEFAULT_VENV)


def skip_reason() -> str | None:
    """Why the TorchServe compat tests cannot run here, or None when they can."""
    venv = torchserve_venv()
    hint = "build it with scripts/torchserve-venv.sh or point JTS_TORCHSERVE_VENV at one"
    if not (venv / "bin" / "torchserve").is_file():
        return f"no TorchServe 0.12 venv at {venv} ({hint})"
    if not (venv / "bin" / "python").exists():
        return f"{venv} has no bin/python ({hint})"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "java is not on PATH (TorchServe 0.12 needs Java 17)"
    return None


def venv_python(*code: str) -> subprocess.CompletedProcess[str]:
    """Run code in the TorchServe venv's Python, isolated (-I) and outside the repository."""
    return subprocess.run(
        [str(torchserve_venv() / "bin" / "python"), "-I", "-c", "\n".join(code)],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return env


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not found)"


class TorchServe:
    """One real TorchServe 0.12 (Java frontend + Python workers) on free loopback ports."""

    def __init__(self, workdir: Path, model_store: Path, *extra_config: str) -> None:
        self.venv = torchserve_venv()
        self.workdir = workdir
        self.model_store = model_store
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(5)]
        self.inference = f"http://127.0.0.1:{ports[0]}"
        self.management = f"http://127.0.0.1:{ports[1]}"
        self.metrics = f"http://127.0.0.1:{ports[2]}"
        self.grpc_inference = f"127.0.0.1:{ports[3]}"
        self.grpc_management = f"127.0.0.1:{ports[4]}"
        self.config = workdir / "config.properties"
        self.config.write_text(
            "\n".join(
                [
                    f"inference_address={self.inference}",
                    f"management_address={self.management}",
                    f"metrics_address={self.metrics}",
                    f"grpc_inference_port={ports[3]}",
                    f"grpc_management_port={ports[4]}",
                    f"model_store={model_store}",
                    "disable_token_authorization=true",
                    "enable_model_api=true",
                    "default_workers_per_model=1",
                    "install_py_dep_per_model=false",
                    *extra_config,
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None

    def env(self) -> dict[str, str]:
        env = _clean_env()
        env.update(
            TMPDIR=str(self.tmp),  # torchserve's pid file (tempfile.gettempdir())
            TEMP=str(self.tmp),  # -Djava.io.tmpdir: the workers' Unix sockets
            PATH=f"{self.venv / 'bin'}:{env.get('PATH', '')}",
            VIRTUAL_ENV=str(self.venv),
        )
        return env

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def logs(self, lines: int = 60) -> str:
        """Tails of the launcher output and of TorchServe's frontend and worker logs."""
        parts = []
        for path in (
            self.workdir / "torchserve.out",
            self.log_dir / "ts_log.log",
            self.log_dir / "model_log.log",
        ):
            parts.append(f"--- {path.name} ---\n{_tail(path, lines)}")
        errors = self.worker_errors()
        if errors:
            parts.append("--- worker errors (model_log.log) ---\n" + "\n".join(errors))
        return "\n".join(parts)

    def worker_errors(self, limit: int = 20) -> list[str]:
        """Distinct error lines the Python workers logged (an import failure, a traceback)."""
        try:
            text = (self.log_dir / "model_log.log").read_text(errors="replace")
        except OSError:
            return []
        seen: dict[str, None] = {}
        for line in text.splitlines():
            message = line.split(" MODEL_LOG - ", 1)[-1].strip()
            if "Error" in message or "Exception" in message:
                seen.setdefault(message, None)
        return list(seen)[:limit]

    def __enter__(self) -> TorchServe:
        """Started (``with TorchServe(...) as ts``), and stopped however the block ends."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        self._out = open(self.workdir / "torchserve.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "torchserve"),
                "--start",
                "--ncs",
                "--foreground",  # the launcher waits on java, so an early death shows
                f"--ts-config={self.config}",
                f"--model-store={self.model_store}",
            ],
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # java and its workers share this process group
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"TorchServe exited during start-up (code {self.proc.returncode})\n"
                    + self.logs()
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.inference}/ping", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"TorchServe did not answer /ping within {timeout:.0f} s\n" + self.logs()
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [str(self.venv / "bin" / "torchserve"), "--stop", "--foreground"],
                cwd=self.workdir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                timeout=70,
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftover java or workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None


@contextlib.contextmanager
def engine_beside(tmp: Path, store: Path) -> Iterator[dict[str, Any]]:
    """Our engine on the same model store as a TorchServe beside it, and like it without
    token auth, so one request can be sent to both."""
    with running_engine(tmp, model_store=store, disable_token_authorization=True) as (info, _):
        yield info


def register(management: str, url: str, name: str, timeout: float = 300.0) -> None:
    """Register ``url`` (a file in the model store) as ``name`` with one worker, synchronously."""
    r = requests.post(
        f"{management}/models",
        params={"url": url, "model_name": name, "initial_workers": 1, "synchronous": "true"},
        timeout=timeout,
    )
    if r.status_code != 200:
        raise RuntimeError(f"register {url} at {management}: {r.status_code} {r.text}")


def unregister(management: str, name: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.delete(f"{management}/models/{name}", timeout=60)


def predict(inference: str, name: str, **kwargs: Any) -> requests.Response:
    """POST to ``/predictions/{name}``; ``kwargs`` go to :func:`requests.post` (data, files, ...)."""
    return requests.post(f"{inference}/predictions/{name}", timeout=120, **kwargs)
