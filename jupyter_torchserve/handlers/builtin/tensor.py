"""Built-in ``tensor`` handler: the default for any model, tensors in and tensors out.

Each request body holds one input: a JSON nested list, ``{"data": ...}`` / ``{"inputs": ...}``
(KServe v2 ``[{"name", "shape", "datatype", "data"}]`` too), ``.npy`` bytes or ``torch.save``
bytes. A multi-input model takes a JSON object keyed by input name (as a body, or as a
KServe v1 instance, whose keys arrive as request parameters). The requests of a batch
are concatenated along dim 0 into one model call and the output is split back per request.
When the schema says the input is batched (``[-1, ...]``) and a request sends one sample
without the batch dimension, the dimension is added and removed again from its output.
An explanation is Captum's Integrated Gradients over the floating-point inputs, shaped like
the request's input (a multi-input model: an object keyed by input name, per row).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch
from jts_base import InputError, JtsBaseHandler, as_bytes_or_text, request_payload

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
NPY_TYPES = ("application/x-npy", "application/npy", "application/x-numpy")


def _param_content_type(context: Any, idx: int, row: Any) -> str:
    """Content type of the request's payload parameter (``data`` or ``body``)."""
    for name in ("data", "body"):
        if isinstance(row, dict) and name in row:
            try:
                header = context.get_request_header(idx, name)
            except Exception:  # noqa: BLE001 - a context without request headers
                header = None
            if isinstance(header, dict):
                return str(header.get("content-type") or "").lower()
    return ""


