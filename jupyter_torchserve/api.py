"""The Python face of the notebook workflow: ``deploy`` and the verbs the magics call.

Why a separate layer from the magics: scripts, the README demo and tests need the same
one-call deploy without IPython, and the magics stay a thin parser over these functions.
Nothing here imports IPython at module level.

``deploy`` does, in order: find or start the engine; refuse a name/version that is already
served unless ``replace=True``; archive the model (the archiver's pre-flight proves the
archive loads in a clean process); move it into the engine's model store; register it
synchronously (workers are up when that returns); then send the example through the served
endpoint and compare with the in-kernel model (the *parity check*). The result,
:class:`Deployment`, carries the endpoints and ready-to-run snippets for all protocols.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import display
from .widgets import Progress

#: Largest max-abs difference between served and in-kernel outputs that still passes.
DEFAULT_TOLERANCE = 1e-3
#: Handlers whose answer is the model output itself (a JSON nested list).
TENSOR_HANDLERS = (None, "tensor")
IMAGE_HANDLERS = ("image_classifier", "image_segmenter", "object_detector")


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
class TorchServeError(Exception):
    """An error meant for a person: IPython shows only its message, no internal traceback.

    ``_render_traceback_`` is IPython's hook for exceptions that know how to show
    themselves; the worker's own traceback (in the message) is what the user needs.
    """

    def _render_traceback_(self) -> list[str]:
        red, reset = "\x1b[31m", "\x1b[0m"
        lines = str(self).splitlines() or [type(self).__name__]
        return [f"{red}{type(self).__name__}{reset}: {lines[0]}", *lines[1:]]


class ModelExistsError(TorchServeError):
    """The name/version is already served and ``replace`` was not asked for."""


class ParityError(TorchServeError):
    """The served model answers differently from the in-kernel one."""

    def __init__(self, message: str, deployment: Deployment) -> None:
        super().__init__(message)
        self.deployment = deployment


class EngineUnavailable(TorchServeError):
    """No engine is running (or it cannot be reached); the message says how to start one."""


HOW_TO_START = (
    "Start one with `%torchserve start` in a notebook, `jupyter-torchserve start` in a "
    "terminal, or `jupyter_torchserve.api.start()` — `%torchserve deploy` starts one too."
)


def friendly(exc: BaseException) -> TorchServeError:
    """Turn a client/engine/archive exception into a message a notebook user can act on."""
    from .client import EngineError, EngineNotRunning

    if isinstance(exc, TorchServeError):
        return exc
    if isinstance(exc, EngineNotRunning):
        return EngineUnavailable(f"{exc.message}\n{HOW_TO_START}")
    if isinstance(exc, EngineError):
        err = TorchServeError(f"{exc.status} {exc.type}: {exc.message}")
        err.status = exc.status  # type: ignore[attr-defined]
        return err
    return TorchServeError(f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------
# engine access
# ------------------------------------------------------------------------------------------
def find() -> dict[str, Any] | None:
    """Discovery info of the newest running engine, or None (never starts one)."""
    from . import discovery

    return discovery.find_engine()


def client(info: dict[str, Any] | None = None) -> Any:
    """A :class:`~jupyter_torchserve.client.Client` of the running engine.

    Raises :class:`EngineUnavailable` (saying how to start one) when none runs.
    """
    from .client import Client

    info = info or find()
    if info is None:
        raise EngineUnavailable("No jupyter_torchserve engine is running.\n" + HOW_TO_START)
    return Client.from_info(info)


def start(**config: Any) -> tuple[dict[str, Any], bool]:
    """Find a running engine or start one; returns ``(info, started_now)``.

    ``config`` holds EngineConfig values (``inference_address``, ``model_store``, ...).
    """
    from . import launcher

    before = {int(i["pid"]) for i in _engines()}
    info = launcher.ensure_engine(**config)
    return info, int(info["pid"]) not in before


def _engines() -> list[dict[str, Any]]:
    from . import discovery

    return discovery.find_engines()


def stop(info: dict[str, Any] | None = None) -> bool:
    """Stop the engine (the newest by default); False when none was running."""
    from . import launcher

    return launcher.stop_engine(info)


def status(info: dict[str, Any] | None = None) -> display.EngineStatus:
    """The engine, its GPUs and its models (``info=None`` when none is running)."""
    info = info or find()
    if info is None:
        return display.EngineStatus(None)
    c = client(info)
    try:
        engine = c.engine_status() or {}
    except Exception:  # a TorchServe without our /engine route
        engine = {}
    return display.EngineStatus(info, engine, list_models(c))


def list_models(c: Any = None) -> display.ModelList:
    """Every model with each of its versions, workers and default flag."""
    c = c or client()
    try:
        models = c.models
        descriptions = {}
        for m in models:
            try:
                descriptions[m["modelName"]] = c.describe(m["modelName"], "all")
            except Exception:
                descriptions[m["modelName"]] = c.describe(m["modelName"])
    except Exception as exc:
        raise friendly(exc) from None
    return display.ModelList(models, descriptions)


def describe(
    name: str, version: str | None = None, customized: bool = False, c: Any = None
) -> display.ModelDescription:
    """Settings and workers of one model (``version='all'`` for every version)."""
    c = c or client()
    try:
        return display.ModelDescription(name, c.describe(name, version, customized=customized))
    except Exception as exc:
        raise friendly(exc) from None


def scale(
    name: str,
    min_worker: int,
    max_worker: int | None = None,
    version: str | None = None,
    synchronous: bool = True,
    c: Any = None,
) -> display.Message:
    """Set the worker count; synchronous by default so the next cell sees the new workers."""
    c = c or client()
    try:
        out = c.scale(name, min_worker, max_worker, version=version, synchronous=synchronous)
    except Exception as exc:
        raise friendly(exc) from None
    return display.Message(_status_text(out), out)


def set_default(name: str, version: str, c: Any = None) -> display.Message:
    """Make ``version`` the one ``/predictions/{name}`` and KServe routes answer with."""
    c = c or client()
    try:
        out = c.set_default(name, version)
    except Exception as exc:
        raise friendly(exc) from None
    return display.Message(_status_text(out), out)


def unregister(name: str, version: str | None = None, c: Any = None) -> display.Message:
    """Remove a model version (the default one when ``version`` is None)."""
    c = c or client()
    try:
        out = c.unregister(name, version)
    except Exception as exc:
        raise friendly(exc) from None
    return display.Message(_status_text(out), out)


def predict(
    name: str,
    data: Any,
    version: str | None = None,
    content_type: str | None = None,
    explain: bool = False,
    c: Any = None,
) -> Any:
    """Send one request; returns the decoded answer (JSON, text, or bytes).

    A handler exception comes back as :class:`TorchServeError` whose message holds the
    worker's traceback, so it shows in the cell instead of hiding in a log file.
    """
    c = c or client()
    try:
        resp = c.predict(name, data, version=version, content_type=content_type, explain=explain)
    except Exception as exc:
        raise friendly(exc) from None
    return decode_response(resp)


def logs(name: str, tail: int = 200, c: Any = None) -> display.Logs:
    """The tail of a model's worker log."""
    c = c or client()
    try:
        return display.Logs(name, c.logs(name, tail=tail))
    except Exception as exc:
        raise friendly(exc) from None


