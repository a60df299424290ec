"""Fixtures for the notebook-face tests: an isolated engine, a trained model, kernels.

Why module-scoped and not in conftest: each test module gets its own runtime dir, data dir,
model store and free ports, so these tests never touch a user's engine (or another module's),
and the environment is restored before other people's test modules run.
Import the fixtures into a test module with ``from _notebook_helpers import *``.
"""

from __future__ import annotations

import io
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _ports import free_port

__all__ = [
    "free_port",
    "ts_env",
    "engine",
    "mnist_data",
    "mnist_model",
    "run_in_kernel",
    "KernelSession",
    "stop_engines",
    "Pooled",
    "rgba_png",
]


def stop_engines() -> None:
    """Stop every engine of the current runtime dir (only ours: the dir is private)."""
    from jupyter_torchserve import discovery, launcher

    for info in discovery.find_engines():
        launcher.stop_engine(info)


@pytest.fixture(scope="module")
def ts_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Private JUPYTER_RUNTIME_DIR/DATA_DIR, model store and free ports; engines stopped after."""
    root = tmp_path_factory.mktemp("jts")
    config = {
        "inference_address": f"http://127.0.0.1:{free_port()}",
        "management_address": f"http://127.0.0.1:{free_port()}",
        "metrics_address": f"http://127.0.0.1:{free_port()}",
        "model_store": str(root / "store"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        mp.setenv("JUPYTER_DATA_DIR", str(root / "data"))
        mp.setenv("JUPYTER_TORCHSERVE_PROGRESS", "text")
        mp.chdir(root)
        try:
            yield {"root": root, "config": config}
        finally:
            stop_engines()


@pytest.fixture(scope="module")
def engine(ts_env: dict[str, Any]) -> dict[str, Any]:
    """A running engine on the module's free ports (discovery info)."""
    from jupyter_torchserve import launcher

    return launcher.start_engine(**ts_env["config"])


@pytest.fixture(scope="session")
def mnist_data() -> Any:
    from jupyter_torchserve.examples import mnist

    return mnist.load_data()


@pytest.fixture(scope="session")
def mnist_model(mnist_data: Any) -> Any:
    """The example CNN, trained once per session (a few seconds on two cores)."""
    from jupyter_torchserve.examples import mnist

    return mnist.train(mnist.Net(), mnist_data)


class KernelSession:
    """A real IPython kernel (ipykernel) with helpers to run code and collect its outputs."""

    def __init__(self, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env={**os.environ, **(env or {})}, cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 240) -> dict[str, Any]:
        """Execute ``code``; returns {'status', 'stdout', 'stderr', 'data': [bundles], 'error'}."""
        msg_id = self.kc.execute(code)
        out: dict[str, Any] = {"stdout": "", "stderr": "", "data": [], "error": None}
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"kernel did not finish within {timeout} s: {code!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind in ("execute_result", "display_data", "update_display_data"):
                out["data"].append(content["data"])
            elif kind == "error":
                out["error"] = content
            elif kind == "status" and content["execution_state"] == "idle":
                break
        out["status"] = self._reply_to(msg_id)["content"]["status"]
        return out

    def _reply_to(self, msg_id: str, timeout: float = 30) -> dict[str, Any]:
        """The shell reply to ``msg_id``. Others are skipped: on a loaded machine
        ``wait_for_ready`` asks for kernel_info more than once and its extra replies wait in
        the shell channel, where they would be read as the next cell's status."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def restart(self) -> None:
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=60)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def run_in_kernel(code: str, **kw: Any) -> dict[str, Any]:  # pragma: no cover - convenience
    k = KernelSession(**kw)
    try:
        return k.run(code)
    finally:
        k.close()


def plain(bundle_or_text: Any) -> str:
    """text/plain of a mime bundle (or the text itself)."""
    if isinstance(bundle_or_text, dict):
        return str(bundle_or_text.get("text/plain", ""))
    return str(bundle_or_text)


def notebook_text(nb: Any) -> str:
    """All text outputs of an executed notebook, for assertions."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(str(output["data"].get("text/plain", "")))
            elif output.get("output_type") == "error":
                parts.append("\n".join(output.get("traceback", [])))
    return "\n".join(parts)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# -- a model and an image for the parity checks of image handlers --------------------------------


class Pooled(torch.nn.Module):
    """Any image size in, ten logits out: the spatial detail still changes the answer."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def rgba_png(width: int = 40, height: int = 36) -> bytes:
    """A colour picture whose alpha runs from clear (left) to opaque (right)."""
    from PIL import Image

    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, format="PNG")
    return buf.getvalue()
