"""``deploy``: archive an in-memory model, serve it, and prove the served answers match.

The pipeline, in order: refuse a model, name or format no archive is made of; find or start
the engine; refuse a name/version already served unless ``replace=True`` (:mod:`.versions`);
archive the model (its pre-flight proves the archive loads in a clean process) into the
engine's model store; register it synchronously (workers are up when that returns); send
the example through the served endpoint and compare with the in-kernel model
(:mod:`.parity`). :class:`Deployment` carries the endpoints and ready-to-run snippets.

Why not ``deploy.py``: the package exposes the function ``jupyter_torchserve.deploy``, and a
submodule of that name would replace it on the package as soon as anything imported it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import api, discovery, evaluation, payloads, snippets
from .client import Client
from .parity import (
    DEFAULT_TOLERANCE,
    NO_WORKER_PARITY,
    Parity,
    check_parity,
    labels_from,
    mismatch_message,
)
from .rollback import Rollback
from .versions import choose_version, default_version, served_as_default, unregister_replaced
from .widgets import Progress


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
    evaluation: evaluation.Evaluation | None = None  # on x_test/y_test, kernel vs served

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
        return discovery.read_keys(self.info).management

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
        return snippets.deployment_snippets(self)

    def client(self) -> Client:
        """A client of the engine that serves this version (not the kernel's current one)."""
        return Client.from_info(self.info)

    def predict(self, data: Any, content_type: str | None = None) -> Any:
        """Call this version through /predictions (decoded answer).

        Several inputs (a tuple or dict of tensors, as the example was) are sent by the names
        this version's schema gives them.
        """
        version = None if self.is_default else self.version
        if payloads.several_tensors(data):
            data = payloads.multi_input_json(data, payloads.input_names(self.schema))
            content_type = content_type or "application/json"
        return api.predict(
            self.name, data, version=version, content_type=content_type, c=self.client()
        )

    def explain(self, data: Any, target: int | None = None, content_type: str | None = None) -> Any:
        """Explain ``data`` with this version (``api.explain``: drawn, with a target picker)."""
        version = None if self.is_default else self.version
        return api.explain(self.name, data, version, content_type, target)

    def _repr_html_(self) -> str:
        report = self.evaluation._repr_html_() if self.evaluation is not None else ""
        return snippets.deployment_html(self) + report

    def __repr__(self) -> str:
        report = f"\n{self.evaluation!r}" if self.evaluation is not None else ""
        return snippets.deployment_text(self) + report


@dataclass(frozen=True)
class DeployOptions:
    """Everything ``deploy`` was asked besides the model and its name; the pipeline reads it.

    The defaults are ``deploy``'s: they are told there, with the public signature.
    """

    version: str | None
    handler: Any
    workers: int
    batch_size: int
    max_batch_delay: int
    example: Any
    format: str
    device: str
    replace: bool
    extra_files: dict[str, Any] | None
    handler_config: dict[str, Any] | None
    requirements: list[str] | None
    archive_format: str
    response_timeout: float | None
    parity: bool | str
    tolerance: float
    engine: dict[str, Any] | None
    progress: str | None
    x_test: Any = None
    y_test: Any = None
    metric: Any = None
    eval_batch_size: int = evaluation.DEFAULT_BATCH

    @property
    def checks_parity(self) -> bool:
        return bool(self.parity) and self.example is not None

    @property
    def steps(self) -> list[str]:
        steps = ["engine", "archive + pre-flight", "register + start workers"]
        steps += ["parity check"] if self.checks_parity else []
        return steps + ["evaluation"] if self.x_test is not None else steps

    def archiving(self, example: payloads.Example, device: str) -> dict[str, Any]:
        """The keywords of ``archive()`` for this deploy (the device rides in the config)."""
        config = self.handler_config
        if device != "auto":  # deviceType: TorchServe's key for it
            config = {**(config or {}), "deviceType": device}
        return {
            "handler": self.handler,
            "example_inputs": example.tensor,
            "extra_files": self.extra_files,
            "requirements": self.requirements,
            "format": self.format,
            "archive_format": self.archive_format,
            "handler_config": config,
        }

    @property
    def handler_label(self) -> str | None:
        """How the summary names the handler: its built-in name or path, else its kind."""
        handler = self.handler
        if handler is None or isinstance(handler, str):
            return handler
        if isinstance(handler, dict):
            return "custom (" + ", ".join(sorted(handler)) + ")"
        return getattr(handler, "__name__", type(handler).__name__)


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
    x_test: Any = None,
    y_test: Any = None,
    metric: Any = None,
    eval_batch_size: int = evaluation.DEFAULT_BATCH,
) -> Deployment:
    """Archive ``model``, serve it as ``name`` and prove the served answers match.

    ``example`` is one input: a tensor (the model's input, batch dimension included), a tuple
    or dict of tensors for a model with several inputs, or, for image handlers, image bytes /
    a path to an image. ``device`` is 'auto', 'gpu' or 'cpu'.
    ``parity`` is True (raise :class:`~jupyter_torchserve.api.ParityError` on a mismatch),
    'warn', or False (skip). ``engine`` holds EngineConfig values for an engine it starts.
    ``progress`` is 'widget', 'text' or 'none' (default: widget in a kernel, text elsewhere).

    A name/version already registered raises :class:`~jupyter_torchserve.api.ModelExistsError`
    unless ``replace=True``; a replace that fails, or fails parity, serves the old version again.

    ``x_test`` (and ``y_test``) is held-out data: it goes through the served endpoint in
    batches of ``eval_batch_size`` rows, the model here sees the same rows, and
    ``Deployment.evaluation`` holds both sides' figures (:mod:`.evaluation`; ``metric(y_true,
    y_pred)`` adds one of your own). Without ``example``, its first row is the example, so
    the schema and sample payload come from it. The report goes into the archive's metadata.
    """
    if example is None and x_test is not None:
        example = evaluation.first_row(x_test, model, handler)
    options = DeployOptions(
        version=version,
        handler=handler,
        workers=workers,
        batch_size=batch_size,
        max_batch_delay=max_batch_delay,
        example=example,
        format=format,
        device=device,
        replace=replace,
        extra_files=extra_files,
        handler_config=handler_config,
        requirements=requirements,
        archive_format=archive_format,
        response_timeout=response_timeout,
        parity=parity,
        tolerance=tolerance,
        engine=engine,
        progress=progress,
        x_test=x_test,
        y_test=y_test,
        metric=metric,
        eval_batch_size=eval_batch_size,
    )
    dep = run_pipeline(model, name, options)
    _verdict(dep, options.parity)
    return dep


