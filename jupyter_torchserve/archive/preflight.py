"""Pre-flight: load a written archive in a clean process and compare its output with the model's.

Why a *spawned* process: it starts from a fresh interpreter that never saw the notebook's
``__main__``, exactly like a serving worker (or TorchServe) does. If the archive silently
depended on a notebook class, a global or an open file, this is where it shows, before the
user deploys. (A ``spawn`` child re-imports the parent's ``__main__`` only when it is a real
file; in IPython/Jupyter ``__main__`` has no file, so nothing of the notebook leaks in.)

The child loads the archive the way a worker does (``handlers.service.load_service``), takes
the model the handler loaded, runs the example inputs and sends the outputs back; the parent
compares them with the in-memory model's output. It runs on the model's device, as a worker
given that GPU would: a model on the GPU answers a little differently on the CPU (TF32
convolutions, other kernels), and that is no fault of the archive.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import sys
import tempfile
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import PreflightError
from .formats import max_abs_diff, output_tensors, outputs_close
from .manifest import METADATA_PATH
from .reader import extract

DEFAULT_TIMEOUT = 300.0


@dataclass
class PreflightReport:
    """What pre-flight checked: the largest output difference and how the archive was loaded."""

    max_abs_diff: float | None
    loaded_with: str
    handler_checked: bool


def _load_archive_loader(model_dir: str) -> Any:
    """The ``jts_model_loader`` shipped *in the archive* (what TorchServe would run)."""
    path = os.path.join(model_dir, "jts_model_loader.py")
    if not os.path.isfile(path):
        raise RuntimeError("the archive has no jts_model_loader.py")
    spec = importlib.util.spec_from_file_location("jts_model_loader", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["jts_model_loader"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _child(model_dir: str, inputs_path: str | None, result_path: str, device_name: str) -> None:
    """Runs in the spawned process. Writes ``{"ok", ...}`` to ``result_path`` with torch.save."""
    result: dict[str, Any]
    device = torch.device(device_name)
    gpu_id = (device.index or 0) if device.type == "cuda" else None
    try:
        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
        model, loaded_with, service = None, "jts_model_loader", None
        try:
            from jupyter_torchserve.handlers.service import load_service
        except ImportError:
            load_service = None
        if load_service is not None:
            service = load_service(model_dir, gpu_id=gpu_id)
            instance = getattr(service, "handler_instance", None)
            candidate = getattr(instance, "model", None)
            if isinstance(candidate, torch.nn.Module) or callable(candidate):
                model, loaded_with = candidate, "handler"
        if model is None:
            model = _load_archive_loader(model_dir).load_model(model_dir, device)
        result = {"ok": True, "loaded_with": loaded_with, "outputs": None, "handler": None}
        if inputs_path is not None:
            inputs = torch.load(inputs_path, map_location=device, weights_only=True)
            with torch.no_grad():
                result["outputs"] = _as_tensors(model(*inputs))
            result["handler"] = _handler_check(service, model_dir)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    torch.save(result, result_path)


def _as_tensors(output: Any) -> Any:
    """numpy outputs (a torch-free handler's, e.g. ONNX Runtime's) as tensors to compare."""
    import numpy as np

    if isinstance(output, np.ndarray):
        return torch.from_numpy(output)
    if isinstance(output, tuple):
        return tuple(_as_tensors(o) for o in output)
    return output


def _handler_check(service: Any, model_dir: str) -> dict[str, Any] | None:
    """Send the archive's sample input through the tensor handler, like a real request."""
    meta_path = os.path.join(model_dir, METADATA_PATH)
    if service is None or not os.path.isfile(meta_path):
        return None
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    sample = meta.get("sample_input")
    if meta.get("builtin_handler") not in ("tensor", "onnx") or not sample:
        return None
    from jupyter_torchserve.handlers.service import RequestInput

    body = Path(model_dir, sample).read_bytes()
    request = RequestInput("preflight", {"content-type": "application/json"}, [])
    request.params.append(("body", "application/json", body))
    response = service.predict([request])[0]
    return {"status": response.status, "body": response.body.decode("utf-8", "replace")}


@contextmanager
def _without_main() -> Iterator[None]:
    """Hide ``__main__`` while the child starts, so spawn never re-runs the user's script.

    spawn re-imports the parent's ``__main__`` when it is a file (a script, ``python -``);
    the clean process must see neither the notebook nor a script that calls ``archive()``
    at top level (which would recurse).
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _run_child(
    model_dir: str, inputs: tuple[Any, ...] | None, timeout: float, device: torch.device
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="jts-preflight-io-") as tmp:
        inputs_path = None
        if inputs is not None:
            inputs_path = os.path.join(tmp, "inputs.pt")
            torch.save(tuple(inputs), inputs_path)
        result_path = os.path.join(tmp, "result.pt")
        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(
            target=_child,
            args=(model_dir, inputs_path, result_path, str(device)),
            name="jts-preflight",
        )
        with _without_main():
            process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise PreflightError(f"pre-flight: loading the archive took more than {timeout:.0f}s")
        if not os.path.isfile(result_path):
            raise PreflightError(
                f"pre-flight: the clean process died (exit code {process.exitcode}) while "
                "loading the archive"
            )
        return torch.load(result_path, weights_only=True)


def run_preflight(
    archive_path: str | os.PathLike[str],
    inputs: tuple[Any, ...] | None,
    reference: object,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    timeout: float = DEFAULT_TIMEOUT,
    device: torch.device | str = "cpu",
) -> PreflightReport:
    """Extract ``archive_path`` to a temp dir, load it in a spawned process on ``device`` (the
    model's), compare outputs.

    Raises :class:`PreflightError` naming the cause (with the child's traceback) on failure.
    """
    with tempfile.TemporaryDirectory(prefix="jts-preflight-") as cache:
        model_dir, _ = extract(archive_path, cache)
        result = _run_child(model_dir, inputs, timeout, torch.device(device))
    if not result.get("ok"):
        tb = result.get("traceback")
        raise PreflightError(
            f"pre-flight: the archive does not load in a clean process: {result.get('error')}\n"
            f"--- traceback from the clean process ---\n{tb}",
            child_traceback=tb,
        )
    diff = None
    if inputs is not None:
        outputs = result.get("outputs")
        diff = max_abs_diff(reference, outputs)
        if not outputs_close(reference, outputs, rtol, atol):
            raise PreflightError(
                "pre-flight: the archived model's output differs from the in-memory model's "
                f"(max abs diff {diff:.3g}, rtol={rtol}, atol={atol}); loaded with "
                f"{result.get('loaded_with')}"
            )
    handler = result.get("handler")
    if handler is not None:
        _check_handler_response(handler, reference, rtol, atol)
    return PreflightReport(diff, str(result.get("loaded_with")), handler is not None)


def _check_handler_response(
    handler: dict[str, Any], reference: object, rtol: float, atol: float
) -> None:
    if handler["status"] != 200:
        raise PreflightError(
            f"pre-flight: the handler answered the sample input with HTTP {handler['status']}: "
            f"{handler['body'][:500]}"
        )
    expected = output_tensors(reference)
    if len(expected) != 1:
        return  # multi-output JSON layouts are the handler's business
    try:
        got = torch.tensor(json.loads(handler["body"]), dtype=torch.float64)
    except (ValueError, TypeError):
        return
    want = expected[0].detach().cpu().double()
    if got.shape == want.shape and not torch.allclose(got, want, rtol=rtol, atol=atol):
        diff = (got - want).abs().max().item()
        raise PreflightError(
            f"pre-flight: the handler's response to the sample input differs from the model's "
            f"output (max abs diff {diff:.3g})"
        )
