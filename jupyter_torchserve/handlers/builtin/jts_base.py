"""Standalone base of the jupyter_torchserve built-in handlers.

This file is copied into every archive next to the built-in handler that uses it, so it
imports only the standard library, torch, numpy, PIL and ``jts_model_loader`` (its sibling
in the archive): the same archive then serves with the same answers in our engine and in a
plain TorchServe 0.12, which only calls ``initialize(context)`` and ``handle(data, context)``.
Captum is imported only when an explanation is asked for, so an archive still predicts in a
TorchServe without it, and answers a clear error (501) instead of explaining.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import os
import sys
import time
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

METADATA_FILE = os.path.join("MAR-INF", "jupyter_torchserve.json")

#: Response header of every explanation: what the bare attribution list of TorchServe's
#: answer has no room for (target, prediction, convergence delta, cost), as ASCII JSON.
EXPLANATION_HEADER = "x-explanation"

#: TorchServe's vision handler integrates over 15 steps from a zero baseline.
DEFAULT_N_STEPS = 15

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


class InputError(ValueError):
    """A request the built-ins cannot read: the caller's fault, answered 400 (`_handle_rows`).

    Its own class, not any ValueError, so that a user's hook or model that raises keeps its
    503 and its traceback: only our decoding knows the request is what was wrong."""


def request_payload(row: Any) -> Any:
    """The input of one request: form field ``data``, else the raw ``body``."""
    if not isinstance(row, dict):
        return row
    for key in ("data", "body"):
        if row.get(key) is not None:
            return row[key]
    if len(row) == 1:
        return next(iter(row.values()))
    raise InputError("the request has no body and no 'data' field")


def as_bytes_or_text(payload: Any) -> Any:
    """bytearray/memoryview -> bytes, so later type checks stay simple."""
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    return payload


def unwrapped(payload: Any, keys: tuple[str, ...], missing: str) -> Any:
    """A request payload with the JSON objects a client wrapped it in taken off: the value
    under the first of ``keys`` present (``{"data": ...}``), as deep as they go.

    Why one function: every built-in accepts its input bare or in such an envelope, each
    with its own field names; ``missing`` is the ``ValueError`` where none of them is there.
    """
    payload = as_bytes_or_text(payload)
    while isinstance(payload, dict):
        key = next((k for k in keys if k in payload), None)
        if key is None:
            raise InputError(missing)
        payload = as_bytes_or_text(payload[key])
    return payload


def decode_base64(text: str) -> bytes:
    """Decode base64 text, also from a ``data:...;base64,`` URL."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"the text input is not valid base64: {exc}") from exc


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


