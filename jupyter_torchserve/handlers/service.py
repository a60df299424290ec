"""The handler runtime: load an unpacked archive's handler and run batches through it.

This is the one place where TorchServe's worker semantics live for us (docs/architecture.md
§2): the worker process and the archive pre-flight both call :func:`load_service` and
:meth:`Service.predict`, so a model that passes pre-flight behaves the same when served.
Entry-point resolution follows TorchServe 0.12's model loader, so existing archives pick
the same function or class they pick there.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .compat import ensure_ts_importable
from .context import TS_COMPAT_VERSION, Context, RequestProcessor
from .names import BUILTIN_HANDLERS, DEFAULT_HANDLER
from .oom import is_cuda_oom, oom_message
from .requirements import RequirementsInstallError, install_requirements
from .resolve import builtin_dir, local_module_names, locate_handler, split_handler

__all__ = [
    "BUILTIN_HANDLERS",
    "HandlerError",
    "HandlerLoadError",
    "RequestInput",
    "RequirementsInstallError",
    "ResponseOutput",
    "Service",
    "builtin_dir",
    "builtin_handler_path",
    "install_requirements",
    "load_service",
]

logger = logging.getLogger(__name__)

#: Modules of the built-in directory that every built-in handler may import.
_SHARED_BUILTIN_MODULES = ("jts_base", "jts_model_loader")
#: Compact JSON above this size is not pretty-printed (readable at a curl prompt, lean on the wire).
_PRETTY_JSON_LIMIT = 64 * 1024


@dataclass
class RequestInput:
    """One inference request as the worker receives it."""

    request_id: str
    headers: dict[str, str]  # lower-case names
    params: list[tuple[str, str, bytes]]  # (name, content_type, raw bytes); raw body is "body"


@dataclass
class ResponseOutput:
    """One serialised response, ready to go back to the engine."""

    body: bytes
    content_type: str = "application/json"
    status: int = 200
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=dict)


class HandlerError(Exception):
    """The handler failed (or returned something unusable); the batch gets an error answer.

    ``status`` is the HTTP code TorchServe would answer with (503 "Prediction failed" by
    default, 507 on out-of-memory, or a handler's own ``PredictionException`` code).
    """

    def __init__(
        self, message: str, traceback_text: str = "", status: int = 503, cuda_oom: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.traceback_text = traceback_text
        self.status = status
        self.cuda_oom = cuda_oom  # the GPU ran out of memory (handlers/oom.py)

    def __str__(self) -> str:
        return self.message


class HandlerLoadError(HandlerError):
    """The handler could not be found, imported or initialised."""


def builtin_handler_path(name: str) -> str:
    """Path of the built-in handler ``name`` (``image_classifier`` or ``jts_image_classifier``)."""
    short = name[4:] if name.startswith("jts_") else name
    if short not in BUILTIN_HANDLERS:
        raise ValueError(f"unknown built-in handler {name!r}; known: {', '.join(BUILTIN_HANDLERS)}")
    return os.path.join(builtin_dir(), f"{short}.py")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _read_manifest(model_dir: str) -> dict[str, Any] | None:
    path = os.path.join(model_dir, "MAR-INF", "MANIFEST.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _put_first_on_path(path: str, index: int = 0) -> None:
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(index, path)


def _forget_modules(names: set[str]) -> None:
    """Drop cached modules so that this archive's files are imported, not an earlier one's.

    A worker serves one model, but the pre-flight and the tests load several archives in one
    process, and many archives share module names (``model``, ``handler``, ``jts_base``).
    """
    for cached in list(sys.modules):
        if cached.split(".", 1)[0] in names:
            del sys.modules[cached]
    importlib.invalidate_caches()


def _load_module_from_path(module_name: str, path: str) -> ModuleType:
    """Import ``path`` as ``module_name``, leaving no half module behind when it raises.

    jts_model_loader does the same for the files of an archive, but it ships inside the
    archive and imports torch at the top: a worker serving an ONNX archive must never map
    torch, so the worker's own loader cannot borrow it."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _import_handler_module(model_dir: str, module_name: str) -> ModuleType:
    """Import the handler from where `resolve.locate_handler` says it is."""
    source = locate_handler(model_dir, module_name)
    if source.where == "archive":
        if module_name.startswith("jts_"):
            _put_first_on_path(builtin_dir(), len(sys.path))  # for a missing jts_model_loader
        return importlib.import_module(module_name)
    if source.where == "builtin" and source.builtin:
        # also the archives of ours whose handler file went missing
        bdir = builtin_dir()
        if bdir not in sys.path:
            sys.path.append(bdir)
        return _load_module_from_path(f"jts_{source.builtin}", builtin_handler_path(source.builtin))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise HandlerLoadError(
            f"handler {module_name!r} is neither a file of the archive nor a built-in handler "
            f"({', '.join(BUILTIN_HANDLERS)})"
        ) from exc


def _classes_defined_in(module: ModuleType) -> list[type]:
    return [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if member.__module__ == module.__name__
    ]


@dataclass
class _EntryPoint:
    handle: Callable[[Any, Context], Any]
    initialize: Callable[[Context], Any]
    instance: Any = None
    description: str = ""


def _resolve_entry_point(module: ModuleType, function_name: str | None) -> _EntryPoint:
    """TorchServe 0.12's rule: a named function, else ``handle``, else the one class."""
    name = function_name or "handle"
    if hasattr(module, name):
        function = getattr(module, name)
        if not callable(function):
            raise HandlerLoadError(f"{module.__name__}.{name} is not callable")
        return _EntryPoint(
            handle=function,
            initialize=lambda ctx: function(None, ctx),
            description=f"{module.__name__}:{name}",
        )
    if function_name is not None:
        raise HandlerLoadError(f"handler module {module.__name__!r} has no function {name!r}")
    classes = _classes_defined_in(module)
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise HandlerLoadError(
            f"handler module {module.__name__!r} must define exactly one class or a "
            f"`handle(data, context)` function; it defines {len(classes)} classes ({names}). "
            f"Name the entry point explicitly as `{module.__name__}:<function>` or move the "
            f"other classes to another file."
        )
    instance = classes[0]()
    if not callable(getattr(instance, "handle", None)):
        raise HandlerLoadError(f"handler class {classes[0].__name__} has no handle method")
    initialize = getattr(instance, "initialize", None) or (lambda ctx: None)
    return _EntryPoint(
        handle=instance.handle,
        initialize=initialize,
        instance=instance,
        description=f"{module.__name__}.{classes[0].__name__}",
    )


def load_service(
    model_dir: str,
    *,
    model_name: str | None = None,
    handler: str | None = None,
    gpu_id: int | None = None,
    batch_size: int = 1,
    limit_max_image_pixels: bool = True,
    requirements_dir: str | None = None,
) -> Service:
    """Load the handler of the unpacked archive in ``model_dir`` and initialise it once.

    ``handler`` overrides the manifest's (like register's ``handler=`` parameter);
    ``requirements_dir`` is a directory filled by :func:`install_requirements`, put on
    ``sys.path`` right after the archive. Raises :class:`HandlerLoadError` on any failure.
    """
    model_dir = os.path.abspath(model_dir)
    if not os.path.isdir(model_dir):
        raise HandlerLoadError(f"model directory {model_dir!r} does not exist")
    ensure_ts_importable()
    try:
        manifest = _read_manifest(model_dir)
    except (OSError, ValueError) as exc:
        raise HandlerLoadError(f"MAR-INF/MANIFEST.json cannot be read: {exc}") from exc
    model_info = (manifest or {}).get("model") or {}
    name = model_name or model_info.get("modelName") or os.path.basename(model_dir)
    handler_spec = handler or model_info.get("handler") or DEFAULT_HANDLER

    if requirements_dir:
        _put_first_on_path(os.path.abspath(requirements_dir))
    _put_first_on_path(model_dir)
    _forget_modules(local_module_names(model_dir) | set(_SHARED_BUILTIN_MODULES))

    context = Context(
        name,
        model_dir,
        manifest,
        batch_size,
        gpu_id,
        TS_COMPAT_VERSION,
        limit_max_image_pixels,
    )
    module_name, function_name = split_handler(handler_spec)
    try:
        module = _import_handler_module(model_dir, module_name)
        entry = _resolve_entry_point(module, function_name)
        started = time.perf_counter()
        entry.initialize(context)
        logger.info(
            "model %s: handler %s initialised in %.0f ms",
            name,
            entry.description,
            (time.perf_counter() - started) * 1000,
        )
    except HandlerLoadError:
        raise
    except Exception as exc:
        raise HandlerLoadError(
            f"loading handler {handler_spec!r} failed: {type(exc).__name__}: {exc}",
            traceback.format_exc(),
        ) from exc
    return Service(context, entry, handler_spec)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def _decode_param(content_type: str, raw: bytes) -> Any:
    """TorchServe's decoding: JSON parsed, ``text/*`` as str, anything else bytes."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype == "application/json":
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            logger.warning("a JSON parameter could not be decoded; passing its bytes on")
            return raw
    if ctype.startswith("text"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    return raw


def _jsonable(value: Any) -> Any:
    """``json.dumps`` fallback for tensors, numpy arrays and numpy scalars."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__.split(".")[0] in ("torch", "numpy"):
        detach = getattr(value, "detach", None)
        if callable(detach):
            value = detach().cpu()
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _to_body(value: Any) -> tuple[bytes, str]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode("utf-8"), "text/plain; charset=utf-8"
    text = json.dumps(value, default=_jsonable, separators=(",", ":"))
    if len(text) <= _PRETTY_JSON_LIMIT:
        text = json.dumps(value, default=_jsonable, indent=2)  # TorchServe's layout
    return text.encode("utf-8"), "application/json"


class Service:
    """A loaded handler plus its TorchServe-compatible context."""

    def __init__(self, context: Context, entry: _EntryPoint, handler: str) -> None:
        self.context = context
        self.handler = handler
        self._entry = entry
        self._stream_callback: Callable[[list[ResponseOutput]], None] | None = None
        #: The places in the batch the running ``handle`` call answers (None: every one); a
        #: request retried alone streams to its own place (the worker names it per chunk).
        self.batch_rows: list[int] | None = None
        self._streamed = False

    @property
    def handler_instance(self) -> Any:
        """The handler object for class handlers (None for function handlers)."""
        return self._entry.instance

    def set_stream_callback(self, callback: Callable[[list[ResponseOutput]], None] | None) -> None:
        """Receive streamed intermediate responses (already serialised) while a batch runs.

        Each call of ``send_intermediate_predict_response`` in the handler becomes one call of
        ``callback`` with one :class:`ResponseOutput` per request; their ``headers`` carry
        ``ts_stream_next: true`` like TorchServe's. The worker sends each one as a chunk.
        """
        self._stream_callback = callback
        if callback is None:
            self.context._send_intermediate = None
            return

        def send(outputs: list[Any], request_ids: dict[int, str], message: str, code: int) -> None:
            if not isinstance(outputs, list) or len(outputs) != len(request_ids):
                raise HandlerError(
                    f"an intermediate response must be a list of {len(request_ids)} outputs"
                )
            for idx in range(len(outputs)):
                self.context.set_response_header(idx, "ts_stream_next", "true")
            self._streamed = True
            callback(self._serialize(outputs))

        self.context._send_intermediate = send

    def _begin_batch(self, batch: list[RequestInput]) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = []
        processors: list[RequestProcessor] = []
        request_ids: dict[int, str] = {}
        for idx, request in enumerate(batch):
            row: dict[str, Any] = {}
            headers: dict[str, Any] = {}
            for name, content_type, raw in request.params:
                row[name] = _decode_param(content_type, raw)
                headers[name] = {"content-type": content_type}
            headers.update({k.lower(): v for k, v in request.headers.items()})
            data.append(row)
            processors.append(RequestProcessor(headers))
            request_ids[idx] = request.request_id
        self.context.request_ids = request_ids
        self.context.request_processor = processors
        metrics = self.context.metrics
        if metrics is not None and hasattr(metrics, "request_ids"):
            metrics.request_ids = request_ids
        return data

    def _serialize(self, outputs: list[Any]) -> list[ResponseOutput]:
        responses = []
        for idx, value in enumerate(outputs):
            try:
                body, default_type = _to_body(value)
            except (TypeError, ValueError) as exc:
                raise HandlerError(
                    f"Unsupported model output data type: {exc}", traceback.format_exc()
                ) from exc
            headers = dict(self.context.get_response_headers(idx))
            content_type = default_type
            for key in list(headers):
                if key.lower() == "content-type":
                    content_type = headers.pop(key) or default_type
            status, phrase = self.context.get_response_status(idx)
            status = int(status) if status is not None else 200
            reason = phrase or _reason(status)
            responses.append(ResponseOutput(body, content_type, status, reason, headers))
        return responses

    def predict_each(self, batch: list[RequestInput]) -> list[ResponseOutput | HandlerError]:
        """Run one batch and answer each request with its output or its own error.

        A batch the handler fails is run again one request at a time, so one unreadable or
        misshapen request fails alone with its own message, and the requests that happened
        to be batched with it are answered. TorchServe fails every request of such a batch
        with the first one's error. Not retried: a lone request, out of memory (the engine
        judges the worker by it, and the batch is what did not fit), and a batch that has
        streamed already (its chunks are out and cannot be taken back).
        """
        self._streamed = False
        try:
            return list(self.predict(batch))
        except HandlerError as failed:
            if len(batch) == 1 or failed.status == 507 or self._streamed:
                return [failed] * len(batch)
        logger.info("a batch of %d failed: each request is run alone", len(batch))
        answers: list[ResponseOutput | HandlerError] = []
        try:
            for idx, request in enumerate(batch):
                self.batch_rows = [idx]
                try:
                    answers.extend(self.predict([request]))
                except HandlerError as alone:
                    answers.append(alone)
        finally:
            self.batch_rows = None
        return answers

    def predict(self, batch: list[RequestInput]) -> list[ResponseOutput]:
        """Run one batch through the handler; raises :class:`HandlerError` on any failure."""
        if not batch:
            return []
        data = self._begin_batch(batch)
        started = time.perf_counter()
        try:
            outputs = self._entry.handle(data, self.context)
        except HandlerError:
            raise
        except MemoryError as exc:
            raise HandlerError("Out of resources", traceback.format_exc(), 507) from exc
        except Exception as exc:
            if is_cuda_oom(exc):  # TorchServe's 507 "Out of resources", saying what ran out
                ctx = self.context
                gpu_id = ctx.system_properties.get("gpu_id")
                message = oom_message(exc, ctx.model_name, gpu_id, len(batch))
                raise HandlerError(message, traceback.format_exc(), 507, cuda_oom=True) from exc
            status = 503
            code = getattr(exc, "error_code", None)  # ts.utils.util.PredictionException
            if type(exc).__name__ == "PredictionException" and isinstance(code, int):
                status = code
            raise HandlerError(
                f"{type(exc).__name__}: {exc}", traceback.format_exc(), status
            ) from exc
        if not isinstance(outputs, list):
            raise HandlerError(
                f"Invalid model predict output: the handler returned {type(outputs).__name__}, "
                f"not a list with one output per request"
            )
        if len(outputs) != len(batch):
            raise HandlerError(
                f"number of batch response mismatched: the batch has {len(batch)} requests "
                f"but the handler returned {len(outputs)} outputs"
            )
        metrics = self.context.metrics
        if metrics is not None and hasattr(metrics, "add_time"):
            metrics.add_time("PredictionTime", round((time.perf_counter() - started) * 1000, 2))
        for idx in range(len(outputs)):
            if self.context.get_response_headers(idx).get("ts_stream_next") == "true":
                self.context.set_response_header(idx, "ts_stream_next", "false")
        return self._serialize(outputs)

    def describe(self) -> object:
        """The handler's ``describe_handle()`` (custom metadata), or None when it has none."""
        instance = self._entry.instance
        describe = getattr(instance, "describe_handle", None)
        if not callable(describe):
            return None
        if getattr(instance, "context", None) is None:
            try:
                instance.context = self.context
            except AttributeError:
                pass
        try:
            return describe()
        except Exception as exc:
            raise HandlerError(f"{type(exc).__name__}: {exc}", traceback.format_exc()) from exc


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