def run_pipeline(model: Any, name: str, opts: DeployOptions) -> Deployment:
    """The steps of ``deploy``, each shown (and timed) as it runs; see the module docstring.

    All or nothing: when a step fails after the archive reached the store, what this deploy
    added (the archive, the registered version) is removed again before the error is
    raised, so re-running the cell is never met with "already served".
    """
    from .archive.api import check_arguments  # a typo never waits for an engine to start

    check_arguments(model, name, opts.format)
    device = resolve_device(opts.device)
    prog = Progress(f"Deploying {name}", opts.steps, mode=opts.progress)
    prog.start()
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    done = Rollback(name)
    try:
        with _step(prog, "engine", timings, "engine") as s:
            info, started = api.start(**(opts.engine or {}))
            s["note"] = f"{'started' if started else 'reusing'} pid {info['pid']}"
        c = done.client = api.client(info)
        store = Path(info["model_store"])
        existing = api.versions_of(c, name)
        default = default_version(c, name, existing)
        version, old = choose_version(name, opts.version, existing, opts.replace, default)
        done.set_aside(old, store, f"{name}-{version}")  # until it serves

        with _step(prog, "archive + pre-flight", timings, "archive") as s:
            example = payloads.split_example(opts.example, opts.handler, opts.handler_config)
            result, store_name = _archive_into_store(
                model, name, version, store, opts.archiving(example, device)
            )
            done.files.append(store / store_name)
            fmt = getattr(result, "format", None)
            diff = getattr(result, "max_abs_diff", None)
            s["note"] = f"format {fmt}" + (f", pre-flight diff {diff:.2g}" if diff else "")

        with _step(prog, "register + start workers", timings, "register") as s:
            if old is not None:
                unregister_replaced(c, name, old)
                done.replaced = old
            done.version = version
            done.others = [str(d.get("modelVersion")) for d in existing]
            done.others = [v for v in done.others if v != version]
            c.register(
                store_name,
                model_name=name,
                batch_size=opts.batch_size,
                max_batch_delay=opts.max_batch_delay,
                initial_workers=opts.workers,
                synchronous=True,
                response_timeout=opts.response_timeout,
                # the engine places workers: cpu keeps them off the GPUs, gpu round-robins
                device_type=None if device == "auto" else device,
            )
            done.registered = True
            if old is not None and old.was_default:
                c.set_default(name, version)
            s["note"] = f"{opts.workers} worker{'s' if opts.workers != 1 else ''} ready"

        dep = Deployment(
            name=name,
            version=version,
            handler=opts.handler_label,
            info=info,
            archive_path=str(store / store_name),
            archive_format=fmt,
            workers=opts.workers,
            batch_size=opts.batch_size,
            max_batch_delay=opts.max_batch_delay,
            is_default=served_as_default(c, name, version, not existing or old is not None),
            preflight_max_abs_diff=diff,
            schema=getattr(result, "schema", None),
            replaced=old is not None,
        )
        dep.payloads = payloads.write_example_files(
            store, f"{name}-{version}", example, payloads.first_input_name(dep.schema)
        )
        done.files += [store / f for f in dep.payloads.values()]
        if opts.checks_parity:
            with _step(prog, "parity check", timings, "parity") as s:
                if opts.workers < 1:
                    dep.parity = Parity(None, detail=NO_WORKER_PARITY.format(name=name))
                else:
                    dep.parity = check_parity(
                        c,
                        name,
                        None if dep.is_default else version,
                        model,
                        example,
                        handler=opts.handler if isinstance(opts.handler, str) else None,
                        tolerance=opts.tolerance,
                        labels=labels_from(opts.extra_files),
                        hooks=payloads.hooks_of(opts.handler),
                    )
                s["note"] = str(dep.parity)
                if old is not None and opts.parity is True and dep.parity.ok is False:
                    message = mismatch_message(name, version, dep.parity, replaced=True)
                    raise api.ParityError(message, dep)  # undone below, as any failed step
        if opts.x_test is not None:
            with _step(prog, "evaluation", timings, "evaluation") as s:
                dep.evaluation = evaluation.evaluate_deployment(c, dep, model, opts)
                s["note"] = f"{dep.evaluation.rows} rows, {dep.evaluation.headline()}"
        done.commit()
        timings["total"] = time.monotonic() - t_all
        dep.timings = timings
        prog.finish(f"Served {name} {version} in {timings['total']:.1f} s")
    except Exception as exc:
        err = api.friendly(exc)
        if rolled_back := done.undo():
            err.args = (f"{err}\n{rolled_back}",)
        if err is exc:
            raise
        raise err from exc
    return dep