def metrics(names: list[str] | None = None, model: str | None = None, c: Any = None) -> Any:
    """Prometheus metrics as a table (``.text`` keeps the raw page)."""
    c = c or client()
    try:
        return display.Metrics(c.metrics(names), model=model)
    except Exception as exc:
        raise friendly(exc) from None


def decode_response(resp: Any) -> Any:
    """JSON when the engine says JSON, text for text/*, raw bytes otherwise."""
    ctype = (resp.content_type or "").split(";")[0].strip()
    if ctype.endswith("json"):
        try:
            return resp.json()
        except ValueError:
            return resp.text
    if ctype.startswith("text/"):
        return resp.text
    return resp.body


def _status_text(out: Any) -> str:
    if isinstance(out, dict) and "status" in out:
        return str(out["status"])
    return json.dumps(out)


def versions_of(c: Any, name: str) -> list[dict[str, Any]]:
    """Descriptions of every registered version of ``name`` ([] when it is not registered)."""
    from .client import EngineError

    try:
        return list(c.describe(name, "all"))
    except EngineError as exc:
        if exc.status == 404:
            return []
        raise


# ------------------------------------------------------------------------------------------
# the result of deploy
# ------------------------------------------------------------------------------------------
@dataclass
class Parity:
    """Outcome of sending the example through the served endpoint.

    ``ok`` is None when the check was skipped (no example, or an answer that cannot be
    compared with the model output); ``detail`` says why.
    """

    ok: bool | None
    max_abs_diff: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    detail: str = ""
    served: Any = None
    expected: Any = None

    def __str__(self) -> str:
        if self.ok is None:
            return f"skipped ({self.detail})"
        verdict = "ok" if self.ok else "FAILED"
        extra = f"; {self.detail}" if self.detail else ""
        return (
            f"{verdict}: max |served − in-kernel| = {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:g}){extra}"
        )


