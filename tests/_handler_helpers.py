"""Builders for the handler-runtime tests: unpacked archive directories and requests.

The archives are written by hand (not by ``jupyter_torchserve.archive``) so the handler
runtime is tested on its own, against the layout docs/architecture.md §1 pins down.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from _digits_helpers import cnn, train

from jupyter_torchserve.handlers.service import RequestInput, builtin_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_manifest(
    model_dir: Path, *, name: str, serialized: str, handler: str, **extra: str
) -> None:
    """MAR-INF/MANIFEST.json as torch-model-archiver 0.12 writes it."""
    model = {
        "modelName": name,
        "serializedFile": serialized,
        "handler": handler,
        "modelVersion": "1.0",
    }
    model.update(extra)
    manifest = {
        "createdOn": "01/01/2026 00:00:00",
        "runtime": "python",
        "model": model,
        "archiverVersion": "0.12.0",
    }
    (model_dir / "MAR-INF").mkdir(parents=True, exist_ok=True)
    (model_dir / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))


def save_torchscript(model: torch.nn.Module, path: Path, example: Any = None) -> None:
    """Script (or trace with ``example``) and save; quiet about torch.jit's deprecation."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if example is None:
            scripted = torch.jit.script(model)
        else:
            scripted = torch.jit.trace(model, example)
        torch.jit.save(scripted, str(path))


def make_model_dir(
    root: Path,
    model: torch.nn.Module,
    *,
    handler: str = "tensor",
    schema: dict[str, Any] | None = None,
    handler_config: dict[str, Any] | None = None,
    labels: Any = None,
    example: Any = None,
    copy_builtin: bool = False,
    files: dict[str, str | bytes] | None = None,
    name: str = "m",
) -> Path:
    """An unpacked archive holding ``model`` as TorchScript ``model.pt``.

    ``copy_builtin`` copies the built-in handler into the archive as ``jts_<name>.py`` with
    ``jts_base.py`` (and the loader when present), as our archiver does.
    """
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    save_torchscript(model, model_dir / "model.pt", example)
    manifest_handler = handler
    if copy_builtin:
        manifest_handler = f"jts_{handler}.py"
        shutil.copy(os.path.join(builtin_dir(), f"{handler}.py"), model_dir / manifest_handler)
        for shared in ("jts_base.py", "jts_model_loader.py"):
            src = os.path.join(builtin_dir(), shared)
            if os.path.isfile(src):
                shutil.copy(src, model_dir / shared)
    write_manifest(model_dir, name=name, serialized="model.pt", handler=manifest_handler)
    meta = {
        "format": "torchscript",
        "builtin_handler": handler,
        "handler_config": handler_config or {},
        "schema": schema,
    }
    (model_dir / "MAR-INF" / "jupyter_torchserve.json").write_text(json.dumps(meta))
    if labels is not None:
        (model_dir / "index_to_name.json").write_text(json.dumps(labels))
    for rel, content in (files or {}).items():
        path = model_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return model_dir


def request(
    body: Any,
    content_type: str = "application/json",
    *,
    request_id: str = "r",
    headers: dict[str, str] | None = None,
    name: str = "body",
) -> RequestInput:
    """A RequestInput whose single parameter holds ``body`` (JSON-encoded unless bytes/str)."""
    if isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode("utf-8")
    else:
        raw = json.dumps(body).encode("utf-8")
    return RequestInput(request_id, dict(headers or {}), [(name, content_type, raw)])


def run_infer_frame(service: Any, bodies: list[Any], batch: int = 4) -> dict[str, Any]:
    """Send ``bodies`` (JSON-encoded) to ``service`` as one batch the way the engine frames
    it, through ``worker_main._infer``, and return the one frame the worker answers with."""
    from jupyter_torchserve.engine import worker_main

    raw = [json.dumps(b).encode() for b in bodies]
    offsets = [sum(map(len, raw[:i])) for i in range(len(raw))]
    reqs = [
        {"id": str(i), "h": {}, "p": [["body", "application/json", off, len(b)]]}
        for i, (off, b) in enumerate(zip(offsets, raw, strict=True))
    ]
    sent: list[dict[str, Any]] = []

    class _Conn:
        def send(self, header: dict[str, Any], bodies: Any = ()) -> None:
            sent.append(header)

    service._stream_state = {"batch": None}
    header = {"op": "infer", "batch": batch, "reqs": reqs}
    worker_main._infer(_Conn(), service, header, memoryview(b"".join(raw)))
    (frame,) = sent
    return frame


def png_bytes(image: Any) -> bytes:
    """Encode a PIL image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def digits_dataset() -> tuple[Any, Any]:
    """scikit-learn's 8x8 digits scaled to [0, 1] (float32 images [N, 1, 8, 8], int labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.tensor(digits.target)


def train_digits_classifier(
    epochs: int = 60, mean: float = 0.0, std: float = 1.0
) -> torch.nn.Sequential:
    """The digits CNN trained to a useful accuracy in a few seconds on CPU.

    ``mean``/``std`` normalise the training images, as a TorchServe handler's
    ``Normalize`` would at serving time.
    """
    torch.manual_seed(0)
    images, targets = digits_dataset()
    return train(cnn(), ((images - mean) / std).numpy(), targets.numpy(), epochs)
