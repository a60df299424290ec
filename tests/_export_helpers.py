"""Checks for exported bundles: KServe YAML loaded with KServe's own SDK models.

KServe's `ApiClient` drops keys its models do not know, so a misspelled field would load
silently. `kserve_load` builds the same models (`kserve.models`, and `kubernetes.client`'s
for the Kubernetes types they embed: their constructors run the SDK's own checks) and
refuses any key a model does not declare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _model_class(name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise AssertionError(f"no SDK model {name}")


def kserve_load(data: Any, klass: str, where: str = "") -> Any:
    """`data` (YAML-loaded) as an instance of the SDK model `klass`; AssertionError naming
    the path of any key, type or required field the SDK does not accept."""
    if data is None:
        return None
    m = re.fullmatch(r"(?:list|List)\[(.*)\]", klass)
    if m:
        assert isinstance(data, list), f"{where}: expected a list, got {data!r}"
        return [kserve_load(x, m.group(1), f"{where}[{i}]") for i, x in enumerate(data)]
    m = re.fullmatch(r"(?:dict\(([^,]*), (.*)\)|Dict\[([^,]*), (.*)\])", klass)
    if m:
        assert isinstance(data, dict), f"{where}: expected a mapping, got {data!r}"
        value_type = m.group(2) or m.group(4)
        return {k: kserve_load(v, value_type, f"{where}.{k}") for k, v in data.items()}
    if klass in ("str", "int", "float", "bool"):
        assert isinstance(
            data, {"str": str, "int": int, "float": (int, float), "bool": bool}[klass]
        ), f"{where}: {data!r} is not {klass}"
        return data
    if klass == "object":
        return data
    cls = _model_class(klass)
    assert isinstance(data, dict), f"{where}: {klass} expects a mapping, got {data!r}"
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    assert not unknown, f"{where or klass}: {klass} has no field(s) {unknown}"
    kwargs = {
        by_json[k]: kserve_load(v, cls.openapi_types[by_json[k]], f"{where}.{k}")
        for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise AssertionError(f"{where or klass}: {e}") from None


# -- a model whose class was defined in a notebook cell ------------------------------------
#: The digits CNN as a user types it into a cell: the class lives in the kernel's __main__,
#: so archive(format="eager") captures its source into the archive's model.py.
NOTEBOOK_CELL = """
import torch
from torch import nn
import torch.nn.functional as F

class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1)
        self.conv2 = nn.Conv2d(16, 32, 3, 1)
        self.fc1 = nn.Linear(32 * 12 * 12, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)

model = DigitNet()
"""


@dataclass
class NotebookModel:
    model: Any  # the in-kernel nn.Module
    archive: Path  # its .mar, eager format: weights + the cell's captured source
    data: Any  # jupyter_torchserve.examples.mnist.Digits

    def png(self, digit: int) -> bytes:
        from jupyter_torchserve.examples import mnist

        return mnist.png_bytes(mnist.digit_image(digit, self.data))

    def top5(self, digit: int) -> dict[str, float]:
        """What the kernel's model says about the held-out image of `digit`."""
        import torch

        from jupyter_torchserve.examples import mnist

        with torch.no_grad():
            x = mnist.to_tensor(mnist.digit_image(digit, self.data))
            probs = torch.softmax(self.model(x), dim=1)[0]
        values, indices = probs.topk(5)
        return {
            mnist.LABELS[str(i)]: v for i, v in zip(indices.tolist(), values.tolist(), strict=True)
        }


def notebook_model(store: Path, name: str = "mnist") -> NotebookModel:
    """Train the cell's model briefly on the bundled digits and archive it as a notebook does."""
    import sys

    from _archive_helpers import ipython_shell, run_cell

    from jupyter_torchserve.archive import archive
    from jupyter_torchserve.examples import mnist

    original_main = sys.modules["__main__"]
    try:
        shell = ipython_shell()
        run_cell(shell, NOTEBOOK_CELL)
        model = shell.user_ns["model"]
        data = mnist.load_data()
        mnist.train(model, data, epochs=1)
        result = archive(
            model,
            name=name,
            handler="image_classifier",
            example_inputs=mnist.to_tensor(mnist.digit_image(0, data)),
            extra_files={"index_to_name.json": mnist.LABELS},
            handler_config={"mean": list(mnist.MEAN), "std": list(mnist.STD)},
            export_path=store,
            format="eager",
            force=True,
        )
    finally:
        sys.modules["__main__"] = original_main
    assert result.format == "eager"
    return NotebookModel(model.eval(), Path(result.path), data)