def decode_payload(payload: Any, content_type: str = "") -> Any:
    """Raw request payload -> numpy array, tensor, nested list or dict."""
    payload = as_bytes_or_text(payload)
    if isinstance(payload, bytes):
        if content_type.startswith(NPY_TYPES) or payload[:6] == NPY_MAGIC:
            return np.load(io.BytesIO(payload), allow_pickle=False)
        stripped = payload.lstrip()
        if stripped[:1] in (b"[", b"{") or content_type.startswith(("application/json", "text/")):
            try:
                return json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                if payload[:4] != ZIP_MAGIC:
                    raise InputError(f"the request body is not valid JSON: {exc}") from exc
        try:
            return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(
                "the request body is neither JSON, .npy nor torch.save bytes "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    if isinstance(payload, str):
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise InputError(f"the request body is not valid JSON: {exc}") from exc
    return payload


def _glimpse(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TensorHandler(JtsBaseHandler):
    """Tensor in, tensor out, batched along the first dimension."""

    input_format = (
        "one input per request: a JSON nested list, {'data': [...]}, {'inputs': [...]}, "
        ".npy bytes or torch.save bytes; multi-input models: a JSON object keyed by input name"
    )

    def __init__(self) -> None:
        super().__init__()
        self.added_batch_dim: list[bool] = []

    # -- decoding ------------------------------------------------------------------------------
    def input_names(self) -> list[str]:
        return [self.input_name(i) for i in range(len(self.input_specs()))]

    def _split_inputs(self, value: Any) -> list[Any]:
        """One decoded payload -> one value per model input, in schema order."""
        names = self.input_names()
        if (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, dict) and "data" in v for v in value)
        ):
            value = self._from_v2(value)
        if isinstance(value, dict):
            if names and all(name in value for name in names):
                return [value[name] for name in names]
            for key in ("data", "inputs", "instances"):
                if key in value:
                    return self._split_inputs(value[key])
            if len(value) == 1 and len(names) <= 1:
                return [next(iter(value.values()))]
            expected = ", ".join(names) if names else "'data'"
            raise InputError(f"the JSON object needs the keys {expected}, got {sorted(value)}")
        if isinstance(value, (list, tuple)) and len(names) > 1:
            if len(value) == len(names) and all(isinstance(v, torch.Tensor) for v in value):
                return list(value)
            raise InputError(
                f"this model takes {len(names)} inputs ({', '.join(names)}): send a JSON object "
                f"keyed by input name"
            )
        return [value]

    def _payload(self, row: Any) -> Any:
        """The request's input; a request whose parameters are the model's inputs by name
        (a KServe v1 instance ``{"a": [...], "b": [...]}`` becomes one parameter per key)
        is taken whole, as the object keyed by input name."""
        names = self.input_names()
        if (
            isinstance(row, dict)
            and len(names) > 1
            and row.get("data") is None
            and row.get("body") is None
            and all(name in row for name in names)
        ):
            return {name: row[name] for name in names}
        return request_payload(row)

    def _from_v2(self, tensors: list[dict[str, Any]]) -> Any:
        """KServe v2 inputs ``[{"name", "shape", "datatype", "data"}]`` -> arrays by name."""
        arrays = {}
        for i, spec in enumerate(tensors):
            name = str(spec.get("name", f"input-{i}"))
            try:
                array = np.asarray(spec["data"])
                if spec.get("shape"):
                    array = array.reshape(spec["shape"])
            except (ValueError, TypeError) as exc:
                raise InputError(f"input {name!r}: {exc}") from exc
            arrays[name] = array
        names = self.input_names()
        if len(arrays) == 1 and (not names or next(iter(arrays)) not in names):
            return next(iter(arrays.values()))
        return arrays

    def to_tensor(self, value: Any, index: int) -> tuple[torch.Tensor, bool]:
        """A value -> a batched tensor of the schema's dtype; says whether a dim was added."""
        specs = self.input_specs()
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
        else:
            try:
                array = np.asarray(value)
            except ValueError as exc:  # numpy refuses a ragged list (an object array before 1.24)
                raise InputError(
                    "the input is a ragged nested list; every row needs the same length"
                ) from exc
            if array.dtype.kind not in "biufc":
                raise InputError(
                    f"the input must be numbers (a nested list of them), got {_glimpse(value)}"
                )
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        if index < len(specs):
            tensor = tensor.to(self.input_dtype(index))
        elif tensor.is_floating_point() or not isinstance(value, torch.Tensor | np.ndarray):
            tensor = tensor.to(torch.float32)  # no schema: JSON numbers feed a float model
        shape = self.input_shape(index)
        added = False
        if shape is not None and tensor.dim() == len(shape) - 1:
            tensor = tensor.unsqueeze(0)
            added = True
        elif tensor.dim() == 0:
            tensor = tensor.reshape(1)
            added = True
        return tensor, added

    def preprocess(self, data: list[Any]) -> Any:
        per_input: list[list[torch.Tensor]] = []
        self.request_sizes = []
        self.added_batch_dim = []
        for idx, row in enumerate(data):
            content_type = _param_content_type(self.context, idx, row)
            values = self._split_inputs(decode_payload(self._payload(row), content_type))
            if per_input and len(values) != len(per_input):
                raise ValueError("the requests of one batch send different numbers of inputs")
            tensors = []
            added_any = False
            for i, value in enumerate(values):
                tensor, added = self.to_tensor(value, i)
                tensors.append(tensor)
                added_any = added_any or added
            rows = len(tensors[0])
            if any(len(t) != rows for t in tensors):
                raise InputError("all inputs of one request need the same first dimension")
            if not per_input:
                per_input = [[] for _ in tensors]
            for bucket, tensor in zip(per_input, tensors, strict=False):
                bucket.append(tensor)
            self.request_sizes.append(rows)
            self.added_batch_dim.append(added_any)
        try:
            batch = [torch.cat(bucket).to(self.device) for bucket in per_input]
        except RuntimeError as exc:
            raise ValueError(f"the inputs of this batch cannot be stacked: {exc}") from exc
        return batch[0] if len(batch) == 1 else tuple(batch)

    # -- encoding ------------------------------------------------------------------------------
    def _split_output(self, output: Any) -> list[Any]:
        """Model output -> per-request parts (tensors, or tuples/dicts/lists of them)."""
        if isinstance(output, torch.Tensor):
            if output.dim() == 0:
                return [output] * len(self.request_sizes)
            parts = self.split_per_request(output)
            return [
                part.squeeze(0) if added and len(part) == 1 else part
                for part, added in zip(parts, self.added_batch_dim, strict=False)
            ]
        if isinstance(output, dict):
            split = {k: self._split_output(v) for k, v in output.items()}
            return [{k: v[i] for k, v in split.items()} for i in range(len(self.request_sizes))]
        if isinstance(output, (tuple, list)) and output:
            split = [self._split_output(v) for v in output]
            return [[s[i] for s in split] for i in range(len(self.request_sizes))]
        return [output] * len(self.request_sizes)

    def one_sample(self, idx: int) -> bool:
        return self.added_batch_dim[idx] if self.added_batch_dim else super().one_sample(idx)

    def postprocess(self, output: Any) -> list[Any]:
        parts = self._split_output(output)
        results: list[Any] = []
        for idx, part in enumerate(parts):
            accept = str(self._header("accept", idx) or "").lower()
            if isinstance(part, torch.Tensor) and accept.startswith(NPY_TYPES):
                buffer = io.BytesIO()
                np.save(
                    buffer,
                    part.to(torch.float32 if part.dtype == torch.bfloat16 else part.dtype).numpy(),
                )
                self.context.set_response_content_type(idx, "application/x-npy")
                results.append(buffer.getvalue())
            else:
                results.append(_jsonable(part))
        return results


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
