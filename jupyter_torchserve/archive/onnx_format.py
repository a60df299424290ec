"""The ONNX format: ``torch.onnx.export`` with a dynamic batch axis, checked in ONNX Runtime.

Only ever used when asked for (``format="onnx"``): its archive is served by ONNX Runtime
with the ``onnx`` built-in handler and no torch, so it answers only what the graph holds
(no notebook hooks, no Captum explanations). The dynamo exporter comes first, as PyTorch
recommends it; the TorchScript-based exporter covers the models dynamo cannot trace. Either
way the exported graph is run in ONNX Runtime on the example inputs and compared with the
model's own output before the format counts as working.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .formats import (
    FormatUnavailable,
    Serialized,
    Trial,
    _batch_of_two,
    _quiet_torch_logs,
    describe_failure,
    output_tensors,
)

SERIALIZED_FILE = "model.onnx"
#: What an ONNX archive's worker needs instead of torch (the metadata's ``requires``).
REQUIRES = ["onnxruntime"]


def _names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


def _dynamo(model: torch.nn.Module, inputs: tuple[Any, ...], n_out: int) -> bytes:
    dynamic = tuple(
        {0: torch.export.Dim("batch", min=1)} if isinstance(t, torch.Tensor) and t.dim() else None
        for t in inputs
    )
    with _quiet_torch_logs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            inputs,
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=_names("input", len(inputs)),
            output_names=_names("output", n_out),
            verbose=False,
        )
    with tempfile.TemporaryDirectory(prefix="jts-onnx-") as tmp:
        path = Path(tmp) / SERIALIZED_FILE
        program.save(str(path), external_data=False)
        return path.read_bytes()


def _torchscript(model: torch.nn.Module, inputs: tuple[Any, ...], n_out: int) -> bytes:
    names_in, names_out = _names("input", len(inputs)), _names("output", n_out)
    buffer = io.BytesIO()
    with _quiet_torch_logs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs,
            buffer,
            dynamo=False,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={n: {0: "batch"} for n in names_in + names_out},
        )
    return buffer.getvalue()


def run_in_onnxruntime(payload: bytes, inputs: tuple[Any, ...]) -> list[torch.Tensor]:
    import onnxruntime as ort

    session = ort.InferenceSession(payload, providers=["CPUExecutionProvider"])
    feed = {
        spec.name: t.detach().cpu().numpy()
        for spec, t in zip(session.get_inputs(), inputs, strict=True)
    }
    return [torch.from_numpy(o) for o in session.run(None, feed)]


def try_onnx(trial: Trial) -> Serialized:
    """The model as an ONNX graph (dynamo exporter, else TorchScript-based), proven in ONNX
    Runtime on the example inputs (and on a batch of two: the batch axis must be dynamic)."""
    model, inputs = trial.model, trial.inputs
    if inputs is None:
        raise FormatUnavailable("ONNX export needs example_inputs")
    if not all(isinstance(t, torch.Tensor) for t in inputs):
        raise FormatUnavailable("ONNX export needs tensor inputs")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise FormatUnavailable(
            "format='onnx' needs onnx, onnxscript and onnxruntime: pip install "
            "'jupyter_torchserve[onnx]'"
        ) from None
    n_out = len(output_tensors(trial.reference)) or 1
    export_inputs = _batch_of_two(inputs)
    failures = []
    for label, exporter in (("dynamo", _dynamo), ("torchscript", _torchscript)):
        try:
            payload = exporter(model, export_inputs, n_out)
            outputs = run_in_onnxruntime(payload, inputs)
            trial.check(f"ONNX ({label} exporter)", _shaped(outputs))
        except Exception as exc:  # noqa: BLE001 - the next exporter is tried, reasons kept
            failures.append(f"{label} exporter: {describe_failure(exc)}")
            continue
        notes = [f"ONNX graph from the {label} exporter"] + failures
        return Serialized("onnx", SERIALIZED_FILE, payload=payload, notes=notes)
    raise RuntimeError("; ".join(failures))


def _shaped(outputs: list[torch.Tensor]) -> object:
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
