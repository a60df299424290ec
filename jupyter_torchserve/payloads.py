"""What goes over the wire: the example a deploy sends, and the KServe v1/v2 request bodies.

Why one module: ``deploy`` turns the user's example into the model input and the request
body, writes them as files for the curl snippets, and the parity check sends them;
``%torchserve predict --protocol v1|v2`` and the demo build the same KServe bodies. Built in
one place, the snippets, the magic and the check cannot drift apart.

For the image handlers the model input is made from the request bytes by the built-in
handler's own code (``handlers/builtin/jts_base.py``, the file that goes into the archive),
so resize, crop, ``image_size``, colour mode and alpha count the same in the kernel as in the
engine. Nothing here talks to the engine.
"""

from __future__ import annotations

import base64
import io
import json
import types
from pathlib import Path
from typing import Any, NamedTuple

from . import content
from .handlers.builtins import IMAGE_HANDLERS

#: The input name the engine gives a model's first input when its schema names none.
DEFAULT_INPUT_NAME = "input-0"


class Example(NamedTuple):
    """One example as both sides see it: the model's input and the request that makes it.

    Either may be None: a hook-only handler has a request but no tensor until its
    ``preprocess`` hook runs; a tensor handler sends the tensor itself as JSON. For a model
    with several inputs ``tensor`` is a tuple (positional inputs) or a dict (keyword inputs)
    of tensors, and the request is a JSON object keyed by input name (:func:`named_inputs`).
    """

    tensor: Any
    request: Any


def hooks_of(handler: Any) -> dict[str, Any]:
    """Notebook hook functions (``{"preprocess": f, "postprocess": g}``), else {}."""
    if isinstance(handler, dict):
        items = handler
    elif isinstance(handler, types.SimpleNamespace):
        items = vars(handler)
    else:
        return {}
    return {k: v for k, v in items.items() if callable(v)}


def split_example(example: Any, handler: Any, handler_config: dict[str, Any] | None) -> Example:
    """The model input and the request body of what the user gave as ``example``.

    For image handlers a PNG/JPEG (bytes, path or PIL image) is the request and the model
    input is what the handler's preprocessing makes of it; a tensor example is first turned
    into a PNG, then decoded the same way, so both sides start from the same bytes. With
    notebook ``preprocess`` hooks, a non-tensor example is the request and the hook, run here
    in the kernel, makes the model input. For other handlers the tensor is both.
    """
    if example is None:
        return Example(None, None)
    if isinstance(example, Path) and example.is_file():
        example = example.read_bytes()
    if type(example).__module__.startswith("PIL."):
        buf = io.BytesIO()
        example.save(buf, format="PNG")
        example = buf.getvalue()
    if isinstance(handler, str) and handler in IMAGE_HANDLERS:
        if isinstance(example, str) and Path(example).is_file():
            example = Path(example).read_bytes()
        if content.is_image(example):
            png = bytes(example)
            return Example(image_to_tensor(png, handler_config, handler=handler), png)
        tensor = as_tensor(example)
        png = tensor_to_png(tensor, handler_config)
        channels = int(tensor.shape[-3]) if tensor.ndim >= 3 else 1
        return Example(image_to_tensor(png, handler_config, channels, handler), png)
    if isinstance(example, (tuple, list)) and len(example) == 1 and tensor_like(example[0]):
        example = example[0]
    if tensor_like(example):
        return Example(as_tensor(example), None)
    if isinstance(example, (tuple, list)) and example and all(map(tensor_like, example)):
        return Example(tuple(as_tensor(x) for x in example), None)
    if isinstance(example, dict) and example and all(map(tensor_like, example.values())):
        return Example({str(k): as_tensor(v) for k, v in example.items()}, None)
    hooks = hooks_of(handler)
    if "preprocess" in hooks:
        return Example(hooks["preprocess"]([{"body": example}]), example)
    return Example(None, example)


def is_multi(tensor: Any) -> bool:
    """Whether an example's model input is several inputs (a tuple or dict of tensors)."""
    return isinstance(tensor, (tuple, dict))


def several_tensors(data: Any) -> bool:
    """Whether ``data`` is a model's several inputs: a non-empty tuple or dict of tensors."""
    values = list(data.values()) if isinstance(data, dict) else data
    return is_multi(data) and bool(values) and all(map(tensor_like, values))


def named_inputs(tensor: Any, names: list[str] | None = None) -> dict[str, Any]:
    """Several inputs by the names the archive's schema gives them (``schema.model_inputs``):
    a dict's keys, else ``names`` (a served schema's) or ``input-0``, ``input-1``... by
    position."""
    if isinstance(tensor, dict):
        return dict(tensor)
    if names and len(names) == len(tensor):
        return dict(zip(names, tensor, strict=True))
    from .archive.schema import input_name

    return {input_name(i): t for i, t in enumerate(tensor)}


