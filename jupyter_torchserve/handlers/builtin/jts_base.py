"""Standalone base of the jupyter_torchserve built-in handlers.

This file is copied into every archive next to the built-in handler that uses it, so it
imports only the standard library, torch, numpy, PIL and ``jts_model_loader`` (its sibling
in the archive): the same archive then serves with the same answers in our engine and in a
plain TorchServe 0.12, which only calls ``initialize(context)`` and ``handle(data, context)``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import time
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

METADATA_FILE = os.path.join("MAR-INF", "jupyter_torchserve.json")

#: KServe v2 / schema datatype names -> torch dtypes.
DATATYPES: dict[str, torch.dtype] = {
    "FP32": torch.float32,
    "FP64": torch.float64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "INT16": torch.int16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}


def is_true(value: Any) -> bool:
    """Header truthiness: TorchServe sends ``"True"``; be lenient with other spellings."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1"))


def device_from_properties(properties: dict[str, Any]) -> torch.device:
    """``cuda:<gpu_id>`` when the worker was given a GPU and CUDA works, else the CPU."""
    gpu_id = properties.get("gpu_id")
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def read_json_file(path: str) -> Any:
    """Parsed JSON of ``path``, or None when the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def normalise_labels(mapping: Any) -> dict[str, str] | None:
    """Turn any of TorchServe's ``index_to_name.json`` layouts (or a label list) into str->str."""
    if mapping is None:
        return None
    if isinstance(mapping, list):
        return {str(i): str(v) for i, v in enumerate(mapping)}
    if not isinstance(mapping, dict):
        raise ValueError('index_to_name.json must map "class index" to "label"')
    names = mapping.get("object_type_names")
    if isinstance(names, list):
        return {str(i): str(v) for i, v in enumerate(names)}
    labels = {}
    for key, value in mapping.items():
        if isinstance(value, list) and value:  # ImageNet's ["n01440764", "tench"]
            value = value[-1]
        labels[str(key)] = str(value)
    return labels


def request_payload(row: Any) -> Any:
    """The input of one request: form field ``data``, else the raw ``body``."""
    if not isinstance(row, dict):
        return row
    for key in ("data", "body"):
        if row.get(key) is not None:
            return row[key]
    if len(row) == 1:
        return next(iter(row.values()))
    raise ValueError("the request has no body and no 'data' field")


def as_bytes_or_text(payload: Any) -> Any:
    """bytearray/memoryview -> bytes, so later type checks stay simple."""
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    return payload


