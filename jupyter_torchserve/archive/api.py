"""``archive()``: an in-memory ``nn.Module`` -> a TorchServe 0.12 compatible model archive.

The steps, each in its own module: capture the model in the first format that works
(``formats``), resolve the handler into files (``handler_spec``), describe inputs/outputs
(``schema``), write the archive (``writer``), and prove it loads in a clean process
(``preflight``) before it is renamed into the model store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from .devices import model_device, to_device
from .errors import CaptureError
from .formats import (
    FORMATS,
    MODEL_FILE,
    TRIES,
    Attempt,
    FormatUnavailable,
    Serialized,
    Trial,
    describe_failure,
)
from .handler_spec import HandlerFiles, builtin_dir, resolve_handler
from .manifest import (
    MANIFEST_PATH,
    METADATA_PATH,
    build_manifest,
    dumps_manifest,
    validate_model_name,
)
from .preflight import DEFAULT_TIMEOUT, run_preflight
from .schema import build_schema, model_inputs, sample_input_document
from .writer import Content, archive_path, commit_archive, write_archive

SAMPLE_INPUT_FILE = "sample_input.json"
REQUIREMENTS_FILE = "requirements.txt"
LABELS_FILE = "index_to_name.json"


@dataclass
class ArchiveResult(os.PathLike):
    """What ``archive()`` wrote. Usable as a path (``os.fspath(result)``)."""

    path: Path
    format: str
    attempts: list[Attempt]
    max_abs_diff: float | None
    schema: dict[str, Any] | None
    manifest: dict[str, Any] = field(default_factory=dict)
    preflight: bool = False

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


@contextmanager
def _eval_mode(model: torch.nn.Module):
    """Capture in eval mode (no dropout, running BN stats) and restore the user's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _capture(trial: Trial, fmt: str) -> tuple[Serialized, list[Attempt]]:
    order = FORMATS if fmt == "auto" else (fmt,)  # auto never picks ONNX: asked for only
    attempts: list[Attempt] = []
    for name in order:
        try:
            if name == "onnx":
                from .onnx_format import try_onnx

                result = try_onnx(trial)
            else:
                result = TRIES[name](trial)
        except FormatUnavailable as exc:
            attempts.append(Attempt(name, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - every failure is reported, next format tried
            attempts.append(Attempt(name, False, describe_failure(exc)))
        else:
            attempts.append(Attempt(name, True, None))
            return result, attempts
    lines = "\n".join(f"  - {a.format}: {a.error}" for a in attempts)
    raise CaptureError(f"no format could capture {type(trial.model).__name__}:\n{lines}")


def _extra_entries(extra_files: object) -> dict[str, bytes]:
    """``extra_files`` -> archive files. Values: paths, str (a path if one exists, else text),
    bytes, or JSON-able objects. A list of paths works like torch-model-archiver's option."""
    if extra_files is None:
        return {}
    files: dict[str, bytes] = {}
    if isinstance(extra_files, Mapping):
        items: Iterable[tuple[str, object]] = extra_files.items()
    elif isinstance(extra_files, (list, tuple)):
        items = []
        for p in map(Path, extra_files):
            if p.is_dir():  # like torch-model-archiver: the directory's contents, not itself
                items += [(str(f.relative_to(p)), f) for f in sorted(p.rglob("*")) if f.is_file()]
            else:
                items.append((p.name, p))
    else:
        raise TypeError("extra_files must be a dict {name: content} or a list of paths")
    for name, value in items:
        clean = Path(str(name)).as_posix()
        if clean.startswith(("/", "MAR-INF")) or ".." in Path(clean).parts or not clean:
            raise ValueError(f"extra file name {name!r} must be a relative path inside the archive")
        if isinstance(value, Path):
            if not value.is_file():
                raise FileNotFoundError(f"extra file {value} does not exist")
            files[clean] = value.read_bytes()
        elif isinstance(value, bytes | bytearray | memoryview):
            files[clean] = bytes(value)
        elif isinstance(value, str):
            files[clean] = Path(value).read_bytes() if os.path.isfile(value) else value.encode()
        else:
            try:
                files[clean] = json.dumps(value, indent=2).encode()
            except TypeError as exc:
                raise TypeError(
                    f"extra file {name!r}: give a path, str, bytes or a JSON-able object"
                ) from exc
    return files


def _requirements(requirements: object) -> bytes | None:
    if requirements is None:
        return None
    if isinstance(requirements, (str, Path)) and os.path.isfile(requirements):
        return Path(requirements).read_bytes()
    if isinstance(requirements, str):
        requirements = [requirements]
    lines = [str(r).strip() for r in requirements]  # type: ignore[union-attr]
    return ("\n".join(line for line in lines if line) + "\n").encode()


def _labels(files: Mapping[str, bytes]) -> Any:
    if LABELS_FILE not in files:
        return None
    try:
        return json.loads(files[LABELS_FILE])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{LABELS_FILE} in extra_files is not valid JSON: {exc}") from exc


def check_arguments(model: object, name: str, format: str = "auto") -> None:
    """Refuse what no archive can be made of, before anything is done: ``deploy`` asks
    first too, so that a typo never waits for an engine to start."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"the model must be a torch.nn.Module, got {type(model).__module__}."
            f"{type(model).__qualname__}"
        )
    validate_model_name(name)
    if format not in ("auto", *FORMATS, "onnx"):
        raise ValueError(
            f"format must be 'auto', 'onnx' or one of {', '.join(FORMATS)}, not {format!r}"
        )


def archive(
    model: torch.nn.Module,
    name: str,
    version: str = "1.0",
    handler: object = None,
    example_inputs: object = None,
    extra_files: object = None,
    requirements: object = None,
    export_path: str | os.PathLike[str] = ".",
    format: str = "auto",
    archive_format: str = "default",
    init_kwargs: dict[str, Any] | None = None,
    handler_config: dict[str, Any] | None = None,
    force: bool = False,
    preflight: bool = True,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    preflight_timeout: float = DEFAULT_TIMEOUT,
) -> ArchiveResult:
    """Archive ``model`` as ``<export_path>/<name>.mar`` (or ``.tar.gz`` / a directory).

    ``format="auto"`` tries torch.export, TorchScript (script, then trace) and eager (state
    dict + captured source) in that order; ``result.attempts`` says why each failed one failed.
    With ``preflight=True`` the archive is loaded in a clean process and its output on
    ``example_inputs`` compared with the model's before it is moved into place.
    ``example_inputs`` is a tensor, a tuple of positional inputs or a dict of keyword inputs
    (``schema.model_inputs``: what each becomes in the schema).
    """
    check_arguments(model, name, format)
    target = archive_path(export_path, name, archive_format)
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; pass force=True to overwrite it")
    handler_files = _onnx_handler(handler) if format == "onnx" else resolve_handler(handler)
    extras = _extra_entries(extra_files)
    labels = _labels(extras)
    reqs = _requirements(requirements)
    inputs, input_names = model_inputs(model, example_inputs)
    device = model_device(model)
    inputs = to_device(inputs, device)

    with _eval_mode(model), torch.no_grad():
        reference = None
        if inputs is not None:
            try:
                reference = model(*inputs)
            except Exception as exc:
                raise ValueError(
                    f"the model fails on example_inputs: {describe_failure(exc)}"
                ) from exc
        trial = Trial(model, inputs, reference, rtol, atol, init_kwargs)
        serialized, attempts = _capture(trial, format)
    schema = build_schema(inputs, reference, input_names)
    sample = sample_input_document(inputs, input_names)

    entries: list[tuple[str, Content]] = []
    if serialized.payload is not None:
        entries.append((serialized.serialized_file, serialized.payload))
    else:
        state = serialized.state_dict
        entries.append((serialized.serialized_file, lambda f: torch.save(state, f)))
    if serialized.model_source is not None:
        entries.append((MODEL_FILE, serialized.model_source.encode()))
    generated = {e[0] for e in entries} | set(handler_files.files)
    generated |= {SAMPLE_INPUT_FILE, REQUIREMENTS_FILE} if reqs else {SAMPLE_INPUT_FILE}
    clash = sorted(generated & set(extras))
    if clash:
        raise ValueError(f"extra_files {clash} clash with files the archive generates")
    entries += list(handler_files.files.items())
    entries += list(extras.items())
    if reqs is not None:
        entries.append((REQUIREMENTS_FILE, reqs))
    if sample is not None:
        entries.append((SAMPLE_INPUT_FILE, json.dumps(sample).encode()))
    metadata = {
        "format": serialized.format,
        "builtin_handler": handler_files.builtin,
        "handler_config": dict(handler_config or {}),
        "schema": schema,
        "sample_input": SAMPLE_INPUT_FILE if sample is not None else None,
        "eager": serialized.eager,
        "torch_version": torch.__version__.split("+")[0],
        "jupyter_torchserve_version": __version__,
        "format_attempts": [a.as_dict() for a in attempts],
        "format_notes": serialized.notes,
        "label_map": labels,
    }
    if serialized.format == "onnx":  # its worker needs ONNX Runtime, not torch
        from .onnx_format import REQUIRES

        metadata["requires"] = REQUIRES
    manifest = build_manifest(
        name,
        serialized.serialized_file,
        handler_files.manifest_handler,
        model_file=MODEL_FILE if serialized.model_source is not None else None,
        model_version=str(version) if version is not None else None,
        requirements_file=REQUIREMENTS_FILE if reqs is not None else None,
    )
    entries.append((METADATA_PATH, json.dumps(metadata, indent=2).encode()))
    entries.append((MANIFEST_PATH, dumps_manifest(manifest).encode()))

    staged = write_archive(target, archive_format, name, entries, staging=True)
    try:
        diff = None
        if preflight:
            report = run_preflight(
                staged,
                inputs,
                reference,
                rtol=rtol,
                atol=atol,
                timeout=preflight_timeout,
                device=device,
            )
            diff = report.max_abs_diff
        final = commit_archive(staged, target, force)
    except BaseException:
        _discard(staged)
        raise
    return ArchiveResult(final, serialized.format, attempts, diff, schema, manifest, preflight)


def _onnx_handler(handler: object) -> HandlerFiles:
    """An ONNX archive is served by the torch-free ``onnx`` built-in, whatever else asked."""
    if handler not in (None, "onnx", "tensor"):
        raise ValueError(
            "format='onnx' is served by the built-in onnx handler (ONNX Runtime, no torch): "
            f"handler {handler!r} cannot run it; leave handler unset"
        )
    source = (builtin_dir() / "onnx.py").read_bytes()
    return HandlerFiles("jts_onnx.py", {"jts_onnx.py": source}, builtin="onnx")


def _discard(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