@dataclass
class Deployment:
    """A served model version: where to call it, how it was built, and whether it matches."""

    name: str
    version: str
    handler: str | None
    info: dict[str, Any]
    archive_path: str
    archive_format: str | None = None
    workers: int = 1
    batch_size: int = 1
    max_batch_delay: int = 100
    is_default: bool = True
    preflight_max_abs_diff: float | None = None
    parity: Parity | None = None
    payloads: dict[str, str] = field(default_factory=dict)  # kind -> file in the model store
    timings: dict[str, float] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    replaced: bool = False

    # -- addresses --------------------------------------------------------------------------
    @property
    def inference_address(self) -> str:
        return self.info["inference_address"].rstrip("/")

    @property
    def management_address(self) -> str:
        return self.info["management_address"].rstrip("/")

    @property
    def metrics_address(self) -> str:
        return self.info["metrics_address"].rstrip("/")

    @property
    def token(self) -> str | None:
        """The management token (None when token auth is off)."""
        key_file = self.info.get("key_file")
        if not key_file:
            return None
        try:
            return json.loads(Path(key_file).read_text())["management"]["key"]
        except (OSError, ValueError, KeyError):
            return None

    @property
    def endpoints(self) -> dict[str, str]:
        base, name = self.inference_address, self.name
        path = name if self.is_default else f"{name}/{self.version}"
        v2 = f"{base}/v2/models/{name}" + ("" if self.is_default else f"/versions/{self.version}")
        return {
            "predictions": f"{base}/predictions/{path}",
            "explanations": f"{base}/explanations/{path}",
            "kserve_v1": f"{base}/v1/models/{name}:predict",
            "kserve_v2": f"{v2}/infer",
            "kserve_v2_metadata": v2,
            "management": f"{self.management_address}/models/{name}/{self.version}",
            "metrics": f"{self.metrics_address}/metrics",
        }

    @property
    def snippets(self) -> dict[str, str]:
        """Ready-to-run commands: curl on each protocol, Python requests, management."""
        return display.deployment_snippets(self)

    def client(self) -> Any:
        from .client import Client

        return Client.from_info(self.info)

    def predict(self, data: Any, content_type: str | None = None) -> Any:
        """Call this version through /predictions (decoded answer)."""
        version = None if self.is_default else self.version
        return predict(self.name, data, version=version, content_type=content_type)

    def _repr_html_(self) -> str:
        return display.deployment_html(self)

    def __repr__(self) -> str:
        return display.deployment_text(self)


