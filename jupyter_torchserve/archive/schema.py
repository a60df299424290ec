"""Input/output schema and sample input, in KServe v2 (Open Inference Protocol) terms.

The schema lets the engine answer ``/v2/models/{m}`` metadata and lets the tensor handler
check shapes without running the model; the sample input lets the sidebar send a test request.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

_V2_DATATYPES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.bfloat16: "BF16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}

#: Above this many elements the sample input is left out: it is a convenience, not a dataset.
MAX_SAMPLE_ELEMENTS = 1_000_000


def v2_datatype(dtype: torch.dtype) -> str:
    """KServe v2 datatype name of a torch dtype (``FP32``, ``INT64``, ...)."""
    try:
        return _V2_DATATYPES[dtype]
    except KeyError:
        raise ValueError(f"no KServe v2 datatype for {dtype}") from None


def input_name(index: int) -> str:
    """The name of a positional input: what the engine and the handlers call it too."""
    return f"input-{index}"


def as_input_tuple(example_inputs: object) -> tuple[Any, ...] | None:
    """Normalise ``example_inputs`` (a tensor, or a tuple/list of positional inputs)."""
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        "example_inputs must be a tensor, a tuple/list of the model's positional inputs or a "
        f"dict of its keyword inputs, not {type(example_inputs).__name__}"
    )


def model_inputs(model: Any, example_inputs: object) -> tuple[tuple[Any, ...] | None, list[str]]:
    """The example as positional inputs in ``forward``'s order, and the schema's names of them.

    Why keywords become positions: every format (torch.export, TorchScript, eager) and the
    served handler call the model positionally, so a dict ``{"a": a, "b": b}`` is put in the
    order ``forward`` declares and its keys name the inputs (what a KServe v2 request then
    sends); positional inputs are ``input-0``, ``input-1``... An example ``forward`` cannot
    take is refused here, with its signature, before anything is captured or served.
    """
    keywords = isinstance(example_inputs, Mapping)
    if keywords:
        given: dict[str, Any] = {str(k): v for k, v in example_inputs.items()}  # type: ignore[union-attr]
        inputs: tuple[Any, ...] | None = tuple(given.values())
    else:
        inputs = as_input_tuple(example_inputs)
    if inputs is None:
        return None, []
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError, AttributeError):  # a compiled forward: nothing to check
        signature = None
    if signature is not None:
        takes = f"{type(model).__name__}.forward{signature}"
        try:
            bound = signature.bind(**given) if keywords else signature.bind(*inputs)
        except TypeError as exc:
            kind = f"the keys {sorted(given)}" if keywords else f"{len(inputs)} input(s)"
            raise ValueError(f"the example gives {kind}, but {takes} ({exc})") from None
        if keywords:
            if bound.kwargs:
                raise ValueError(
                    f"{takes} takes {sorted(bound.kwargs)} only by keyword, and a served "
                    "model is called positionally: give the example as a tuple"
                )
            return tuple(bound.args), [k for k in signature.parameters if k in given]
    if keywords:
        return inputs, list(given)
    return inputs, [input_name(i) for i in range(len(inputs))]


def flatten_outputs(output: object) -> list[tuple[str, torch.Tensor]]:
    """Name the tensors in a model output: ``output-0``.. for tensors/sequences, keys for dicts."""
    if isinstance(output, torch.Tensor):
        return [("output-0", output)]
    if isinstance(output, Mapping):
        return [(str(k), v) for k, v in output.items() if isinstance(v, torch.Tensor)]
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)):
        named: list[tuple[str, torch.Tensor]] = []
        for i, item in enumerate(output):
            if isinstance(item, torch.Tensor):
                named.append((f"output-{i}", item))
            elif isinstance(item, (Mapping, Sequence)) and not isinstance(item, (str, bytes)):
                named.extend((f"output-{i}.{n}", t) for n, t in flatten_outputs(item))
        return named
    return []


def _entry(name: str, tensor: torch.Tensor) -> dict[str, Any]:
    shape = list(tensor.shape)
    if shape:
        shape[0] = -1  # the batch dimension: any size is served
    return {"name": name, "datatype": v2_datatype(tensor.dtype), "shape": shape}


def _names(inputs: tuple[Any, ...], names: Sequence[str] | None) -> list[str]:
    return list(names) if names else [input_name(i) for i in range(len(inputs))]


def build_schema(
    inputs: tuple[Any, ...] | None, output: object, names: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """Schema from example inputs (named ``names``, else by position) and the model's output
    on them; ``None`` without examples."""
    if inputs is None:
        return None
    return {
        "inputs": [
            _entry(n, t)
            for n, t in zip(_names(inputs, names), inputs, strict=True)
            if isinstance(t, torch.Tensor)
        ],
        "outputs": [_entry(n, t) for n, t in flatten_outputs(output)],
    }


def sample_input_document(
    inputs: tuple[Any, ...] | None, names: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """A v2 inference request body holding the example inputs, or ``None`` if too big/absent."""
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        return None
    if sum(t.numel() for t in inputs) > MAX_SAMPLE_ELEMENTS:
        return None
    return {
        "inputs": [
            {
                "name": n,
                "shape": list(t.shape),
                "datatype": v2_datatype(t.dtype),
                "data": t.detach().cpu().reshape(-1).tolist(),
            }
            for n, t in zip(_names(inputs, names), inputs, strict=True)
        ]
    }
