"""Turn an in-memory ``nn.Module`` into one serialised format: torch.export, TorchScript or eager.

Each ``try_*`` function either returns a :class:`Serialized` that has been *reloaded and
checked* against the model's own output, or raises; :func:`describe_failure` turns the
exception into one line that names the code line that stopped the format, so the user sees
why ``auto`` fell through to the next format.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import re
import sys
import traceback
import types
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .capture import SourceCapture, SourceCaptureError, check_generated, is_local_module
from .devices import model_device

FORMATS = ("export", "torchscript", "eager")
SERIALIZED_FILES = {"export": "model.pt2", "torchscript": "model.pt", "eager": "weights.pt"}
MODEL_FILE = "model.py"


class FormatUnavailable(Exception):
    """A format cannot even be attempted (e.g. tracing without example inputs)."""


@dataclass
class Attempt:
    """One format tried by ``archive``: whether it worked and, if not, why (one line)."""

    format: str
    ok: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "ok": self.ok, "error": self.error}


@dataclass
class Serialized:
    """A captured model, ready for the writer."""

    format: str
    serialized_file: str
    payload: bytes | None = None  # export / torchscript bytes, already round-tripped
    state_dict: dict[str, Any] | None = None  # eager: streamed to the archive by torch.save
    model_source: str | None = None  # eager: contents of model.py
    eager: dict[str, Any] | None = None  # eager: {"module", "class", "init_kwargs"}
    notes: list[str] = field(default_factory=list)


# --- comparing outputs -------------------------------------------------------------------
def output_tensors(output: object) -> list[torch.Tensor]:
    """All tensors in an output (tensor, sequence, mapping, nested), in a stable order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for k in output for t in output_tensors(output[k])]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in output_tensors(item)]
    return []


def max_abs_diff(expected: object, actual: object) -> float:
    """Largest absolute difference; ``inf`` when structure, shape or count differ."""
    a, b = output_tensors(expected), output_tensors(actual)
    if len(a) != len(b) or not a:
        return float("inf") if len(a) != len(b) else 0.0
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            return float("inf")
        if x.numel():
            d = (x.detach().cpu().double() - y.detach().cpu().double()).abs().max().item()
            worst = max(worst, d)
    return worst


def outputs_close(expected: object, actual: object, rtol: float, atol: float) -> bool:
    """``torch.allclose`` over every output tensor (exact match for integer/bool tensors)."""
    a, b = output_tensors(expected), output_tensors(actual)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            return False
        x, y = x.detach().cpu(), y.detach().cpu()
        if x.is_floating_point() or x.is_complex():
            if not torch.allclose(x.to(y.dtype), y, rtol=rtol, atol=atol, equal_nan=True):
                return False
        elif not torch.equal(x, y.to(x.dtype)):
            return False
    return True


@dataclass(frozen=True)
class Trial:
    """What every format is tried on: the model (in eval mode), its example inputs (None when
    none were given), its own output on them, the tolerances, and the eager ``init_kwargs``.

    Why one value: each ``try_*`` needs all of it, and the proof a reloaded copy must give
    is the same for every format (:meth:`check`).
    """

    model: torch.nn.Module
    inputs: tuple[Any, ...] | None
    reference: object
    rtol: float
    atol: float
    init_kwargs: dict[str, Any] | None = None

    def check(self, fmt: str, reloaded: object) -> None:
        """Raise unless ``reloaded`` (the copy's output) matches the model's own output."""
        if self.reference is not None and not outputs_close(
            self.reference, reloaded, self.rtol, self.atol
        ):
            diff = max_abs_diff(self.reference, reloaded)
            raise RuntimeError(f"{fmt} reload changes the output (max abs diff {diff:.3g})")


# --- failure description -----------------------------------------------------------------
_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+)')
_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


def describe_failure(exc: BaseException) -> str:
    """One line: the error's first message line plus the code line that stopped it."""
    message = str(exc).strip()
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), type(exc).__name__)
    first = f"{type(exc).__name__}: {first}"[:400]
    where = None
    matches = list(_FILE_LINE.finditer(message))
    if matches:
        m = matches[-1]
        rest = message[m.end() :].splitlines()[1:3]
        code = next((ln.strip() for ln in rest if ln.strip() and "~" not in ln), "")
        where = f"{m.group(1)}:{m.group(2)}" + (f": {code}" if code else "")
    else:
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if not f.filename.startswith(_TORCH_DIR) and "jupyter_torchserve" not in f.filename
        ]
        if frames:
            f = frames[-1]
            where = f"{f.filename}:{f.lineno}" + (f": {f.line.strip()}" if f.line else "")
    return f"{first} (at {where})" if where else first