# ------------------------------------------------------------------------------------------
# deploy
# ------------------------------------------------------------------------------------------
def deploy(
    model: Any,
    name: str,
    version: str | None = None,
    handler: Any = None,
    workers: int = 1,
    batch_size: int = 1,
    max_batch_delay: int = 100,
    example: Any = None,
    format: str = "auto",
    device: str = "auto",
    replace: bool = False,
    *,
    extra_files: dict[str, Any] | None = None,
    handler_config: dict[str, Any] | None = None,
    requirements: list[str] | None = None,
    archive_format: str = "default",
    response_timeout: float | None = None,
    parity: bool | str = True,
    tolerance: float = DEFAULT_TOLERANCE,
    engine: dict[str, Any] | None = None,
    progress: str | None = None,
) -> Deployment:
    """Archive ``model``, serve it as ``name`` and prove the served answers match.

    ``example`` is one input: a tensor (the model's input, batch dimension included) or, for
    image handlers, image bytes / a path to an image. ``device`` is 'auto', 'gpu' or 'cpu'.
    ``parity`` is True (raise :class:`ParityError` on a mismatch), 'warn', or False (skip).
    ``engine`` holds EngineConfig values used when an engine has to be started. ``progress``
    is 'widget', 'text' or 'none' (default: widget in a kernel, text elsewhere).

    A name/version that is already registered raises :class:`ModelExistsError` unless
    ``replace=True`` (the old version is unregistered only once the new archive is ready).
    """
    handler_name = handler if isinstance(handler, str) or handler is None else None
    device = _resolve_device(device)
    steps = ["engine", "archive + pre-flight", "register + start workers"]
    if parity and example is not None:
        steps.append("parity check")
    prog = Progress(f"Deploying {name}", steps, mode=progress)
    prog.start()
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    try:
        t = time.monotonic()
        with prog.step("engine") as s:
            info, started = start(**(engine or {}))
            s["note"] = f"{'started' if started else 'reusing'} pid {info['pid']}"
        timings["engine"] = time.monotonic() - t
        c = client(info)
        existing = versions_of(c, name)
        version, old = _choose_version(name, version, existing, replace)

        t = time.monotonic()
        example_tensor, request_example = _split_example(example, handler, handler_config)
        with prog.step("archive + pre-flight") as s:
            result, store_name = _archive_into_store(
                model,
                name,
                version,
                info,
                handler=handler,
                example_inputs=example_tensor,
                extra_files=extra_files,
                requirements=requirements,
                format=format,
                archive_format=archive_format,
                handler_config=_with_device(handler_config, device),
            )
            fmt = getattr(result, "format", None)
            diff = getattr(result, "max_abs_diff", None)
            s["note"] = f"format {fmt}" + (f", pre-flight diff {diff:.2g}" if diff else "")
        timings["archive"] = time.monotonic() - t

        t = time.monotonic()
        with prog.step("register + start workers") as s:
            if old is not None:
                _unregister_for_replace(c, name, old, existing)
            c.register(
                store_name,
                model_name=name,
                batch_size=batch_size,
                max_batch_delay=max_batch_delay,
                initial_workers=workers,
                synchronous=True,
                response_timeout=response_timeout,
                # the engine places workers: cpu keeps them off the GPUs, gpu round-robins
                device_type=None if device == "auto" else device,
            )
            if old is not None and old["was_default"]:
                c.set_default(name, version)
            s["note"] = f"{workers} worker{'s' if workers != 1 else ''} ready"
        timings["register"] = time.monotonic() - t

        is_default = _is_default_version(c, name, version, not existing or old is not None)
        dep = Deployment(
            name=name,
            version=version,
            handler=handler_name or (None if handler is None else _handler_label(handler)),
            info=info,
            archive_path=str(Path(info["model_store"]) / store_name),
            archive_format=fmt,
            workers=workers,
            batch_size=batch_size,
            max_batch_delay=max_batch_delay,
            is_default=is_default,
            preflight_max_abs_diff=diff,
            schema=getattr(result, "schema", None),
            replaced=old is not None,
        )
        dep.payloads = _write_payloads(dep, example_tensor, request_example)

        if parity and example is not None:
            t = time.monotonic()
            with prog.step("parity check") as s:
                dep.parity = check_parity(
                    c,
                    dep,
                    model,
                    example_tensor,
                    request_example,
                    tolerance,
                    labels=_labels_from(extra_files),
                    hooks=hooks_of(handler),
                )
                s["note"] = str(dep.parity)
            timings["parity"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t_all
        dep.timings = timings
        prog.finish(f"Served {name} {version} in {timings['total']:.1f} s")
    except TorchServeError:
        raise
    except Exception as exc:
        raise friendly(exc) from exc

    if dep.parity is not None and dep.parity.ok is False:
        message = (
            f"The served model {name} {version} answers differently from the in-kernel model: "
            f"{dep.parity}.\nIt is still registered: look at it with `%torchserve predict "
            f"{name} ...`, fix the handler and redeploy with --replace, or `%torchserve "
            f"unregister {name} --version {version}`."
        )
        if parity == "warn":
            import warnings

            warnings.warn(message, stacklevel=2)
        else:
            raise ParityError(message, dep)
    return dep


def _resolve_device(device: str | None) -> str:
    device = (device or "auto").lower()
    if device not in ("auto", "gpu", "cpu", "cuda"):
        raise TorchServeError(f"device must be 'auto', 'gpu' or 'cpu', not {device!r}")
    if device in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise TorchServeError("--gpu was asked for but no CUDA GPU is visible to torch.")
        return "gpu"
    return device


def _with_device(config: dict[str, Any] | None, device: str) -> dict[str, Any] | None:
    """The device choice travels in the handler config (``deviceType``, TorchServe's key)."""
    if device == "auto":
        return config
    return {**(config or {}), "deviceType": device}


def _choose_version(
    name: str, version: str | None, existing: list[dict[str, Any]], replace: bool
) -> tuple[str, dict[str, Any] | None]:
    """The version to register and, when replacing, what it replaces."""
    versions = {str(d.get("modelVersion")): d for d in existing}
    default = next((v for v, d in versions.items() if _flag_default(d)), None)
    if version is None:
        if not versions:
            return "1.0", None
        if not replace:
            raise ModelExistsError(
                f"A model named {name!r} is already served (versions: "
                f"{', '.join(versions)}). Pass --replace (replace=True) to replace its default "
                f"version, or --version X (version='X') to add a new version."
            )
        version = default or next(iter(versions))
    version = str(version)
    if version not in versions:
        return version, None
    if not replace:
        raise ModelExistsError(
            f"Model {name!r} version {version} is already registered. Pass --replace "
            f"(replace=True) to replace it, or a new --version."
        )
    others = [v for v in versions if v != version]
    return version, {
        "version": version,
        "was_default": default == version or default is None,
        "others": others,
    }


def _flag_default(desc: dict[str, Any]) -> bool:
    for key in ("isDefault", "defaultVersion", "default"):
        if key in desc:
            return bool(desc[key])
    return False


def _unregister_for_replace(
    c: Any, name: str, old: dict[str, Any], existing: list[dict[str, Any]]
) -> None:
    """Unregister the replaced version; a default with siblings must hand the role over first."""
    from .client import EngineError

    try:
        c.unregister(name, old["version"])
    except EngineError as exc:
        if exc.status != 403 or not old["others"]:
            raise
        c.set_default(name, old["others"][0])
        c.unregister(name, old["version"])


def _is_default_version(c: Any, name: str, version: str, assumed: bool) -> bool:
    try:
        for d in c.describe(name, "all"):
            if str(d.get("modelVersion")) == version and any(
                k in d for k in ("isDefault", "defaultVersion", "default")
            ):
                return _flag_default(d)
    except Exception:
        pass
    return assumed


def _handler_label(handler: Any) -> str:
    if isinstance(handler, dict):
        return "custom (" + ", ".join(sorted(handler)) + ")"
    return getattr(handler, "__name__", type(handler).__name__)


def _archive_into_store(
    model: Any, name: str, version: str, info: dict[str, Any], **kwargs: Any
) -> tuple[Any, str]:
    """Archive into a temp dir, then move into the model store as ``name-version.<ext>``.

    Why not archive straight into the store: register resolves file names in the store and
    the archiver names files after the model, so two versions would overwrite each other.
    """
    from .archive import archive

    store = Path(info["model_store"])
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jts-archive-") as tmp:
        result = archive(model, name, version=version, export_path=tmp, force=True, **kwargs)
        src = Path(getattr(result, "path", result))
        suffix = "".join(src.suffixes[-2:]) if src.name.endswith(".tar.gz") else src.suffix
        store_name = f"{name}-{version}{suffix}"
        dest = store / store_name
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        shutil.move(str(src), dest)
    return result, store_name


# ------------------------------------------------------------------------------------------
# examples, payloads and the parity check
# ------------------------------------------------------------------------------------------
def _is_image_bytes(data: Any) -> bool:
    return isinstance(data, (bytes, bytearray)) and (
        bytes(data[:4]) == b"\x89PNG" or bytes(data[:2]) == b"\xff\xd8"
    )


def hooks_of(handler: Any) -> dict[str, Any]:
    """Notebook hook functions (``{"preprocess": f, "postprocess": g}``), else {}."""
    import types

    if isinstance(handler, dict):
        items = handler
    elif isinstance(handler, types.SimpleNamespace):
        items = vars(handler)
    else:
        return {}
    return {k: v for k, v in items.items() if callable(v)}


def _split_example(
    example: Any, handler: Any, handler_config: dict[str, Any] | None
) -> tuple[Any, Any]:
    """``(model input tensor, request body)`` from what the user gave as ``example``.

    For image handlers a PNG/JPEG (bytes, path or PIL image) is the request, and the model
    input is what the handler's pre-processing makes of it; a tensor example is turned into
    a PNG the same way round. With notebook ``preprocess`` hooks, a non-tensor example is the
    request and the hook, run here in the kernel, makes the model input. For other handlers
    the tensor is both.
    """
    if example is None:
        return None, None
    if isinstance(example, Path) and example.is_file():
        example = example.read_bytes()
    if type(example).__module__.startswith("PIL."):
        buf = io.BytesIO()
        example.save(buf, format="PNG")
        example = buf.getvalue()
    if isinstance(handler, str) and handler in IMAGE_HANDLERS:
        if isinstance(example, str) and Path(example).is_file():
            example = Path(example).read_bytes()
        if _is_image_bytes(example):
            return image_to_tensor(example, handler_config), bytes(example)
        tensor = _as_tensor(example)
        return tensor, tensor_to_png(tensor, handler_config)
    if isinstance(example, (tuple, list)) and len(example) == 1 and _tensor_like(example[0]):
        example = example[0]
    if _tensor_like(example):
        return _as_tensor(example), None
    hooks = hooks_of(handler)
    if "preprocess" in hooks:
        return hooks["preprocess"]([{"body": example}]), example
    return None, example


def _tensor_like(x: Any) -> bool:
    return type(x).__module__.split(".")[0] in ("torch", "numpy")


def _as_tensor(x: Any) -> Any:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def _norm(handler_config: dict[str, Any] | None) -> tuple[list[float] | None, list[float] | None]:
    cfg = handler_config or {}
    mean, std = cfg.get("mean"), cfg.get("std")

    def as_list(v: Any) -> list[float] | None:
        if v is None:
            return None
        return [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]

    return as_list(mean), as_list(std)


def image_to_tensor(data: bytes, handler_config: dict[str, Any] | None, channels: int = 1) -> Any:
    """Decode an image the way the image handlers do: [0,1] floats, then mean/std."""
    import numpy as np
    import torch
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    mean, std = _norm(handler_config)
    if mean and std:
        m = torch.tensor(mean).reshape(-1, 1, 1)
        s = torch.tensor(std).reshape(-1, 1, 1)
        t = (t - m) / s
    return t.unsqueeze(0)


def tensor_to_png(tensor: Any, handler_config: dict[str, Any] | None) -> bytes:
    """The inverse of :func:`image_to_tensor` for a (1, C, H, W) or (C, H, W) tensor."""
    import numpy as np
    import torch
    from PIL import Image

    t = tensor.detach().cpu().float()
    t = t[0] if t.ndim == 4 else t
    mean, std = _norm(handler_config)
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


def _write_payloads(dep: Deployment, tensor: Any, request: Any) -> dict[str, str]:
    """Write the example as ready-to-send files next to the archive, for the curl snippets."""
    store = Path(dep.info["model_store"])
    stem = f"{dep.name}-{dep.version}"
    out: dict[str, str] = {}
    v2_name = "input-0"
    if dep.schema and dep.schema.get("inputs"):
        v2_name = dep.schema["inputs"][0].get("name", v2_name)
    try:
        if _is_image_bytes(request):
            png = store / f"{stem}.example.png"
            png.write_bytes(request)
            b64 = base64.b64encode(request).decode()
            out["raw"] = str(png)
            v1 = {"instances": [{"b64": b64}]}
            v2 = {"inputs": [{"name": v2_name, "shape": [1], "datatype": "BYTES", "data": [b64]}]}
        elif tensor is not None and hasattr(tensor, "tolist"):
            from .archive.schema import v2_datatype

            raw = store / f"{stem}.example.json"
            raw.write_text(json.dumps(tensor.tolist()))
            out["raw"] = str(raw)
            v1 = {"instances": tensor.tolist()}
            v2 = {
                "inputs": [
                    {
                        "name": v2_name,
                        "shape": list(tensor.shape),
                        "datatype": v2_datatype(tensor.dtype),
                        "data": tensor.reshape(-1).tolist(),
                    }
                ]
            }
        elif request is not None:
            raw = store / f"{stem}.example.txt"
            raw.write_bytes(request.encode() if isinstance(request, str) else request)
            out["raw"] = str(raw)
            v1 = {"instances": [request if isinstance(request, str) else {"b64": ""}]}
            v2 = None
        else:
            return out
        (store / f"{stem}.v1.json").write_text(json.dumps(v1))
        out["v1"] = str(store / f"{stem}.v1.json")
        if v2 is not None:
            (store / f"{stem}.v2.json").write_text(json.dumps(v2))
            out["v2"] = str(store / f"{stem}.v2.json")
    except OSError:
        pass
    return out


def _model_output(model: Any, tensor: Any) -> Any:
    import torch

    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            return model(tensor)
    finally:
        if was_training:
            model.train()


def check_parity(
    c: Any,
    dep: Deployment,
    model: Any,
    tensor: Any,
    request: Any,
    tolerance: float = DEFAULT_TOLERANCE,
    labels: dict[str, str] | None = None,
    hooks: dict[str, Any] | None = None,
) -> Parity:
    """Send the example through ``/predictions`` and compare with the in-kernel model.

    * tensor-style answers (a nested list): compared element-wise with ``model(example)``;
    * image_classifier (``{label: probability}``): compared with the softmax of the model
      output on the same decoded image, label by label;
    * notebook hooks: ``postprocess(model(preprocess([request])))`` run here in the kernel
      against the served answer (numbers compared with the tolerance, the rest for equality).

    Anything else cannot be compared without knowing the handler's meaning: skipped, and
    the answer is kept in ``served`` for the user to look at.
    """
    import numpy as np

    version = None if dep.is_default else dep.version
    if hooks:
        return _hooks_parity(c, dep, model, tensor, request, hooks, tolerance, version)
    if _is_image_bytes(request):
        body, ctype = request, "image/png" if request[:4] == b"\x89PNG" else "image/jpeg"
    elif tensor is not None:
        body, ctype = json.dumps(tensor.tolist()).encode(), "application/json"
    else:
        body, ctype = request, None
    resp = c.predict(dep.name, body, version=version, content_type=ctype)
    served = decode_response(resp)
    if tensor is None:
        return Parity(None, detail="no tensor example to run in the kernel", served=served)
    out = _model_output(model, tensor)
    if isinstance(served, dict) and dep.handler == "image_classifier":
        return _topk_parity(served, out, tolerance, labels)
    try:
        got = np.asarray(served, dtype=np.float64)
        want = _to_numpy(out)
    except (TypeError, ValueError):
        return Parity(None, detail="the handler's answer is not a tensor", served=served)
    if want is None or got.size != want.size:
        return Parity(
            None,
            detail=f"answer shape {list(got.shape)} differs from the model output's "
            f"{None if want is None else list(want.shape)}",
            served=served,
        )
    diff = float(np.max(np.abs(got.reshape(-1) - want.reshape(-1)))) if got.size else 0.0
    ok = bool(np.isfinite(diff) and diff <= tolerance)
    return Parity(ok, diff, tolerance, served=served, expected=want.tolist())


def _hooks_parity(
    c: Any,
    dep: Deployment,
    model: Any,
    tensor: Any,
    request: Any,
    hooks: dict[str, Any],
    tolerance: float,
    version: str | None,
) -> Parity:
    """The notebook's own pre/post-processing around the in-kernel model vs the served answer."""
    if request is not None:
        resp = c.predict(dep.name, request, version=version)
    else:
        resp = c.predict(
            dep.name, json.dumps(tensor.tolist()).encode(), version, "application/json"
        )
    served = decode_response(resp)
    if tensor is None:
        return Parity(None, detail="no model input: give a tensor or a preprocess hook")
    out = _model_output(model, tensor)
    expected = hooks["postprocess"](out) if "postprocess" in hooks else _to_numpy(out).tolist()
    if isinstance(expected, (list, tuple)) and len(expected) == 1:
        expected = expected[0]
    diff = _max_diff(served, _plain(expected))
    if diff is None:
        return Parity(None, detail="answers are not comparable", served=served)
    return Parity(diff <= tolerance, diff, tolerance, served=served, expected=_plain(expected))


def _plain(value: Any) -> Any:
    """Tensors/arrays/numpy scalars -> JSON-like Python values, as the worker would send."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _max_diff(a: Any, b: Any) -> float | None:
    """Max abs difference of two JSON-like values; inf when their structure differs."""
    if isinstance(a, bool) or isinstance(b, bool):
        return 0.0 if a == b else float("inf")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b))
    if isinstance(a, dict) and isinstance(b, dict):
        if set(map(str, a)) != set(map(str, b)):
            return float("inf")
        diffs = [_max_diff(a[k], b[k]) for k in a]
        return max([d for d in diffs if d is not None], default=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return float("inf")
        diffs = [_max_diff(x, y) for x, y in zip(a, b, strict=True)]
        return max([d for d in diffs if d is not None], default=0.0)
    return 0.0 if a == b else float("inf")


def _to_numpy(out: Any) -> Any:
    import numpy as np

    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if hasattr(out, "detach"):
        return out.detach().cpu().double().numpy()
    try:
        return np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _topk_parity(
    served: dict[str, Any], out: Any, tolerance: float, labels: dict[str, str] | None
) -> Parity:
    import torch

    logits = out[0] if isinstance(out, (tuple, list)) else out
    probs = torch.softmax(logits.detach().double().reshape(-1), 0)
    # log_softmax outputs are fine too: softmax is invariant to the per-row shift
    diffs = []
    for label, p in served.items():
        idx = _label_index(label, labels)
        if idx is None or idx >= probs.numel():
            return Parity(False, float("inf"), tolerance, f"unknown label {label!r}", served)
        diffs.append(abs(float(p) - float(probs[idx])))
    diff = max(diffs) if diffs else 0.0
    top = int(probs.argmax())
    return Parity(diff <= tolerance, diff, tolerance, served=served, expected={"top": top})


def _labels_from(extra_files: dict[str, Any] | None) -> dict[str, str] | None:
    """The ``index_to_name.json`` label map among the extra files (dict, JSON text or path)."""
    value = (extra_files or {}).get("index_to_name.json")
    if value is None or isinstance(value, dict):
        return value
    try:
        if isinstance(value, (str, Path)) and Path(value).is_file():
            value = Path(value).read_text()
        return json.loads(value)
    except (OSError, ValueError, TypeError):
        return None


def _label_index(label: str, labels: Any) -> int | None:
    if isinstance(labels, dict):
        for k, v in labels.items():
            if str(v) == str(label):
                return int(k)
    try:
        return int(label)
    except (TypeError, ValueError):
        return None