class PredictionException(Exception):
    """A failure answered with ``error_code``: named like TorchServe's, which our runtime
    recognises by name (this file cannot import ``ts``)."""

    def __init__(self, message: str, error_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


def prediction_error(message: str, error_code: int) -> Exception:
    """An exception the serving runtime answers with ``error_code`` and ``message``.

    Inside TorchServe that must be TorchServe's own ``PredictionException`` (any other
    exception becomes a bare 503 "Prediction failed"); its worker has always loaded it, so
    it is looked up, never imported.
    """
    runtime = getattr(sys.modules.get("ts.utils.util"), "PredictionException", None)
    if isinstance(runtime, type) and issubclass(runtime, Exception):
        return runtime(message, error_code)
    return PredictionException(message, error_code)


def captum_attr() -> Any:
    """``captum.attr``, imported on the first explanation rather than with the handler."""
    try:
        import captum.attr
    except ImportError as exc:
        raise prediction_error(
            f"explanations need Captum where this model is served, and it is not installed "
            f"there ({exc}): run `pip install captum` in that environment",
            501,
        ) from exc
    return captum.attr


class ExplainSettings:
    """``handler_config["explain"]``: how Integrated Gradients runs for this model.

    ``n_steps`` (default 15, TorchServe's), ``internal_batch_size`` (rows per forward pass;
    default: all ``n_steps`` x rows at once), ``method`` (Captum's, default
    ``gausslegendre``) and ``baseline``: ``0``/``"zero"`` (TorchServe's), any number (a
    constant model input), ``"black"`` (images: the preprocessed all-black image) or a
    nested list shaped like one sample; for text, ``baseline`` is the token id of the
    reference sequence (default: the padding id) and ``layer`` names the embedding layer.
    Checked when the model loads, so a bad value fails the registration, not every
    explanation.
    """

    #: Captum's integral approximations (``IntegratedGradients.attribute(method=...)``).
    METHODS = (
        "gausslegendre",
        "riemann_left",
        "riemann_right",
        "riemann_middle",
        "riemann_trapezoid",
    )

    def __init__(self, config: Any) -> None:
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"handler_config['explain'] must be an object, not {config!r}")
        config = dict(config or {})
        known = {"n_steps", "internal_batch_size", "method", "baseline", "layer"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"handler_config['explain'] has unknown keys {unknown}")
        self.n_steps = _positive_int(config.get("n_steps", DEFAULT_N_STEPS), "n_steps")
        batch = config.get("internal_batch_size")
        self.internal_batch_size = (
            None if batch is None else _positive_int(batch, "internal_batch_size")
        )
        self.method = config.get("method", "gausslegendre")
        if self.method not in self.METHODS:
            raise ValueError(
                f"handler_config['explain']['method'] must be one of {', '.join(self.METHODS)}"
            )
        #: Text: the dotted name of the embedding layer to integrate over (default: the first).
        self.layer = config.get("layer")
        self.baseline_given = "baseline" in config
        baseline = config.get("baseline", 0)
        if baseline == "zero":
            baseline = 0
        if isinstance(baseline, bool) or not (
            isinstance(baseline, (int, float, list)) or baseline == "black"
        ):
            raise ValueError(
                "handler_config['explain']['baseline'] must be a number, 'zero', 'black' or a "
                f"nested list shaped like one input, not {baseline!r}"
            )
        self.baseline = baseline

    def describe_baseline(self) -> Any:
        return "tensor" if isinstance(self.baseline, list) else self.baseline


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"handler_config['explain']['{what}'] must be a positive int")
    return value