def _verdict(dep: Deployment, parity: bool | str) -> None:
    """A failed parity check raises :class:`~jupyter_torchserve.api.ParityError` (or warns)."""
    if dep.parity is None or dep.parity.ok is not False:
        return
    message = mismatch_message(dep.name, dep.version, dep.parity, replaced=False)
    if parity != "warn":
        raise api.ParityError(message, dep)
    warnings.warn(message, stacklevel=3)  # at the caller of deploy()


@contextmanager
def _step(
    prog: Progress, step: str, timings: dict[str, float], key: str
) -> Iterator[dict[str, Any]]:
    """One shown step of the pipeline; its time goes into ``timings[key]`` when it succeeds."""
    t = time.monotonic()
    with prog.step(step) as note:
        yield note
    timings[key] = time.monotonic() - t


def resolve_device(device: str | None) -> str:
    """'auto', 'cpu' or 'gpu' ('cuda' is 'gpu'); asking for a GPU that is not there fails."""
    device = (device or "auto").lower()
    if device not in ("auto", "gpu", "cpu", "cuda"):
        raise api.TorchServeError(f"device must be 'auto', 'gpu' or 'cpu', not {device!r}")
    if device in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise api.TorchServeError("--gpu was asked for but no CUDA GPU is visible to torch.")
        return "gpu"
    return device


def _archive_into_store(
    model: Any, name: str, version: str, store: Path, options: dict[str, Any]
) -> tuple[Any, str]:
    """Archive into a temp dir, then move into the model store as ``name-version.<ext>``.

    Why not archive straight into the store: register resolves file names in the store and
    the archiver names files after the model, so two versions would overwrite each other.
    """
    from .archive import archive

    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jts-archive-") as tmp:
        result = archive(model, name, version=version, export_path=tmp, force=True, **options)
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