def decode_base64(text: str) -> bytes:
    """Decode base64 text, also from a ``data:...;base64,`` URL."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the text input is not valid base64: {exc}") from exc


def first_tensor(output: Any) -> torch.Tensor:
    """The main tensor of a model output (a tensor, the first of a tuple, or ``out``/``logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        for key in ("out", "logits", "output"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        output = list(output.values())
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"the model output is not a tensor: {type(output).__name__}")


def _fallback_load_model(model_dir: str, device: torch.device) -> torch.nn.Module:
    """Minimal loader used only when ``jts_model_loader.py`` is absent (TorchScript, export)."""
    manifest = read_json_file(os.path.join(model_dir, "MAR-INF", "MANIFEST.json")) or {}
    serialized = (manifest.get("model") or {}).get("serializedFile")
    if not serialized:
        raise RuntimeError("the manifest names no serializedFile and jts_model_loader is missing")
    path = os.path.join(model_dir, serialized)
    if path.endswith(".pt2"):
        return torch.export.load(path).module().to(device)
    return torch.jit.load(path, map_location=device)


class JtsBaseHandler:
    """TorchServe's handler shape: ``initialize`` once, then ``handle`` per batch.

    ``handle`` runs ``preprocess`` -> ``inference`` -> ``postprocess``; request header
    ``explain: True`` switches to :meth:`explain_handle` (input x gradient of the top class)
    and ``describe: True`` to :meth:`describe_handle`. Subclasses record how many model rows
    each request contributed in ``self.request_sizes`` so outputs can be split back.
    """

    #: Short description of the accepted request body, shown by ``describe_handle``.
    input_format = "model-specific"

    def __init__(self) -> None:
        self.model: Any = None
        self.device: torch.device = torch.device("cpu")
        self.context: Any = None
        self.manifest: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.handler_config: dict[str, Any] = {}
        self.schema: dict[str, Any] = {}
        self.mapping: dict[str, str] | None = None
        self.model_dir: str = ""
        self.request_sizes: list[int] = []
        self.initialized = False
        self._row_fallback_warned = False

    # -- set-up ------------------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        """Load the model onto the worker's device and read our archive metadata."""
        self.context = context
        properties = context.system_properties
        self.model_dir = properties.get("model_dir") or "."
        self.device = device_from_properties(properties)
        self.manifest = context.manifest or {}
        self.metadata = read_json_file(os.path.join(self.model_dir, METADATA_FILE)) or {}
        config = dict(self.metadata.get("handler_config") or {})
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        if isinstance(yaml_config.get("handler"), dict):  # TorchServe's model-config.yaml
            config.update(yaml_config["handler"])
        self.handler_config = config
        self.schema = self.metadata.get("schema") or {}
        labels = read_json_file(os.path.join(self.model_dir, "index_to_name.json"))
        if labels is None:
            labels = self.metadata.get("labels") or self.metadata.get("label_map")
        self.mapping = normalise_labels(labels)
        self.model = self.load_model(self.model_dir, self.device)
        if hasattr(self.model, "eval"):
            try:
                self.model.eval()
            except (NotImplementedError, RuntimeError):  # some exported modules refuse eval()
                pass
        self.initialized = True

    def load_model(self, model_dir: str, device: torch.device) -> Any:
        """Load the archive's model with ``jts_model_loader`` (all our formats, TorchServe's too)."""
        try:
            from jts_model_loader import load_model
        except ModuleNotFoundError as exc:
            if exc.name != "jts_model_loader":
                raise
            logger.warning("jts_model_loader.py is missing; using the minimal fallback loader")
            load_model = _fallback_load_model
        return load_model(model_dir, device)

    # -- schema helpers ----------------------------------------------------------------------
    def input_specs(self) -> list[dict[str, Any]]:
        return list(self.schema.get("inputs") or [])

    def input_dtype(self, index: int = 0, default: torch.dtype = torch.float32) -> torch.dtype:
        specs = self.input_specs()
        if index < len(specs):
            return DATATYPES.get(str(specs[index].get("datatype", "")).upper(), default)
        return default

    def input_shape(self, index: int = 0) -> list[Any] | None:
        specs = self.input_specs()
        if index < len(specs) and isinstance(specs[index].get("shape"), list):
            return specs[index]["shape"]
        return None

    def label(self, index: int) -> str:
        if self.mapping is not None and str(index) in self.mapping:
            return self.mapping[str(index)]
        return str(index)

    # -- the request path --------------------------------------------------------------------
    def _header(self, name: str, idx: int = 0) -> Any:
        if self.context is None or getattr(self.context, "request_processor", None) is None:
            return None
        # Our worker lower-cases header names; TorchServe passes them as the client sent them.
        for key in dict.fromkeys((name, name.lower(), name.title())):
            try:
                value = self.context.get_request_header(idx, key)
            except (IndexError, KeyError, TypeError):
                return None
            if value is not None:
                return value
        return None

    def _is_explain(self) -> bool:
        return is_true(self._header("explain"))

    def _is_describe(self) -> bool:
        return is_true(self._header("describe"))

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        """Entry point: one output per request of ``data``."""
        self.context = context
        started = time.perf_counter()
        if self._is_describe():
            output = [self.describe_handle() for _ in data]
        else:
            model_input = self.preprocess(data)
            if self._is_explain():
                output = self.explain_handle(model_input, data)
            else:
                output = self.postprocess(self.inference(model_input))
        metrics = getattr(context, "metrics", None)
        if metrics is not None and hasattr(metrics, "add_time"):
            metrics.add_time(
                "HandlerTime", round((time.perf_counter() - started) * 1000, 2), None, "ms"
            )
        return output

    def preprocess(self, data: list[Any]) -> Any:
        """Requests -> model input; the default treats each payload as one row of a tensor."""
        rows = [torch.as_tensor(request_payload(row)) for row in data]
        self.request_sizes = [1] * len(rows)
        return torch.stack(rows).to(self.device)

    def _call_model(self, model_input: Any) -> Any:
        if isinstance(model_input, (tuple, list)):
            return self.model(*model_input)
        if isinstance(model_input, dict):
            return self.model(**model_input)
        return self.model(model_input)

    def inference(self, model_input: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the model without autograd; retry row by row if the batch shape is refused.

        Models captured with a fixed batch size (an export or trace of one example) reject a
        bigger batch; serving them one row at a time is slower but gives the right answers.
        """
        with torch.inference_mode():
            try:
                return self._call_model(model_input)
            except Exception:
                rows = self._split_rows(model_input)
                if rows is None:
                    raise
                try:
                    outputs = [self._call_model(row) for row in rows]
                except Exception:
                    pass
                else:
                    if not self._row_fallback_warned:
                        logger.warning("the model refused a batch; running it row by row")
                        self._row_fallback_warned = True
                    return _concat_outputs(outputs)
                raise

    @staticmethod
    def _split_rows(model_input: Any) -> list[Any] | None:
        if isinstance(model_input, torch.Tensor) and model_input.dim() > 0 and len(model_input) > 1:
            return list(model_input.split(1))
        if (
            isinstance(model_input, (tuple, list))
            and model_input
            and all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in model_input)
            and len(model_input[0]) > 1
            and all(len(t) == len(model_input[0]) for t in model_input)
        ):
            parts = [t.split(1) for t in model_input]
            return [tuple(p) for p in zip(*parts, strict=False)]
        return None

    def postprocess(self, output: Any) -> list[Any]:
        """Model output -> one JSON-able value per request (split by ``request_sizes``)."""
        return [part.tolist() for part in self.split_per_request(first_tensor(output))]

    def split_per_request(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        sizes = self.request_sizes or [1] * len(tensor)
        if sum(sizes) != len(tensor):
            raise ValueError(
                f"the model returned {len(tensor)} rows for a batch of {sum(sizes)} input rows"
            )
        return list(tensor.detach().cpu().split(sizes))

    # -- explanations and description ---------------------------------------------------------
    def explain_handle(self, model_input: Any, raw_data: list[Any]) -> list[Any]:
        """Input x gradient saliency of the top class (or the request's ``target``), per request."""
        inputs = list(model_input) if isinstance(model_input, (tuple, list)) else [model_input]
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise TypeError("explanations need tensor inputs")
        leaves = [
            t.detach().clone().requires_grad_(t.is_floating_point() or t.is_complex())
            for t in inputs
        ]
        if not any(t.requires_grad for t in leaves):
            raise TypeError("explanations need a floating-point model input")
        targets = self._explain_targets(raw_data)
        with torch.inference_mode(False), torch.enable_grad():
            output = first_tensor(self._call_model(leaves if len(leaves) > 1 else leaves[0]))
            flat = output.reshape(output.shape[0], -1)
            chosen = flat.argmax(dim=1)
            if targets is not None and len(targets) == len(chosen):
                chosen = torch.tensor(targets, device=flat.device)
            score = flat.gather(1, chosen.view(-1, 1)).sum()
            differentiable = [t for t in leaves if t.requires_grad]
            grads = torch.autograd.grad(score, differentiable, allow_unused=True)
        grad = grads[0] if grads[0] is not None else torch.zeros_like(differentiable[0])
        attribution = (differentiable[0] * grad).detach()
        return [part.tolist() for part in self.explanation_parts(attribution)]

    def explanation_parts(self, attribution: torch.Tensor) -> list[torch.Tensor]:
        """Per-request attributions shaped like each request's input (one sample: no batch dim)."""
        return [part[0] if len(part) == 1 else part for part in self.split_per_request(attribution)]

    def _explain_targets(self, raw_data: list[Any]) -> list[int] | None:
        """Per-row target classes when every request names an int ``target``."""
        sizes = self.request_sizes or [1] * len(raw_data)
        targets: list[int] = []
        for row, size in zip(raw_data, sizes, strict=False):
            target = row.get("target") if isinstance(row, dict) else None
            if isinstance(target, (bytes, str)):
                try:
                    target = int(target)
                except ValueError:
                    return None
            if not isinstance(target, int):
                return None
            targets.extend([target] * size)
        return targets

    def describe_handle(self) -> dict[str, Any]:
        """Custom metadata for ``GET /models/{m}?customized=true``: schema and input format."""
        return {
            "handler": type(self).__name__,
            "input_format": self.input_format,
            "format": self.metadata.get("format"),
            "schema": self.schema or None,
            "handler_config": self.handler_config,
            "labels": None if self.mapping is None else len(self.mapping),
            "device": str(self.device),
        }


def _concat_outputs(outputs: list[Any]) -> Any:
    """Join per-row model outputs back into one batch output (tensors, tuples, dicts, lists)."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([o if o.dim() > 0 else o.reshape(1) for o in outputs])
    if isinstance(first, tuple):
        return tuple(_concat_outputs([o[i] for o in outputs]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _concat_outputs([o[k] for o in outputs]) for k in first}
    if isinstance(first, list):
        return [item for o in outputs for item in o]
    raise TypeError(f"cannot join model outputs of type {type(first).__name__}")


class ImageHandlerBase(JtsBaseHandler):
    """Shared image decoding for the vision built-ins (PIL only, no torchvision).

    The colour mode and size come from the schema's first input (``[-1, 1, 28, 28]`` -> a
    28x28 grayscale image), normalisation and optional resize/crop from ``handler_config``
    (``mean``, ``std``, ``resize``, ``center_crop``, ``mode``, ``image_size``).
    """

    input_format = "image bytes (PNG, JPEG, ...), base64 text, or a float nested list [C, H, W]"

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        from PIL import Image

        if not context.system_properties.get("limit_max_image_pixels", True):
            Image.MAX_IMAGE_PIXELS = None
        self.configure_images()

    def configure_images(self) -> None:
        """Read the colour mode, size, resize/crop and mean/std from the config and schema.

        Apart from ``initialize`` (which also loads the model) so that the notebook side can
        decode an example with this very code: its parity check then feeds the in-kernel
        model the same tensor this handler feeds the served one.
        """
        cfg = self.handler_config
        shape = self.input_shape(0)
        channels = None
        size = None
        if shape and len(shape) == 4:
            channels = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else None
            if all(isinstance(s, int) and s > 0 for s in shape[2:]):
                size = (int(shape[2]), int(shape[3]))
        if cfg.get("image_size") is not None:
            value = cfg["image_size"]
            size = (int(value), int(value)) if isinstance(value, int) else tuple(value)[:2]
        if cfg.get("channels") is not None:
            channels = int(cfg["channels"])
        self.image_mode: str = cfg.get("mode") or {1: "L", 3: "RGB", 4: "RGBA"}.get(
            channels or 3, "RGB"
        )
        self.image_size: tuple[int, int] | None = size
        self.resize = cfg.get("resize")
        self.center_crop = cfg.get("center_crop")
        mean, std = cfg.get("mean"), cfg.get("std")
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def decode_image(self, payload: Any) -> torch.Tensor:
        """One request payload -> a float ``[C, H, W]`` tensor ready for the model."""
        payload = as_bytes_or_text(payload)
        if isinstance(payload, dict):
            for key in ("data", "b64", "image", "instances"):
                if key in payload:
                    return self.decode_image(payload[key])
            raise ValueError("a JSON image input needs a 'data' or 'b64' field")
        if isinstance(payload, str):
            payload = decode_base64(payload)
        if isinstance(payload, bytes) and payload[:6] == b"\x93NUMPY":
            # a tensor already preprocessed, e.g. a KServe v2 FP32 input sent as .npy
            payload = np.load(io.BytesIO(payload), allow_pickle=False)
        if isinstance(payload, bytes):
            return self.image_to_tensor(self.open_image(payload))
        if isinstance(payload, (list, tuple, np.ndarray, torch.Tensor)):
            tensor = torch.as_tensor(np.asarray(payload, dtype=np.float32))
            if tensor.dim() == 2:
                tensor = tensor.unsqueeze(0)
            if tensor.dim() == 4 and tensor.shape[0] == 1:
                tensor = tensor[0]
            if tensor.dim() != 3:
                raise ValueError(
                    f"a list image must be [C, H, W] or [H, W], not {list(tensor.shape)}"
                )
            return tensor
        raise TypeError(f"cannot read an image from {type(payload).__name__}")

    def open_image(self, raw: bytes) -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"the request body is not an image Pillow can read: {exc}") from exc
        return image

    def image_to_tensor(self, image: Any) -> torch.Tensor:
        """PIL image -> mode/size of the model -> ``[C, H, W]`` in [0, 1] -> mean/std."""
        from PIL import Image

        if image.mode != self.image_mode:
            if image.mode in ("RGBA", "LA", "P") and self.image_mode in ("RGB", "L"):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, image)
            image = image.convert(self.image_mode)
        if self.resize:
            width, height = image.size
            short = int(self.resize)
            if width <= height:
                image = image.resize((short, max(1, round(height * short / width))), Image.BILINEAR)
            else:
                image = image.resize((max(1, round(width * short / height)), short), Image.BILINEAR)
        if self.center_crop:
            crop = self.center_crop
            ch, cw = (
                (int(crop), int(crop)) if isinstance(crop, int) else (int(crop[0]), int(crop[1]))
            )
            width, height = image.size
            left, top = max(0, (width - cw) // 2), max(0, (height - ch) // 2)
            image = image.crop((left, top, left + cw, top + ch))
        if self.image_size is not None:
            height, width = self.image_size
            if image.size != (width, height):
                image = image.resize((width, height), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[None, :, :]
        else:
            array = array.transpose(2, 0, 1)
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.mean is not None:
            tensor = tensor - self.mean
        if self.std is not None:
            tensor = tensor / self.std
        return tensor

    def preprocess(self, data: list[Any]) -> torch.Tensor:
        images = [self.decode_image(request_payload(row)) for row in data]
        self.request_sizes = [1] * len(images)
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) > 1:
            raise ValueError(
                f"the images of one batch differ in shape {sorted(shapes)}; set the input size "
                f"in the schema or handler_config['image_size']"
            )
        return torch.stack(images).to(self.device, self.input_dtype(0))