def parse_target(value: Any, rows: int, classes: int) -> int | list[int] | None:
    """A request's ``target``: an int (every row), a list (one per row), or None (absent).

    Values arrive as TorchServe delivers them: JSON numbers, or text from a form field.
    """
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise prediction_error(f"target must be a class index, not {value!r}", 400) from None
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != rows:
        raise prediction_error(
            f"target lists {len(value)} classes for a request of {rows} rows", 400
        )
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int):
            raise prediction_error(f"target must be a class index, not {item!r}", 400)
        if not 0 <= item < classes:
            raise prediction_error(
                f"target {item} is out of range: the model has {classes} outputs", 400
            )
    return value


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
    ``explain: True`` switches to :meth:`explain_handle` (Captum's Integrated Gradients, through
    :meth:`get_insights`) and ``describe: True`` to :meth:`describe_handle`. Subclasses record
    how many model rows each request contributed in ``self.request_sizes`` so outputs can be
    split back.
    """

    #: Named in the ``x-explanation`` header; a subclass whose get_insights uses another
    #: attribution method says which.
    explain_method = "IntegratedGradients"
    #: Whether ``handler_config["explain"]["baseline"] = "black"`` means something here.
    black_baseline_supported = False

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
        self.explain_settings = ExplainSettings(None)
        #: Set by get_insights for the request it explains (one value per row), sent back in
        #: the ``x-explanation`` header; None when the method has no convergence delta.
        self.convergence_delta: torch.Tensor | None = None
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
        self.explain_settings = ExplainSettings(config.get("explain"))
        if self.explain_settings.baseline == "black" and not self.black_baseline_supported:
            raise ValueError(
                f"the 'black' explain baseline is for images, not {type(self).__name__}"
            )
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

    def input_name(self, index: int) -> str:
        specs = self.input_specs()
        if index < len(specs) and specs[index].get("name"):
            return str(specs[index]["name"])
        return f"input-{index}"

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

    def _is_explain(self, idx: int = 0) -> bool:
        return is_true(self._header("explain", idx))

    def _is_describe(self) -> bool:
        return is_true(self._header("describe"))

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        """Entry point: one output per request of ``data``."""
        self.context = context
        started = time.perf_counter()
        if self._is_describe():
            output = [self.describe_handle() for _ in data]
        else:
            explain = [self._is_explain(idx) for idx in range(len(data))]
            if len(set(explain)) > 1:
                output = self._handle_apart(data, explain)
            else:
                output = self._handle_rows(data, bool(explain and explain[0]))
        metrics = getattr(context, "metrics", None)
        if metrics is not None and hasattr(metrics, "add_time"):
            metrics.add_time(
                "HandlerTime", round((time.perf_counter() - started) * 1000, 2), None, "ms"
            )
        return output

    def _handle_rows(self, data: list[Any], explain: bool) -> list[Any]:
        try:
            model_input = self.preprocess(data)
        except InputError as exc:  # TorchServe's 400, KServe's InvalidInput
            raise prediction_error(str(exc), 400) from exc
        if explain:
            return self.explain_handle(model_input, data)
        return self.postprocess(self.inference(model_input))

    def _handle_apart(self, data: list[Any], explain: list[bool]) -> list[Any]:
        """Predictions and explanations of one batch, run as two batches.

        TorchServe's frontend batches both kinds together and its handlers decide by the
        first request's header, answering the others with the wrong kind. Each part sees
        the context of its own requests only (the per-request processors and ids, which
        every header and status lookup goes through, in TorchServe's Context and ours).
        """
        context = self.context
        processors = context.request_processor
        ids = getattr(context, "request_ids", None)
        output: list[Any] = [None] * len(data)
        try:
            for want in (False, True):
                rows = [idx for idx, asked in enumerate(explain) if asked == want]
                context.request_processor = [processors[idx] for idx in rows]
                if isinstance(ids, dict):
                    context.request_ids = {j: ids[idx] for j, idx in enumerate(rows)}
                part = self._handle_rows([data[idx] for idx in rows], want)
                if len(part) != len(rows):
                    raise ValueError(f"{len(part)} outputs for a part of {len(rows)} requests")
                for idx, value in zip(rows, part, strict=True):
                    output[idx] = value
        finally:
            context.request_processor = processors
            if isinstance(ids, dict):
                context.request_ids = ids
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
        """Run the model without autograd; a model that refuses the input is told in terms
        of the request when the input's shape is not the archive's example's.

        torch.export's own word for a wrong width is ``Guard failed: x.size()[1] == 64``,
        which names neither the input nor the shape that was sent. The shape is only named
        once the model has failed, as the cause to look at first: a model archived from a
        script or eager code may take other shapes than its example's."""
        try:
            return self._run_model(model_input)
        except Exception as exc:
            # out of memory stays itself: the worker answers it as TorchServe's 507
            ran_out = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            mismatch = None if ran_out else self.shape_mismatch(model_input)
            if mismatch is None:
                raise
            # TorchScript's own message ends with the error it wraps, after its traceback
            last = (str(exc).strip().splitlines() or [""])[-1].strip()
            kind = type(exc).__name__
            said = last if last.startswith(f"{kind}:") else f"{kind}: {last}"
            raise prediction_error(f"{mismatch} (the model raised {said})", 400) from exc

    def shape_mismatch(self, model_input: Any) -> str | None:
        """The first input whose shape differs from the schema's beyond the batch dim."""
        names = [self.input_name(i) for i in range(len(self.input_specs()))]
        expected = dict(zip(names, (self.input_shape(i) for i in range(len(names))), strict=True))
        if isinstance(model_input, dict):
            sent = list(model_input.items())
        elif isinstance(model_input, (tuple, list)):
            sent = [(self.input_name(i), t) for i, t in enumerate(model_input)]
        else:
            sent = [(self.input_name(0), model_input)]
        for name, tensor in sent:
            shape = expected.get(name)
            if not shape or not isinstance(tensor, torch.Tensor):
                continue
            got = list(tensor.shape)
            fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[1:]]
            fits = len(got) == len(shape) and all(
                f in (None, g) for f, g in zip(fixed, got[1:], strict=True)
            )
            if not fits:
                want = ", ".join(["N", *("?" if f is None else str(f) for f in fixed)])
                return (
                    f"input {name!r} has shape {got}, but the model was archived with an "
                    f"example of shape [{want}] (N: any batch size)"
                )
        return None

    def _run_model(self, model_input: Any) -> Any:
        """Models captured with a fixed batch size (an export or trace of one example) reject
        a bigger batch: they are run one row at a time, slower but with the right answers."""
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
    def explain_handle(self, data_preprocess: Any, raw_data: list[Any]) -> list[Any]:
        """TorchServe's explanation hook: one answer per request, each from :meth:`get_insights`.

        Where we differ from TorchServe, which explains the whole batch against the first
        request's ``target`` (0 when it names none): each request is explained against its
        own ``target``, and a request that names none against the class the model predicts
        for it. A named ``target`` is honoured exactly as TorchServe reads it (the request's
        ``target`` field: a KServe v1 instance's key, a form field; 0 means class 0) and,
        for a JSON object body, from its ``"target"`` key too. The answer keeps TorchServe's
        shape (an image's attributions are a bare ``[C][H][W]`` list); what that has no room
        for goes into the ``x-explanation`` response header (:meth:`explanation_info`).
        """
        outputs = []
        parts = self.request_inputs(data_preprocess)
        for idx, (rows, raw) in enumerate(zip(parts, raw_data, strict=True)):
            started = time.perf_counter()
            scores = self.explain_scores(rows)
            predicted = scores.argmax(dim=1).tolist()
            target = parse_target(self.requested_target(raw), len(predicted), scores.shape[1])
            if target is None:
                target = predicted[0] if self.one_sample(idx) else predicted
            self.convergence_delta = None
            with torch.inference_mode(False), torch.enable_grad():
                insight = self.get_insights(rows, raw, target)
            info = self.explanation_info(idx, scores, target)
            info["ms"] = round((time.perf_counter() - started) * 1000, 2)
            if self.context is not None and hasattr(self.context, "set_response_header"):
                self.context.set_response_header(
                    idx, EXPLANATION_HEADER, json.dumps(info, separators=(",", ":"))
                )
            outputs.append(self.explanation_answer(idx, insight))
        return outputs

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any) -> list[Any]:
        """TorchServe's hook: the explanation of each row of one request, as a list.

        ``tensor_data`` holds the request's rows (batch dimension kept); ``target`` is one
        class index, or one per row. This default is Captum's Integrated Gradients of the
        model's (flattened) output toward ``target``, with :class:`ExplainSettings`; it
        records the convergence delta in ``self.convergence_delta``.
        """
        attributions, delta = self.integrated_gradients(tensor_data, target)
        self.convergence_delta = delta
        if not isinstance(tensor_data, (tuple, list)):
            return attributions.detach().cpu().tolist()
        # a multi-input model: each row's attributions keyed by the explained inputs' names
        if not isinstance(attributions, tuple):
            attributions = (attributions,)
        names = [self.input_name(i) for i in self._floating_positions(tensor_data)]
        per_input = [a.detach().cpu().tolist() for a in attributions]
        return [dict(zip(names, row, strict=True)) for row in zip(*per_input, strict=True)]

    def integrated_gradients(self, inputs: Any, target: Any) -> tuple[Any, torch.Tensor]:
        """Captum's ``IntegratedGradients`` over every floating-point model input.

        Other inputs (integer ids, masks) are held fixed. When the model refuses the
        ``n_steps`` x rows batch that Captum feeds it at once (a model captured with a fixed
        batch size), it is run again one request's rows per forward pass.
        """
        attr = captum_attr()
        tensors = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise prediction_error("explanations need tensor model inputs", 501)
        floating = self._floating_positions(tensors)
        if not floating:
            raise prediction_error(
                "Integrated Gradients needs a floating-point model input; this model takes "
                f"{', '.join(str(t.dtype) for t in tensors)} (for token ids use the "
                "text_classifier handler, which integrates over the embedding)",
                501,
            )
        fixed = [i for i in range(len(tensors)) if i not in floating]

        def forward(*args: torch.Tensor) -> torch.Tensor:
            ordered: list[Any] = [None] * len(tensors)
            for pos, value in zip(floating + fixed, args, strict=True):
                ordered[pos] = value
            output = first_tensor(self._call_model(ordered if len(ordered) > 1 else ordered[0]))
            return self.explained_outputs(output)

        explained = tuple(tensors[i] for i in floating)
        settings = self.explain_settings
        kwargs: dict[str, Any] = {
            "baselines": self.explain_baselines(explained),
            "target": target,
            "additional_forward_args": tuple(tensors[i] for i in fixed) or None,
            "n_steps": settings.n_steps,
            "method": settings.method,
            "internal_batch_size": settings.internal_batch_size,
            "return_convergence_delta": True,
        }
        ig = attr.IntegratedGradients(forward)
        single = explained[0] if len(explained) == 1 else explained
        try:
            return ig.attribute(single, **kwargs)
        except Exception:
            rows = len(explained[0]) if explained[0].dim() else 1
            if settings.internal_batch_size is not None or settings.n_steps == 1:
                raise
            kwargs["internal_batch_size"] = rows
            result = ig.attribute(single, **kwargs)
            logger.warning("the model refused Captum's batch; explaining %d rows per pass", rows)
            return result

    def _floating_positions(self, inputs: Any) -> list[int]:
        tensors = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        return [i for i, t in enumerate(tensors) if t.is_floating_point()]

    def explain_baselines(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        """The configured baseline, one per explained input (numbers broadcast)."""
        baseline = self.explain_settings.baseline
        if isinstance(baseline, (int, float)):
            values: tuple[Any, ...] = tuple(float(baseline) for _ in inputs)
        elif baseline == "black":
            values = tuple(self.black_baseline(t) for t in inputs)
        else:
            if len(inputs) != 1:
                raise prediction_error(
                    "a tensor baseline needs a model with one floating-point input", 501
                )
            values = (self.tensor_baseline(baseline, inputs[0]),)
        return values[0] if len(values) == 1 else values

    def tensor_baseline(self, baseline: Any, rows: torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(baseline, dtype=rows.dtype, device=rows.device)
        if tuple(tensor.shape) == tuple(rows.shape[1:]):
            tensor = tensor.unsqueeze(0)
        try:
            return tensor.expand_as(rows).contiguous()
        except RuntimeError:
            raise prediction_error(
                f"handler_config['explain']['baseline'] has shape {list(tensor.shape)}, "
                f"but one input of this request has shape {list(rows.shape[1:])}",
                501,
            ) from None

    def black_baseline(self, rows: torch.Tensor) -> torch.Tensor:
        raise prediction_error("the 'black' baseline is for image handlers", 501)

    def request_inputs(self, model_input: Any) -> list[Any]:
        """The model input of each request (its rows), in request order."""
        sizes = self.request_sizes or [1] * _batch_length(model_input)
        if isinstance(model_input, torch.Tensor):
            return list(model_input.split(sizes))
        if isinstance(model_input, (tuple, list)):
            parts = [t.split(sizes) for t in model_input]
            return [tuple(p) for p in zip(*parts, strict=True)]
        raise prediction_error("explanations need tensor model inputs", 501)

    def requested_target(self, raw: Any) -> Any:
        """Where a request names its target: TorchServe's ``target`` field, else the JSON body's."""
        if not isinstance(raw, dict):
            return None
        if raw.get("target") is not None:
            return raw["target"]
        for key in ("data", "body"):
            if isinstance(raw.get(key), dict):
                return raw[key].get("target")
        return None

    def explain_scores(self, rows: Any) -> torch.Tensor:
        """The model's output for one request as ``[rows, outputs]``: what targets index."""
        output = first_tensor(self.inference(rows)).detach().float().cpu()
        if output.dim() == 0:
            raise prediction_error("the model returns one number for the whole batch", 501)
        return self.explained_outputs(output)

    def explained_outputs(self, output: torch.Tensor) -> torch.Tensor:
        """The ``[rows, outputs]`` a ``target`` indexes: the output, flattened per row."""
        return output.reshape(output.shape[0], -1)

    def class_probabilities(self, scores: torch.Tensor) -> torch.Tensor | None:
        """Per-class probabilities for classifiers; None for other models."""
        return None

    def one_sample(self, idx: int) -> bool:
        """Whether request ``idx`` sent one sample (its answer then has no batch dimension)."""
        return not self.request_sizes or self.request_sizes[idx] == 1

    def explanation_answer(self, idx: int, insight: Any) -> Any:
        """The body of request ``idx``: TorchServe's per-row entry, unwrapped for one sample."""
        if isinstance(insight, list) and len(insight) == 1 and self.one_sample(idx):
            return insight[0]
        return insight

    def explanation_info(self, idx: int, scores: torch.Tensor, target: Any) -> dict[str, Any]:
        """The ``x-explanation`` header of request ``idx``: one value per key for one
        sample, a list (one per row) when the request sent a batch."""
        rows = scores.shape[0]
        targets = target if isinstance(target, list) else [target] * rows
        probs = self.class_probabilities(scores)
        delta = self.convergence_delta
        per_row: list[dict[str, Any]] = []
        for i, t in enumerate(targets):
            predicted = int(scores[i].argmax())
            row: dict[str, Any] = {
                "target": t,
                "prediction": predicted,
                "score": finite_float(scores[i, t]),
                "delta": None if delta is None else finite_float(delta.reshape(-1)[i]),
            }
            if probs is not None:
                k = min(5, probs.shape[1])
                top_p, top_i = probs[i].topk(k)
                row.update(
                    label=self.label(predicted),
                    probability=finite_float(probs[i, predicted]),
                    target_label=self.label(t),
                    target_probability=finite_float(probs[i, t]),
                    topk=[
                        [c, self.label(c), finite_float(p)]
                        for c, p in zip(top_i.tolist(), top_p.tolist(), strict=True)
                    ],
                )
            per_row.append(row)
        settings = self.explain_settings
        info: dict[str, Any] = {
            "method": self.explain_method,
            "n_steps": settings.n_steps,
            "baseline": settings.describe_baseline(),
        }
        if self.one_sample(idx):
            info.update(per_row[0])
        else:
            info.update({key: [row[key] for row in per_row] for key in per_row[0]})
        return info

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
            # the held-out report a deploy stored in the archive (None before one ran)
            "evaluation": self.metadata.get("evaluation"),
        }


def finite_float(value: Any) -> float | None:
    """A float for JSON, None for NaN/inf (which JSON cannot carry)."""
    number = float(value)
    return number if math.isfinite(number) else None


def _batch_length(model_input: Any) -> int:
    if isinstance(model_input, torch.Tensor):
        return len(model_input)
    return len(model_input[0])


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
    black_baseline_supported = True

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

    def black_baseline(self, rows: torch.Tensor) -> torch.Tensor:
        """An all-black image as the model sees it: zero pixels after mean/std."""
        black = torch.zeros(rows.shape[1:], dtype=torch.float32)
        if self.mean is not None:
            black = black - self.mean
        if self.std is not None:
            black = black / self.std
        return black.to(rows.device, rows.dtype).unsqueeze(0).expand_as(rows).contiguous()

    def decode_image(self, payload: Any) -> torch.Tensor:
        """One request payload -> a float ``[C, H, W]`` tensor ready for the model."""
        payload = unwrapped(
            payload,
            ("data", "b64", "image", "instances"),
            "a JSON image input needs a 'data' or 'b64' field",
        )
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
                raise InputError(
                    f"a list image must be [C, H, W] or [H, W], not {list(tensor.shape)}"
                )
            return tensor
        raise InputError(f"cannot read an image from {type(payload).__name__}")

    def open_image(self, raw: bytes) -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"the request body is not an image Pillow can read: {exc}") from exc
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