def multi_input_json(tensor: Any, names: list[str] | None = None) -> bytes:
    """The JSON object keyed by input name that the tensor handler reads for several inputs."""
    return json.dumps(
        {n: as_tensor(t).tolist() for n, t in named_inputs(tensor, names).items()}
    ).encode()


def tensor_like(x: Any) -> bool:
    return type(x).__module__.split(".")[0] in ("torch", "numpy")


def as_tensor(x: Any) -> Any:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


# -- images ------------------------------------------------------------------------------------
def image_handler(
    handler_config: dict[str, Any] | None, channels: int = 1, handler: str = "image_classifier"
) -> Any:
    """The built-in image handler ``handler``, set up for decoding only (no model loaded).

    Its schema has ``channels`` and no fixed size: the size then comes from ``image_size``,
    ``resize`` and ``center_crop`` as in the engine, and the archive's schema is written
    from the tensor this makes, so the served handler arrives at the same size.
    """
    from .handlers import builtins

    classes = {
        "image_classifier": builtins.ImageClassifier,
        "image_segmenter": builtins.ImageSegmenter,
        "object_detector": builtins.ObjectDetector,
    }
    decoder = classes.get(handler, builtins.ImageHandlerBase)()
    decoder.handler_config = dict(handler_config or {})
    decoder.schema = {
        "inputs": [
            {"name": DEFAULT_INPUT_NAME, "datatype": "FP32", "shape": [-1, channels, -1, -1]}
        ]
    }
    decoder.configure_images()
    return decoder


def image_to_tensor(
    data: bytes,
    handler_config: dict[str, Any] | None,
    channels: int = 1,
    handler: str = "image_classifier",
) -> Any:
    """Decode image bytes as the built-in handler does: a ``(1, C, H, W)`` float tensor.

    ``channels`` is the model's colour depth when ``handler_config`` names no ``mode`` or
    ``channels``: grayscale unless told otherwise.
    """
    decoder = image_handler(handler_config, channels, handler)
    return decoder.decode_image(data).unsqueeze(0).to(decoder.input_dtype(0))


