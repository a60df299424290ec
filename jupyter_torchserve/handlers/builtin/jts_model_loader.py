"""Load the model of an extracted archive: jupyter_torchserve's formats and TorchServe 0.12's.

This file is copied into every archive jupyter_torchserve writes (beside ``jts_base.py``), so
it imports only the standard library and torch: TorchServe 0.12 without our package must be
able to serve the archive with the same answers.

Formats, told by ``MAR-INF/jupyter_torchserve.json`` when present:

* ``export``: ``torch.export.load(serializedFile)``, moved to the worker's device
  (:func:`load_exported`)
* ``torchscript``: ``torch.jit.load(serializedFile, map_location=device)``
* ``eager``: import ``model.py`` from the archive, build the class with the recorded
  ``init_kwargs``, load the state dict with ``weights_only=True`` (never unpickle code)

Without our metadata, TorchServe's own layouts: a ``modelFile`` in the manifest means an eager
state dict for the one ``nn.Module`` class defined in that file (built with no arguments);
otherwise the serialized file is TorchScript (or an ExportedProgram if it ends in ``.pt2``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import types
from typing import IO, Any

import torch

METADATA_FILE = os.path.join("MAR-INF", "jupyter_torchserve.json")
MANIFEST_FILE = os.path.join("MAR-INF", "MANIFEST.json")


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` if the file does not exist."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _as_device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def _serialized_path(model_dir: str, manifest: dict[str, Any]) -> str:
    name = manifest.get("model", {}).get("serializedFile")
    if not name:
        raise RuntimeError("the archive manifest names no serializedFile")
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"serialized file {name!r} is missing from {model_dir}")
    return path


def import_model_file(model_dir: str, filename: str) -> types.ModuleType:
    """Import a ``.py`` file of the archive as a module (its siblings importable too)."""
    path = os.path.join(model_dir, filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {filename!r} is missing from {model_dir}")
    if model_dir not in sys.path:
        sys.path.insert(0, model_dir)  # model.py may import other files of the archive
    name = os.path.splitext(os.path.basename(filename))[0]
    existing = sys.modules.get(name)
    if existing is not None:
        existing_file = getattr(existing, "__file__", None)
        if existing_file and os.path.abspath(existing_file) == os.path.abspath(path):
            return existing
        name = f"{name}_{abs(hash(os.path.abspath(path))):x}"  # another archive's model.py
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load_state_dict(path: str, device: torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise RuntimeError(
            f"cannot load {os.path.basename(path)} as a state dict with weights_only=True "
            f"({exc}); only tensors and plain containers are accepted"
        ) from exc


def _single_module_class(module: types.ModuleType, filename: str) -> type:
    """TorchServe's rule: exactly one ``nn.Module`` subclass defined in the model file."""
    classes = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and issubclass(obj, torch.nn.Module)
    ]
    if len(classes) != 1:
        names = [c.__name__ for c in classes]
        raise ValueError(f"expected exactly one nn.Module class in {filename}, found {names}")
    return classes[0]


def _finish(model: Any, device: torch.device) -> Any:
    """Move to the device and switch to eval mode where the model type allows it."""
    try:
        model = model.to(device)
    except (AttributeError, NotImplementedError, RuntimeError):
        pass  # an exported program's module: load_exported has put it on the device
    try:
        model.eval()
    except (AttributeError, NotImplementedError):
        pass  # torch.export modules refuse eval(); they were exported in eval mode
    return model


def load_exported(f: str | IO[bytes], device: torch.device | str | None = None) -> Any:
    """The module of the exported program saved in ``f``, on ``device``."""
    program = torch.export.load(f)
    if device is not None:
        program = move_exported(program, device)
    return program.module()


def move_exported(program: Any, device: torch.device | str) -> Any:
    """``program`` (an ExportedProgram) with its weights and its graph on ``device``.

    ``Module.to`` is not enough for an exported program: the devices its forward named when
    it was traced (``torch.zeros(n, device=x.device)`` records ``cpu`` or ``cuda:0``) are
    constants in its graph, so a program traced on one device and moved with ``.to`` fails
    on another. torch's ``move_to_device_pass`` rewrites those as well as the weights; torch
    before 2.5 has no such pass, and there the program stays as it is.
    """
    try:
        from torch.export.passes import move_to_device_pass
    except ImportError:
        try:
            from torch._export.passes import move_to_device_pass  # torch 2.5
        except ImportError:
            return program
    return move_to_device_pass(program, str(torch.device(device)))


def load_model(model_dir: str, device: torch.device | str | None = None) -> torch.nn.Module:
    """Load the model of the extracted archive in ``model_dir`` onto ``device``, in eval mode."""
    device = _as_device(device)
    manifest = read_json(os.path.join(model_dir, MANIFEST_FILE)) or {}
    meta = read_json(os.path.join(model_dir, METADATA_FILE))
    serialized = _serialized_path(model_dir, manifest)
    if meta is not None:
        fmt = meta.get("format")
        if fmt == "export":
            return _finish(load_exported(serialized, device), device)
        if fmt == "torchscript":
            return _finish(torch.jit.load(serialized, map_location=device), device)
        if fmt == "eager":
            eager = meta.get("eager") or {}
            filename = f"{eager.get('module', 'model')}.py"
            module = import_model_file(model_dir, filename)
            cls = getattr(module, eager["class"])
            model = cls(**(eager.get("init_kwargs") or {}))
            model.load_state_dict(_load_state_dict(serialized, device))
            return _finish(model, device)
        raise ValueError(f"unknown model format {fmt!r} in {METADATA_FILE}")
    model_file = manifest.get("model", {}).get("modelFile")
    if model_file:
        module = import_model_file(model_dir, model_file)
        model = _single_module_class(module, model_file)()
        model.load_state_dict(_load_state_dict(serialized, device))
        return _finish(model, device)
    if serialized.endswith(".pt2"):
        return _finish(load_exported(serialized, device), device)
    return _finish(torch.jit.load(serialized, map_location=device), device)


def teach_export(cls: type) -> type:
    """Let a TorchServe `BaseHandler` subclass load this archive's torch.export `.pt2`.

    TorchServe 0.12's `BaseHandler.initialize` loads TorchScript `.pt`, eager weights, ONNX
    and AOT-compiled `.so`, and gives up on a `.pt2` with "No model weights could be loaded"
    after it has set the device and manifest. Wrapped here, `initialize` then loads the
    program with this module and finishes as TorchServe's does (label mapping, initialized).
    Where the handler's base loads `.pt2` itself (our compat layer), nothing is caught.
    """
    original = cls.initialize  # type: ignore[attr-defined]
    if getattr(original, "_jts_teaches_export", False):
        return cls

    def initialize(self: Any, context: Any) -> Any:
        try:
            return original(self, context)
        except RuntimeError as e:
            path = str(getattr(self, "model_pt_path", None) or "")
            if "No model weights could be loaded" not in str(e) or not path.endswith(".pt2"):
                raise
        model_dir = context.system_properties.get("model_dir")
        self.model = load_model(model_dir, getattr(self, "device", None))
        self.mapping = read_json(os.path.join(model_dir, "index_to_name.json"))
        self.initialized = True
        return None

    initialize._jts_teaches_export = True  # type: ignore[attr-defined]
    cls.initialize = initialize  # type: ignore[attr-defined]
    return cls
