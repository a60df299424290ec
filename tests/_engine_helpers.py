"""Real engines on free ports and real archives in torch-model-archiver's layout."""

from __future__ import annotations

import json
import textwrap
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from _ports import free_port

from jupyter_torchserve.client import Client
from jupyter_torchserve.launcher import start_engine, stop_engine


def manifest(name: str, version: str, serialized: str, handler: str) -> dict[str, Any]:
    return {
        "createdOn": time.strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": "python",
        "model": {
            "modelName": name,
            "serializedFile": serialized,
            "handler": handler,
            "modelVersion": version,
        },
        "archiverVersion": "0.12.0",
    }


def write_mar(path: Path, files: dict[str, bytes | str], man: dict[str, Any]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(man, indent=2))
    return path


def scripted_linear(seed: int = 0, scale: float = 1.0) -> bytes:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.mul_(scale)
    buf = __import__("io").BytesIO()
    torch.jit.save(torch.jit.script(model.eval()), buf)
    return buf.getvalue()


def linear_mar(
    store: Path, name: str = "linear", version: str = "1.0", seed: int = 0, scale: float = 1.0
) -> Path:
    """A TorchScript Linear(4, 3) served by the built-in `tensor` handler."""
    return write_mar(
        store / f"{name}-{version}.mar",
        {"model.pt": scripted_linear(seed, scale)},
        manifest(name, version, "model.pt", "tensor"),
    )


def fake_gpus(*free_mib: int) -> str:
    """A value for JTS_FAKE_GPUS (the engine reads it instead of NVML): one 16 GiB device
    per figure, named "Fake GPU <index>", with that many MiB free."""
    mib, total = 1024**2, 16384
    return json.dumps(
        [
            {
                "index": i,
                "name": f"Fake GPU {i}",
                "uuid": f"GPU-{i}",
                "memory_used": (total - free) * mib,
                "memory_total": total * mib,
                "utilization": 0.0,
            }
            for i, free in enumerate(free_mib)
        ]
    )


# A module-level handler (TorchServe's `handle(data, context)` entry point) whose behaviour
# a request picks: report the batch size or the GC's state, sleep, raise, print (a line, or
# `flood` KiB of lines), touch a file, or end its worker (os._exit, a segfault). The tests
# and scripts/reliability_soak.py all serve this one.
PROBE_HANDLER = textwrap.dedent("""
    import gc, json, os, signal, sys, time

    def handle(data, context):
        if data is None:
            return None
        out = []
        for row in data:
            body = row.get("body")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body or b"{}")
            body = body or {}
            if body.get("exit") is not None:
                os._exit(body["exit"])
            if body.get("segv"):
                os.kill(os.getpid(), signal.SIGSEGV)
            if body.get("sleep"):
                time.sleep(body["sleep"])
            if body.get("touch"):
                open(body["touch"], "w").close()
            if body.get("raise"):
                raise ValueError("probe asked to fail: " + str(body["raise"]))
            if body.get("print"):
                print(body["print"], flush=True)
            for _ in range(body.get("flood", 0)):
                print("x" * 1023)
            sys.stdout.flush()
            answer = {"batch": len(data), "pid": os.getpid(),
                      "gpu_id": context.system_properties.get("gpu_id"),
                      "echo": body.get("echo")}
            if body.get("gc"):
                answer.update(gc_enabled=gc.isenabled(), gc_frozen=gc.get_freeze_count())
            out.append(answer)
        return out
""")


def probe_mar(
    store: Path, name: str = "probe", version: str = "1.0", file: str | None = None
) -> Path:
    """The probe handler's archive, `<name>-<version>.mar` unless `file` names it."""
    return write_mar(
        store / (file or f"{name}-{version}.mar"),
        {"probe_handler.py": PROBE_HANDLER, "dummy.txt": "x"},
        manifest(name, version, "dummy.txt", "probe_handler.py"),
    )


def model_store(tmp: Path, *probes: str) -> Path:
    """`tmp/store`, holding a probe archive (`<name>-1.0.mar`) for each name given."""
    store = tmp / "store"
    store.mkdir()
    for name in probes:
        probe_mar(store, name)
    return store


@contextmanager
def running_engine(tmp: Path, **config: Any):
    """An engine subprocess on free ports with private state; yields (info, client)."""
    store = Path(config.pop("model_store", tmp / "store"))
    store.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(3)]
    cfg = dict(
        inference_address=f"http://127.0.0.1:{ports[0]}",
        management_address=f"http://127.0.0.1:{ports[1]}",
        metrics_address=f"http://127.0.0.1:{ports[2]}",
        model_store=str(store),
        state_dir=str(config.pop("state_dir", tmp / f"state-{ports[1]}")),
    )
    cfg.update(config)
    info = start_engine(**cfg)
    try:
        yield info, Client.from_info(info, timeout=60)
    finally:
        stop_engine(info)