def assert_top5(got: Any, want: dict[str, float], what: str) -> None:
    """A served top-5 answer (a dict, or its JSON text in a v2 BYTES tensor) equals the kernel's."""
    import json
    import math

    if isinstance(got, str):
        got = json.loads(got)
    assert isinstance(got, dict), f"{what}: {got!r}"
    assert list(got) == list(want), f"{what}: labels {list(got)} vs the kernel's {list(want)}"
    for label, p in want.items():
        assert math.isclose(got[label], p, rel_tol=1e-4, abs_tol=1e-6), (
            f"{what}: p({label}) {got[label]} vs the kernel's {p}"
        )


def kserve_requests(png: bytes, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """KServe's documented bodies for an image model: v1 instances, v2 BYTES."""
    import base64

    b64 = base64.b64encode(png).decode()
    v1 = {"instances": [{"data": b64}]}
    v2 = {"inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
    return v1, v2


def v2_value(answer: dict[str, Any]) -> Any:
    """The one value of a v2 answer's first output (TorchServe and ours name it differently)."""
    (value,) = answer["outputs"][0]["data"]
    return value


def wait_ready(management: str, name: str, timeout: float = 300.0) -> list[dict[str, Any]]:
    """Poll `GET /models/NAME` until a worker is READY, as KServe's TorchServe wrapper does."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{management}/models/{name}", timeout=10)
            last = r.text
            if r.ok and any(w.get("status") == "READY" for w in r.json()[0].get("workers", [])):
                return r.json()
        except requests.RequestException as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(
        f"{name} has no READY worker at {management} after {timeout:.0f} s: {last}"
    )


def shim_bin(tmp: Path) -> Path:
    """A bin folder with the image's `torchserve` shim and this test's Python as `python`,
    so `torchserve --start ...` runs our engine exactly as the image runs it."""
    import sys

    from jupyter_torchserve.export.image import TORCHSERVE_SHIM

    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "torchserve").write_text(TORCHSERVE_SHIM)
    (bin_dir / "torchserve").chmod(0o755)
    # a script, not a symlink: a venv's python finds its site-packages by its own path
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return bin_dir


def remap(args: list[str], mount: str, local: Path) -> list[str]:
    """A runtime's args with the cluster's mount point replaced by a local folder."""
    return [a.replace(mount, str(local)) for a in args]


def port_env(ports: list[int]) -> dict[str, str]:
    """TS_* variables moving all five of TorchServe's listeners onto free loopback ports
    (the configs enable them with enable_envvars_config=true)."""
    return {
        "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{ports[0]}",
        "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{ports[1]}",
        "TS_METRICS_ADDRESS": f"http://127.0.0.1:{ports[2]}",
        "TS_GRPC_INFERENCE_PORT": str(ports[3]),
        "TS_GRPC_MANAGEMENT_PORT": str(ports[4]),
    }


class Runtime:
    """One server started with a cluster runtime's exact command line (TorchServe 0.12 from
    its venv, or our engine through the image's shim), in a private working dir and TMPDIR,
    stopped with the same `torchserve --stop` plus a kill of its process group."""

    def __init__(self, which: str, args: list[str], workdir: Path, env: dict[str, str]) -> None:
        import os

        self.which = which
        self.args = args
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        if which == "torchserve":
            from _torchserve_helpers import _clean_env, torchserve_venv

            base = _clean_env()
            bin_dir = torchserve_venv() / "bin"
        else:
            base = dict(os.environ)
            bin_dir = shim_bin(workdir)
        self.env = {
            **base,
            **env,
            "PATH": f"{bin_dir}:{base.get('PATH', '')}",
            "TMPDIR": str(workdir / "tmp"),  # the pid file (and TorchServe's worker sockets)
            "TEMP": str(workdir / "tmp"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
            "JUPYTER_DATA_DIR": str(workdir / "data"),
        }
        self.proc: Any = None

    def __enter__(self) -> Runtime:
        import subprocess

        self._log = open(self.workdir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args,  # args[0] is `torchserve`, found on PATH as the image finds it
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self, lines: int = 60) -> str:
        parts = []
        for path in [self.workdir / "server.log", *sorted(self.workdir.glob("logs/*.log"))]:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def __exit__(self, *exc: Any) -> None:
        import contextlib
        import os
        import signal
        import subprocess

        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                ["torchserve", "--stop", "--foreground"],
                cwd=self.workdir,
                env=self.env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                timeout=90,
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()