def tensor_to_png(tensor: Any, handler_config: dict[str, Any] | None) -> bytes:
    """The inverse of :func:`image_to_tensor` for a (1, C, H, W) or (C, H, W) tensor."""
    import numpy as np
    import torch
    from PIL import Image

    t = tensor.detach().cpu().float()
    t = t[0] if t.ndim == 4 else t
    mean, std = _mean_std(handler_config)
    if mean and std:
        t = t * torch.tensor(std).reshape(-1, 1, 1) + torch.tensor(mean).reshape(-1, 1, 1)
    arr = (t.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    img = (
        Image.fromarray(arr[0], "L")
        if arr.shape[0] == 1
        else Image.fromarray(np.transpose(arr, (1, 2, 0)), "RGB")
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_rows(
    rows: Any, handler_config: dict[str, Any] | None, handler: str = "image_classifier"
) -> tuple[list[bytes], Any]:
    """Held-out images as an image handler receives them, one request each, and as its
    preprocessing hands them to the model: ``(PNG bytes per row, (N, C, H, W) tensor)``.

    Each row goes through :func:`split_example`, the deploy example's own path: a tensor row
    (``(C, H, W)`` or ``(H, W)``) becomes its PNG, image bytes, paths and PIL images are
    sent as they are, and the model input is what the handler's code decodes from those
    bytes, so kernel and served model see the same pixels.
    """
    import torch

    requests: list[bytes] = []
    inputs: list[Any] = []
    for i, row in enumerate(rows):
        if tensor_like(row):
            t = as_tensor(row)
            if t.ndim == 2:
                t = t.unsqueeze(0)
            if t.ndim != 3:
                raise ValueError(
                    f"row {i} of x_test has shape {list(t.shape)}: the {handler} handler takes "
                    "images, so give x_test as (N, C, H, W) or (N, H, W) (reshape flat rows), "
                    "or as a list of image bytes"
                )
            row = t.unsqueeze(0)
        example = split_example(row, handler, handler_config)
        if not content.is_image(example.request):
            raise ValueError(f"row {i} of x_test is not an image nor an image tensor")
        requests.append(example.request)
        inputs.append(example.tensor)
    return requests, torch.cat(inputs) if inputs else torch.zeros((0,))


def _mean_std(cfg: dict[str, Any] | None) -> tuple[list[float] | None, list[float] | None]:
    cfg = cfg or {}

    def as_list(v: Any) -> list[float] | None:
        if v is None:
            return None
        return [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]

    return as_list(cfg.get("mean")), as_list(cfg.get("std"))


# -- request bodies ------------------------------------------------------------------------------
def request_body(example: Example) -> tuple[Any, str | None]:
    """``(body, content type)`` of the example for ``/predictions``: the image, the tensor as
    JSON, or the request as it is (the client picks its type)."""
    if content.is_image(example.request):
        return example.request, content.sniff(example.request)
    if is_multi(example.tensor):
        return multi_input_json(example.tensor), "application/json"
    if example.tensor is not None:
        return json.dumps(example.tensor.tolist()).encode(), "application/json"
    return example.request, None


def _read(data: Any) -> Any:
    return data.read_bytes() if isinstance(data, Path) else data


def v1_instances(data: Any) -> list[Any]:
    """KServe v1 ``instances``: base64 for bytes, rows for tensors, JSON as given."""
    data = _read(data)
    if isinstance(data, (bytes, bytearray)):
        return [{"b64": base64.b64encode(bytes(data)).decode()}]
    if hasattr(data, "tolist"):
        return data.tolist()
    return data if isinstance(data, list) else [data]


def v1_multi_instances(tensor: Any) -> list[dict[str, Any]]:
    """KServe v1 ``instances`` of a model with several inputs: one object per sample, keyed
    by input name (``[{"a": a[0], "b": b[0]}, ...]``), the form KServe v1 gives named inputs
    and the one the engine hands the tensor handler as the request's parameters."""
    named = {n: t.tolist() for n, t in named_inputs(tensor).items()}
    rows = min(len(v) for v in named.values()) if named else 0
    return [{n: v[i] for n, v in named.items()} for i in range(rows)]


def v2_inputs(data: Any, name: str = DEFAULT_INPUT_NAME) -> list[dict[str, Any]]:
    """KServe v2 ``inputs``: BYTES (base64) for bytes, the tensor's datatype and shape otherwise.

    Several inputs (a tuple or dict of tensors) give one named v2 input each. Inputs already
    in v2 form (a list of ``{name, datatype, ...}``, or a whole request body) pass through
    unchanged.
    """
    data = _read(data)
    if is_multi(data) and not (isinstance(data, dict) and "inputs" in data):
        return [v2_inputs(t, n)[0] for n, t in named_inputs(data).items()]
    if isinstance(data, (bytes, bytearray)):
        b64 = base64.b64encode(bytes(data)).decode()
        return [{"name": name, "shape": [1], "datatype": "BYTES", "data": [b64]}]
    if isinstance(data, list) and data and isinstance(data[0], dict) and "datatype" in data[0]:
        return data
    if isinstance(data, dict) and "inputs" in data:
        return data["inputs"]
    from .archive.schema import v2_datatype

    t = as_tensor(data)
    return [
        {
            "name": name,
            "shape": list(t.shape),
            "datatype": v2_datatype(t.dtype),
            "data": t.reshape(-1).tolist(),
        }
    ]


def input_names(schema: dict[str, Any] | None) -> list[str]:
    """The names the archive's schema gives the inputs, in the model's order."""
    inputs = (schema or {}).get("inputs") or []
    return [str(i.get("name", DEFAULT_INPUT_NAME)) for i in inputs]


def first_input_name(schema: dict[str, Any] | None) -> str:
    """The name the archive's schema gives the first input (what a v2 request must use)."""
    inputs = (schema or {}).get("inputs") or [{}]
    return inputs[0].get("name", DEFAULT_INPUT_NAME)


def write_example_files(
    store: Path, stem: str, example: Example, input_name: str = DEFAULT_INPUT_NAME
) -> dict[str, str]:
    """Write the example as ready-to-send files in the model store, for the curl snippets.

    Returns ``{"raw": ..., "v1": ..., "v2": ...}`` (paths; a kind is absent when the example
    has no such form, and a store that cannot be written gives {}: the snippets are a
    convenience, never a reason to fail a deploy).
    """
    tensor, request = example
    out: dict[str, str] = {}
    try:
        if content.is_image(request):
            raw = store / f"{stem}.example.png"
            raw.write_bytes(request)
            v1, v2 = v1_instances(request), v2_inputs(request, input_name)
        elif is_multi(tensor):
            raw = store / f"{stem}.example.json"
            raw.write_bytes(request_body(example)[0])
            v1, v2 = v1_multi_instances(tensor), v2_inputs(tensor)
        elif tensor is not None and hasattr(tensor, "tolist"):
            raw = store / f"{stem}.example.json"
            raw.write_text(json.dumps(tensor.tolist()))
            v1, v2 = v1_instances(tensor), v2_inputs(tensor, input_name)
        elif request is not None:
            raw = store / f"{stem}.example.txt"
            raw.write_bytes(request.encode() if isinstance(request, str) else request)
            v1, v2 = v1_instances(request), None
        else:
            return out
        out["raw"] = str(raw)
        bodies = {
            "v1": None if v1 is None else {"instances": v1},
            "v2": None if v2 is None else {"inputs": v2},
        }
        for kind, body in bodies.items():
            if body is not None:
                path = store / f"{stem}.{kind}.json"
                path.write_text(json.dumps(body))
                out[kind] = str(path)
    except OSError:
        pass
    return out