# --- torch.export --------------------------------------------------------------------------
def _batch_of_two(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Repeat batch-1 examples to batch 2: torch.export specialises a size-1 dim to 1."""
    tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
    if tensors and all(t.dim() > 0 and t.shape[0] == 1 for t in tensors):
        return tuple(torch.cat([t, t]) if isinstance(t, torch.Tensor) else t for t in inputs)
    return inputs


@contextlib.contextmanager
def _quiet_torch_logs():
    """torch.export logs whole graphs as warnings when it gives up, and prints the partial
    FX graph to stderr once per wrapper it unwinds through (twice in a cell); the attempt's
    one-line reason is what the user needs. So torch's loggers are silenced while we try,
    and what it writes to stderr is kept back: given back when the attempt succeeds (a real
    warning stays visible), dropped with the failure it explained."""
    loggers = [logging.getLogger("torch")] + [
        logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("torch")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
        sys.stderr.write(held.getvalue())
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def try_export(trial: Trial) -> Serialized:
    """``torch.export`` with a dynamic batch dimension, saved and reloaded to prove it works.

    The program is saved on the CPU whatever device the model is on, so that the archive
    loads on a machine without that device; each worker moves it to its own
    (``jts_model_loader.load_exported``), and so does the reload check here.
    """
    from ..handlers.builtins import load_exported, move_exported

    model, inputs = trial.model, trial.inputs
    if inputs is None:
        raise FormatUnavailable("torch.export needs example_inputs")
    export_inputs = _batch_of_two(inputs)
    dynamic = tuple(
        {0: torch.export.Dim.AUTO} if isinstance(t, torch.Tensor) and t.dim() > 0 else None
        for t in export_inputs
    )
    with _quiet_torch_logs():
        program = torch.export.export(model, export_inputs, dynamic_shapes=dynamic)
    device = model_device(model)
    if device.type != "cpu":
        program = move_exported(program, "cpu")
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    payload = buffer.getvalue()
    reloaded = load_exported(io.BytesIO(payload), device)
    with torch.no_grad():
        trial.check("torch.export", reloaded(*inputs))
    return Serialized("export", SERIALIZED_FILES["export"], payload=payload)


# --- TorchScript ---------------------------------------------------------------------------
def try_torchscript(trial: Trial) -> Serialized:
    """``torch.jit.script``, else ``torch.jit.trace`` on the examples; saved and reloaded."""
    notes: list[str] = []
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch >= 2.10 but still what TorchServe 0.12 loads.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _torchscript(trial, notes)


def _torchscript(trial: Trial, notes: list[str]) -> Serialized:
    model, inputs = trial.model, trial.inputs
    try:
        scripted = torch.jit.script(model)
        how = "script"
    except Exception as exc:  # noqa: BLE001 - any scripting failure falls back to tracing
        script_error = describe_failure(exc)
        if inputs is None:
            raise FormatUnavailable(
                f"script failed: {script_error}; trace needs example_inputs"
            ) from exc
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                scripted = torch.jit.trace(model, inputs, check_trace=False)
        except Exception as trace_exc:
            raise RuntimeError(
                f"script failed: {script_error}; trace failed: {describe_failure(trace_exc)}"
            ) from trace_exc
        how = "trace"
        notes.append(f"script failed: {script_error}")
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    payload = buffer.getvalue()
    reloaded = torch.jit.load(io.BytesIO(payload), map_location=model_device(model))
    if inputs is not None:
        with torch.no_grad():
            trial.check(f"TorchScript ({how})", reloaded(*inputs))
    notes.insert(0, f"torchscript via {how}")
    return Serialized("torchscript", SERIALIZED_FILES["torchscript"], payload=payload, notes=notes)


# --- eager: state_dict + captured source ------------------------------------------------
def recover_init_kwargs(
    model: torch.nn.Module, init_kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    """Constructor arguments for rebuilding the model's class in a worker.

    Given ``init_kwargs`` win; otherwise a parameter is taken from a same-named instance
    attribute (``self.hidden = hidden``) when its value is JSON-able; parameters with defaults
    are left out. A required parameter we cannot recover is an error that names it.
    """
    cls = type(model)
    given = dict(init_kwargs or {})
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return given
    unknown = [
        k
        for k in given
        if k not in signature.parameters
        and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    ]
    if unknown:
        raise ValueError(f"init_kwargs {unknown} are not arguments of {cls.__name__}.__init__")
    kwargs: dict[str, Any] = {}
    for pname, param in list(signature.parameters.items())[1:]:
        if param.kind is param.VAR_POSITIONAL and _holds_children(model):
            # nn.Sequential(*layers) and the like: the children ARE the arguments
            raise ValueError(
                f"eager: {cls.__qualname__} takes its submodules as positional arguments "
                f"(*{pname}), which cannot be written as init_kwargs; use format='export' or "
                f"'torchscript', or wrap it in a class of your own whose __init__ builds it"
            )
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if pname in given:
            kwargs[pname] = given.pop(pname)
            continue
        value = getattr(model, pname, inspect.Parameter.empty)
        if value is not inspect.Parameter.empty and _json_able(value):
            kwargs[pname] = value
        elif param.default is inspect.Parameter.empty:
            raise ValueError(
                f"eager: cannot tell the value of constructor argument {pname!r} of "
                f"{cls.__name__}; pass init_kwargs={{{pname!r}: ...}} or store it as "
                f"self.{pname} in __init__"
            )
    kwargs.update(given)  # **kwargs arguments
    bad = [k for k, v in kwargs.items() if not _json_able(v)]
    if bad:
        raise ValueError(f"eager: init_kwargs {bad} of {cls.__name__} must be JSON-able values")
    return kwargs


def _holds_children(model: torch.nn.Module) -> bool:
    return next(model.children(), None) is not None


def _json_able(value: object) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def capture_model_source(model: torch.nn.Module) -> str:
    """``model.py`` text: the model class and every notebook class/function/constant it needs."""
    cls = type(model)
    capture = SourceCapture()
    roots = [cls] + [
        type(m)
        for m in model.modules()
        if is_local_module(type(m).__module__) and type(m) is not cls
    ]
    for root in dict.fromkeys(roots):
        capture._resolve(root.__name__, {root.__name__: root}, owner=f"model {cls.__name__}")
    module = capture.render(
        f"Model code for {cls.__name__}, captured from the notebook by jupyter_torchserve."
    )
    check_generated(module.source, MODEL_FILE)
    return module.source


def _import_source(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"<{name}>"
    sys.modules[name] = module  # dataclasses and typing look the module up while executing
    try:
        exec(compile(source, MODEL_FILE, "exec"), module.__dict__)  # noqa: S102 - our own text
    finally:
        sys.modules.pop(name, None)
    return module


def _check_state_dict_fits(rebuilt: torch.nn.Module, state: dict[str, Any], name: str) -> None:
    """Same keys and shapes as the model rebuilt from the captured source (cheap, on meta)."""
    fresh = rebuilt.state_dict()
    missing, unexpected = sorted(set(fresh) - set(state)), sorted(set(state) - set(fresh))
    if missing or unexpected:
        raise RuntimeError(
            f"{name} rebuilt from the captured source with these init_kwargs has other "
            f"weights: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, tensor in state.items():
        other = fresh[key]
        if isinstance(tensor, torch.Tensor) and isinstance(other, torch.Tensor):
            if tensor.shape != other.shape:
                raise RuntimeError(
                    f"{name} rebuilt from the captured source has {key} of shape "
                    f"{tuple(other.shape)}, the model {tuple(tensor.shape)}: check init_kwargs"
                )


def try_eager(trial: Trial) -> Serialized:
    """State dict + captured source, checked by rebuilding the class from that source.

    The rebuild happens on the ``meta`` device (no memory, no init compute) and takes the
    live tensors with ``assign=True``, so checking a large model costs almost nothing.
    """
    model, inputs = trial.model, trial.inputs
    cls = type(model)
    kwargs = recover_init_kwargs(model, trial.init_kwargs)
    try:
        source = capture_model_source(model)
    except SourceCaptureError as exc:
        raise RuntimeError(f"source capture failed: {exc}") from exc
    state = model.state_dict()
    check_module = _import_source(source, f"_jts_check_{uuid.uuid4().hex}")
    rebuilt_cls = getattr(check_module, cls.__name__)
    try:
        with torch.device("meta"):
            rebuilt = rebuilt_cls(**kwargs)
    except Exception:  # noqa: BLE001 - some __init__ code cannot run on meta; use the CPU
        rebuilt = rebuilt_cls(**kwargs)
    _check_state_dict_fits(rebuilt, state, cls.__name__)
    if inputs is not None:
        rebuilt.load_state_dict(state, strict=True, assign=True)
    on_meta = any(t.is_meta for t in [*rebuilt.parameters(), *rebuilt.buffers()])
    if inputs is not None and not on_meta:
        rebuilt.eval()
        with torch.no_grad():
            trial.check("eager rebuild", rebuilt(*inputs))
    return Serialized(
        "eager",
        SERIALIZED_FILES["eager"],
        state_dict=state,
        model_source=source,
        eager={"module": "model", "class": cls.__name__, "init_kwargs": kwargs},
    )


#: The torch-side formats' attempts by name, in ``FORMATS`` order (ONNX lives in
#: ``onnx_format``, imported only when asked for).
TRIES: dict[str, Callable[[Trial], Serialized]] = {
    "export": try_export,
    "torchscript": try_torchscript,
    "eager": try_eager,
}
