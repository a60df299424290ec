"""Built-in ``onnx`` handler: an ONNX export served by ONNX Runtime, without torch.

Copied into ONNX archives as ``jts_onnx.py``; it imports only the standard library, numpy
and onnxruntime, so the worker that serves it never loads torch (the engine starts such
workers as a plain spawn, not as a fork of its torch-loaded forkserver). It is one class, so
TorchServe 0.12 serves the archive too (its loader takes a module's only class).

Requests are those of the ``tensor`` handler: one input per request, as a JSON nested list,
``{"data": ...}``/``{"inputs": ...}``, KServe v2 ``[{"name", "shape", "datatype", "data"}]``
or ``.npy`` bytes; a multi-input model takes a JSON object keyed by input name. The requests
of a batch are concatenated along the (dynamic) batch axis into one session run and the
outputs split back per request; a request without the batch axis gets it added and removed.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
}


def providers(gpu_id: Any) -> list[Any]:
    """CUDA's execution provider when the worker has a GPU and this onnxruntime has CUDA."""
    import onnxruntime as ort

    if gpu_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": int(gpu_id)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def bad_request(exc: Exception) -> Exception:
    """``exc`` as the request's fault, answered 400 (KServe's InvalidInput), not the 503 of
    a broken model: TorchServe's own ``PredictionException`` inside TorchServe, whose
    worker has always loaded it (looked up, never imported: built-ins do not import
    ``ts``), else the handler's own, which our runtime answers by its ``error_code``."""
    runtime = getattr(sys.modules.get("ts.utils.util"), "PredictionException", None)
    if isinstance(runtime, type) and issubclass(runtime, Exception):
        return runtime(str(exc), 400)
    return OnnxHandler.PredictionException(str(exc))


class OnnxHandler:
    class PredictionException(Exception):
        """Named as TorchServe's; nested, so that the module still defines one class."""

        error_code = 400

    def __init__(self) -> None:
        self.session: Any = None
        self.initialized = False

    def initialize(self, context: Any) -> None:
        import onnxruntime as ort

        props = context.system_properties
        model_dir = props.get("model_dir") or "."
        serialized = context.manifest["model"].get("serializedFile") or "model.onnx"
        options = ort.SessionOptions()
        threads = int(os.environ.get("JTS_WORKER_THREADS") or 0)
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(model_dir, serialized), options, providers=providers(props.get("gpu_id"))
        )
        self.inputs = self.session.get_inputs()
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model = self.run_arrays  # what pre-flight calls with the example inputs
        self.initialized = True

    def run_arrays(self, *inputs: Any) -> Any:
        """The session on whole batched inputs (arrays or tensors): one output, or a tuple."""
        feed = {
            spec.name: np.asarray(value, dtype=ONNX_TYPES.get(spec.type, np.float32))
            for spec, value in zip(self.inputs, inputs, strict=True)
        }
        outputs = self.session.run(self.output_names, feed)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # -- decoding ------------------------------------------------------------------------------
    def _decode(self, row: Any) -> Any:
        payload = row.get("data", row.get("body")) if isinstance(row, dict) else row
        if isinstance(payload, (bytes, bytearray)):
            payload = bytes(payload)
            if payload[:6] == NPY_MAGIC:
                return np.load(io.BytesIO(payload), allow_pickle=False)
            try:
                return json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ValueError(f"the request body is neither JSON nor .npy: {exc}") from exc
        if isinstance(payload, str):
            try:
                return json.loads(payload)
            except ValueError as exc:
                raise ValueError(f"the request body is not valid JSON: {exc}") from exc
        return payload

    def _split_inputs(self, value: Any) -> list[Any]:
        names = [i.name for i in self.inputs]
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays = {}
            for i, spec in enumerate(value):  # KServe v2 inputs
                array = np.asarray(spec["data"])
                arrays[str(spec.get("name", f"input-{i}"))] = (
                    array.reshape(spec["shape"]) if spec.get("shape") else array
                )
            value = arrays if len(arrays) > 1 else next(iter(arrays.values()))
        if isinstance(value, dict):
            if all(n in value for n in names):
                return [value[n] for n in names]
            for key in ("data", "inputs", "instances"):
                if key in value:
                    return self._split_inputs(value[key])
            raise ValueError(f"the JSON object needs the keys {', '.join(names)}")
        if len(names) > 1:
            raise ValueError(f"this model takes {len(names)} inputs: send an object keyed by name")
        return [value]

    def _array(self, value: Any, index: int) -> tuple[np.ndarray, bool]:
        spec = self.inputs[index]
        array = np.asarray(value, dtype=ONNX_TYPES.get(spec.type, np.float32))
        added = array.ndim == len(spec.shape) - 1
        return (array[None, ...] if added else array), added

    def preprocess(self, data: list[Any]) -> dict[str, np.ndarray]:
        per_input: list[list[np.ndarray]] = [[] for _ in self.inputs]
        self.sizes, self.added = [], []
        for row in data:
            values = self._split_inputs(self._decode(row))
            arrays = [self._array(v, i) for i, v in enumerate(values)]
            for bucket, (array, _) in zip(per_input, arrays, strict=True):
                bucket.append(array)
            self.sizes.append(len(arrays[0][0]))
            self.added.append(any(added for _, added in arrays))
        return {
            spec.name: np.concatenate(bucket)
            for spec, bucket in zip(self.inputs, per_input, strict=True)
        }

    def inference(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feed)

    def postprocess(self, outputs: list[np.ndarray]) -> list[Any]:
        results, start = [], 0
        for size, added in zip(self.sizes, self.added, strict=True):
            parts = [o[start : start + size] for o in outputs]
            if added:
                parts = [p[0] for p in parts]
            start += size
            results.append(parts[0].tolist() if len(parts) == 1 else [p.tolist() for p in parts])
        return results

    def handle(self, data: list[Any] | None, context: Any) -> list[Any] | None:
        if data is None:
            return None
        try:  # all of it is this file's decoding: no hook of the user's runs here
            feed = self.preprocess(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise bad_request(exc) from exc
        try:
            outputs = self.inference(feed)
        except Exception as exc:
            # ONNX Runtime's own error for a wrong shape or type names the input and the
            # dimension ("Got invalid dimensions for input: x ... Got: 2 Expected: 3")
            if type(exc).__name__ != "InvalidArgument":
                raise
            raise bad_request(exc) from exc
        return self.postprocess(outputs)
