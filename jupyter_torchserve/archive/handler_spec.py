"""Resolve the ``handler`` argument of ``archive()`` into files for the archive.

A handler may be a built-in name, a path to a ``.py`` file (optionally ``path.py:function``),
or a class / function / namespace of functions defined in the notebook. Whatever it is, the
archive must carry everything needed to run it (docs/architecture.md §1): built-in handlers
are copied in as ``jts_<name>.py`` beside their standalone ``jts_base.py`` and
``jts_model_loader.py``, notebook code is captured by source like the model.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..handlers.names import BUILTIN_HANDLERS, DEFAULT_HANDLER
from .capture import SourceCapture, check_generated

CAPTURED_HANDLER_FILE = "handler.py"
_SUPPORT_FILES = ("jts_base", "jts_model_loader")
_HOOKS = ("initialize", "preprocess", "inference", "postprocess")


def builtin_dir() -> Path:
    """Directory of the built-in handler sources (``jupyter_torchserve/handlers/builtin``)."""
    return Path(__file__).resolve().parent.parent / "handlers" / "builtin"


@dataclass
class HandlerFiles:
    """What the handler adds to the archive and what the manifest says about it."""

    manifest_handler: str
    files: dict[str, bytes] = field(default_factory=dict)  # archive name -> contents
    builtin: str | None = None


def _read_builtin(stem: str) -> bytes:
    path = builtin_dir() / f"{stem}.py"
    if not path.is_file():
        from .errors import ArchiveError

        raise ArchiveError(f"built-in handler file {path} is missing from this installation")
    return path.read_bytes()


def _add_support(files: dict[str, bytes], modules: set[str] | tuple[str, ...]) -> None:
    """Copy the standalone support modules (and any jts_* module captured code imports)."""
    for module in dict.fromkeys([*_SUPPORT_FILES, *sorted(modules)]):
        if module in _SUPPORT_FILES:
            files[f"{module}.py"] = _read_builtin(module)
        else:  # jts_<name> -> builtin/<name>.py
            files[f"{module}.py"] = _read_builtin(module.removeprefix("jts_"))


def _unknown(handler: str) -> ValueError:
    return ValueError(
        f"unknown handler {handler!r}: use a built-in handler ({', '.join(BUILTIN_HANDLERS)}), "
        "a path to a .py file (optionally 'file.py:function'), or a handler class or "
        "function defined in the notebook"
    )


def _one_class_name(source: bytes, stem: str) -> str:
    names = [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    if len(names) != 1:
        from .errors import ArchiveError

        raise ArchiveError(f"built-in handler {stem}.py must define one class, found {names}")
    return names[0]


def resolve_handler(handler: object) -> HandlerFiles:
    """Turn the user's ``handler`` argument into archive files and the manifest entry."""
    if handler is None:
        handler = DEFAULT_HANDLER
    if isinstance(handler, str):
        return _from_string(handler)
    if isinstance(handler, Path):
        return _from_string(str(handler))
    if isinstance(handler, type) or isinstance(handler, types.FunctionType):
        return _captured(handler)
    hooks = _hooks_of(handler)
    if hooks:
        return _from_hooks(hooks)
    raise TypeError(
        f"handler must be a built-in name, a .py path, a class or a function, not "
        f"{type(handler).__name__}"
    )


def _from_string(handler: str) -> HandlerFiles:
    if handler in BUILTIN_HANDLERS:
        files: dict[str, bytes] = {}
        _add_support(files, {f"jts_{handler}"})
        return HandlerFiles(f"jts_{handler}.py", files, builtin=handler)
    path_text, _, function = handler.partition(":")
    path = Path(path_text).expanduser()
    if path.suffix == ".py" or path.is_file():
        if not path.is_file():
            raise ValueError(f"handler file {path} does not exist")
        files = {}
        _add_support(files, ())
        files[path.name] = path.read_bytes()
        return HandlerFiles(path.name + (f":{function}" if function else ""), files)
    raise _unknown(handler)


def _captured(obj: type | types.FunctionType) -> HandlerFiles:
    capture = SourceCapture()
    capture.add(obj)
    module = capture.render(
        f"Handler {obj.__name__}, captured from the notebook by jupyter_torchserve."
    )
    files: dict[str, bytes] = {}
    _add_support(files, module.builtin_modules)
    source = module.source
    if isinstance(obj, type):
        if len(module.classes) > 1:
            # TorchServe requires exactly one class *defined* in the handler module: keep the
            # captured code in a support module and define a thin subclass here.
            files["jts_handler_impl.py"] = source.encode()
            source = (
                f'"""Handler entry point; the captured code is in jts_handler_impl.py."""\n\n'
                f"from jts_handler_impl import {obj.__name__} as _Captured\n\n\n"
                f"class {obj.__name__}(_Captured):\n    pass\n"
            )
        # TorchServe's own BaseHandler cannot load a torch.export archive: ship the loader
        source += (
            "\n\nimport jts_model_loader as _jts_model_loader\n\n"
            f"_jts_model_loader.teach_export({obj.__name__})\n"
        )
    elif obj.__name__ != "handle":
        source += f"\n\nhandle = {obj.__name__}\n"
    check_generated(source, CAPTURED_HANDLER_FILE)
    files[CAPTURED_HANDLER_FILE] = source.encode()
    return HandlerFiles(CAPTURED_HANDLER_FILE, files)


def _hooks_of(obj: object) -> dict[str, Callable[..., object]]:
    if isinstance(obj, Mapping):
        items = dict(obj)
    elif isinstance(obj, types.SimpleNamespace | types.ModuleType):
        items = vars(obj)
    else:
        return {}
    hooks = {k: v for k, v in items.items() if k in (*_HOOKS, "handle") and callable(v)}
    if set(items) - set(hooks) - {"__name__", "__doc__"} and isinstance(obj, Mapping):
        raise ValueError(
            f"handler dict keys must be among {(*_HOOKS, 'handle')}, got {sorted(items)}"
        )
    return hooks


def _from_hooks(hooks: dict[str, Callable[..., object]]) -> HandlerFiles:
    """Plain ``preprocess``/``inference``/``postprocess`` functions on top of the tensor handler.

    Each function is called with the same arguments as TorchServe's method of that name,
    without ``self`` (``preprocess(data)``, ``postprocess(data)``, ``initialize(context)``).
    """
    if "handle" in hooks:
        fn = hooks["handle"]
        if not isinstance(fn, types.FunctionType):
            raise TypeError("handler 'handle' must be a function defined with def")
        return _captured(fn)
    base_source = _read_builtin(DEFAULT_HANDLER)
    base_class = _one_class_name(base_source, DEFAULT_HANDLER)
    capture = SourceCapture()
    bound = {}
    for hook, fn in hooks.items():
        if not isinstance(fn, types.FunctionType):
            raise TypeError(f"handler hook {hook!r} must be a function defined with def")
        bound[hook] = capture.add(fn)
    module = capture.render("Handler hooks captured from the notebook by jupyter_torchserve.")
    methods = "\n".join(
        f"    def {hook}(self, *args):\n        return {name}(*args)\n"
        for hook, name in bound.items()
    )
    source = (
        module.source
        + f"\n\nfrom jts_{DEFAULT_HANDLER} import {base_class} as _Base\n\n\n"
        + "class Handler(_Base):\n"
        + '    """Tensor handler with notebook hooks."""\n\n'
        + methods
    )
    if module.classes:
        files: dict[str, bytes] = {"jts_handler_impl.py": module.source.encode()}
        names = ", ".join(sorted(set(bound.values())))
        source = (
            f"from jts_handler_impl import {names}\n"
            f"from jts_{DEFAULT_HANDLER} import {base_class} as _Base\n\n\n"
            "class Handler(_Base):\n"
            '    """Tensor handler with notebook hooks."""\n\n' + methods
        )
    else:
        files = {}
    _add_support(files, {f"jts_{DEFAULT_HANDLER}", *module.builtin_modules})
    check_generated(source, CAPTURED_HANDLER_FILE)
    files[CAPTURED_HANDLER_FILE] = source.encode()
    return HandlerFiles(CAPTURED_HANDLER_FILE, files)
