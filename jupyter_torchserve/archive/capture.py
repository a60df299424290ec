"""Capture the Python source a model (or handler) needs, so the archive runs without the notebook.

Why: a class defined in a notebook cell lives in ``__main__``; a serving worker that unpickles
it fails with ``Can't get attribute 'Net' on <module '__main__'>``. Instead we write the class
and, recursively, every class, function and constant from the notebook it refers to into a
plain module (``model.py``), with ``import`` lines for what comes from installed packages.

How: free global names are found with :mod:`symtable` (so a local ``x`` in ``forward`` is never
confused with a notebook variable ``x``). Class source is found through the code objects of
its methods and the cell text IPython keeps in :mod:`linecache`, because on Python < 3.13
``inspect.getsource`` cannot find classes whose module has no ``__file__`` (Jupyter's
``__main__``).
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import linecache
import os
import site
import symtable
import sys
import sysconfig
import textwrap
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ArchiveError

#: Package holding the built-in handler files; objects from there map to archive modules.
BUILTIN_PACKAGE = "jupyter_torchserve.handlers.builtin"
_IMPORTABLE_ROOTS = {"torch", "ts", "numpy", "PIL"}


class SourceCaptureError(ArchiveError):
    """The source of something the model needs cannot be written into the archive."""


def builtin_archive_module(module_name: str) -> str:
    """Archive module name of a built-in handler module: ``jts_base`` stays, ``tensor`` -> ``jts_tensor``."""
    stem = module_name.rsplit(".", 1)[-1]
    return stem if stem.startswith("jts_") else f"jts_{stem}"


def _builtin_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "handlers" / "builtin"


def builtin_module_of(module_name: str) -> str | None:
    """Archive module name when ``module_name`` is one of our built-in handler files.

    Recognised by package name (``jupyter_torchserve.handlers.builtin.tensor``) or by file
    location, because workers and notebooks load them as top-level ``jts_*`` modules.
    """
    if module_name.startswith(BUILTIN_PACKAGE + "."):
        return builtin_archive_module(module_name)
    module = sys.modules.get(module_name)
    filename = getattr(module, "__file__", None)
    if filename and Path(filename).resolve().parent == _builtin_dir():
        return builtin_archive_module(Path(filename).stem)
    return None


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[Path, ...]:
    """Where installed code lives (stdlib, site-packages): computed once, it is slow."""
    paths = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(Path(p).resolve())
    for p in [*site.getsitepackages(), site.getusersitepackages()]:
        paths.add(Path(p).resolve())
    return tuple(sorted(paths))


def is_local_module(module_name: str) -> bool:
    """True when a module is the notebook or a file next to it, not an installed package.

    Such modules are not importable in a serving worker, so their objects are captured by source.
    """
    if module_name in ("__main__", "__mp_main__") or module_name.startswith("__main__"):
        return True
    root = module_name.split(".", 1)[0]
    if root in _IMPORTABLE_ROOTS or root == "jupyter_torchserve":
        return False
    if builtin_module_of(module_name):
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return False
    filename = getattr(module, "__file__", None)
    if not filename:  # built-in/extension-less modules are importable; a bare module is not
        return module_name not in sys.builtin_module_names and not hasattr(module, "__path__")
    path = Path(filename).resolve()
    return not any(path.is_relative_to(d) for d in _library_dirs())


def _is_literal(value: object) -> bool:
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None))):
        try:
            return ast.literal_eval(repr(value)) == value or value != value  # NaN
        except (ValueError, SyntaxError):
            return False
    if isinstance(value, (tuple, list, set, frozenset)):
        return not isinstance(value, frozenset) and all(_is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(_is_literal(k) and _is_literal(v) for k, v in value.items())
    return False


def _functions_of(cls: type) -> Iterable[types.FunctionType]:
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        value = inspect.unwrap(value) if callable(value) else value
        if isinstance(value, types.FunctionType):
            yield value


def _node_span(node: ast.AST) -> tuple[int, int]:
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    return start, node.end_lineno or node.lineno


def _class_from_lines(cls: type, lines: list[str], line_hint: int | None) -> str | None:
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError:
        return None
    found: list[tuple[int, int]] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            start, end = _node_span(node)
            if line_hint is None or start <= line_hint <= end:
                found.append((start, end))
    if not found:
        return None
    start, end = found[-1]
    return "".join(lines[start - 1 : end])


def class_source(cls: type) -> str:
    """Source text of a module-level class, also when it was defined in a notebook cell."""
    if "<locals>" in cls.__qualname__ or "." in cls.__qualname__:
        raise SourceCaptureError(
            f"class {cls.__qualname__} is defined inside a function or another class; "
            "define it at the top level of a cell so its source can be captured"
        )
    # Prefer the cell/file that holds the live class's methods: it is the latest definition.
    for fn in _functions_of(cls):
        if fn.__qualname__.split(".")[0] != cls.__name__:
            continue  # a function assigned into the class body from elsewhere
        filename = fn.__code__.co_filename
        lines = linecache.getlines(filename, fn.__globals__)
        text = _class_from_lines(cls, lines, fn.__code__.co_firstlineno) if lines else None
        if text:
            return textwrap.dedent(text)
    try:
        return textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        pass
    # A class without methods of its own: search the cells IPython cached, newest last.
    for filename in reversed(list(linecache.cache)):
        if "ipython-input" in filename or "ipykernel" in filename:
            text = _class_from_lines(cls, linecache.getlines(filename), None)
            if text:
                return textwrap.dedent(text)
    raise SourceCaptureError(
        f"cannot find the source of class {cls.__qualname__} (module {cls.__module__}); "
        "define it in a notebook cell or a .py file"
    )


def function_source(fn: types.FunctionType) -> str:
    """Source text of a module-level function (notebook cells included, via linecache)."""
    if fn.__name__ == "<lambda>":
        raise SourceCaptureError(
            f"lambda in {fn.__module__} cannot be captured by source; define it with 'def'"
        )
    if "<locals>" in fn.__qualname__:
        raise SourceCaptureError(
            f"function {fn.__qualname__} is defined inside another function; "
            "define it at the top level of a cell so its source can be captured"
        )
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise SourceCaptureError(
            f"cannot find the source of function {fn.__qualname__}: {exc}"
        ) from exc


def free_globals(source: str, own_name: str) -> list[str]:
    """Names a definition looks up in its module's globals (not locals, not parameters)."""
    table = symtable.symtable(source, "<captured>", "exec")
    names: list[str] = []
    stack = [table]
    while stack:
        t = stack.pop()
        for sym in t.get_symbols():
            name = sym.get_name()
            if sym.is_referenced() and sym.is_global() and name != own_name and name not in names:
                names.append(name)
        stack.extend(t.get_children())
    return names


def _globals_of(obj: object) -> dict[str, Any]:
    if isinstance(obj, types.FunctionType):
        return obj.__globals__
    if isinstance(obj, type):
        for fn in _functions_of(obj):
            if fn.__qualname__.split(".")[0] == obj.__name__:
                return fn.__globals__
        module = sys.modules.get(obj.__module__)
        if module is not None:
            return vars(module)
    return {}


@dataclass
class CapturedModule:
    """The text of a generated module and what it needs beside it in the archive."""

    source: str
    definitions: list[str]
    classes: list[str]
    builtin_modules: set[str] = field(default_factory=set)


class SourceCapture:
    """Collects definitions and import lines, dependencies first, into one module."""

    def __init__(self) -> None:
        self._imports: dict[str, str] = {}  # bound name -> import line
        self._constants: dict[str, str] = {}  # bound name -> assignment line
        self._defs: list[tuple[str, str]] = []  # (name, source), dependencies first
        self._aliases: list[str] = []
        self._bound: dict[str, object] = {}
        self._in_progress: set[int] = set()
        self._done: set[int] = set()
        self.classes: list[str] = []
        self.builtin_modules: set[str] = set()

    # -- public -------------------------------------------------------------------------
    def add(self, obj: object, name: str | None = None) -> str:
        """Capture a class or function (and what it needs); return the name it is bound to."""
        bound = name or getattr(obj, "__name__", None)
        if not isinstance(obj, (type, types.FunctionType)) or not bound:
            raise SourceCaptureError(f"cannot capture {obj!r}: not a class or function")
        self._bind_definition(bound, obj, owner="(root)")
        return bound

    def render(self, header: str = "") -> CapturedModule:
        """Assemble the module: docstring, imports, constants, definitions, aliases."""
        parts: list[str] = []
        if header:
            parts.append(f'"""{header}"""\n')
        if self._imports:
            parts.append("\n".join(sorted(set(self._imports.values()))) + "\n")
        if self._constants:
            parts.append("\n".join(self._constants.values()) + "\n")
        parts.extend(src.rstrip() + "\n" for _, src in self._defs)
        if self._aliases:
            parts.append("\n".join(self._aliases) + "\n")
        return CapturedModule(
            source="\n\n".join(parts),
            definitions=[n for n, _ in self._defs],
            classes=list(self.classes),
            builtin_modules=set(self.builtin_modules),
        )

    # -- internals ----------------------------------------------------------------------
    def _claim(self, name: str, obj: object) -> bool:
        """Reserve ``name`` for ``obj``; False when already bound to it, error on a clash."""
        if name in self._bound:
            if self._bound[name] is obj or (
                not isinstance(obj, (type, types.FunctionType, types.ModuleType))
                and self._bound[name] == obj
            ):
                return False
            raise SourceCaptureError(
                f"the name {name!r} refers to two different objects in the captured code; "
                "rename one of them"
            )
        self._bound[name] = obj
        return True

    def _bind_definition(self, name: str, obj: type | types.FunctionType, owner: str) -> None:
        if id(obj) in self._in_progress or id(obj) in self._done:
            if name != obj.__name__ and self._claim(name, obj):
                self._aliases.append(f"{name} = {obj.__name__}")
            return
        self._in_progress.add(id(obj))
        try:
            source = class_source(obj) if isinstance(obj, type) else function_source(obj)
            glb = _globals_of(obj)
            label = getattr(obj, "__qualname__", name)
            for dep in free_globals(source, obj.__name__):
                self._resolve(dep, glb, owner=label)
        finally:
            self._in_progress.discard(id(obj))
        self._done.add(id(obj))
        if self._claim(obj.__name__, obj):
            self._defs.append((obj.__name__, source))
            if isinstance(obj, type):
                self.classes.append(obj.__name__)
        if name != obj.__name__ and self._claim(name, obj):
            self._aliases.append(f"{name} = {obj.__name__}")

    def _resolve(self, name: str, glb: dict[str, Any], owner: str) -> None:
        if name not in glb:
            return  # a builtin, or a name never defined (dead code); preflight will tell
        value = glb[name]
        if name in vars(builtins) and value is vars(builtins)[name]:
            return
        if isinstance(value, types.ModuleType):
            self._bind_module(name, value, owner)
        elif isinstance(value, (type, types.FunctionType)):
            module = getattr(value, "__module__", None) or ""
            if is_local_module(module):
                self._bind_definition(name, value, owner)
            else:
                self._bind_import(name, value, module, owner)
        elif callable(value) and hasattr(value, "__module__") and hasattr(value, "__qualname__"):
            self._bind_import(name, value, value.__module__ or "", owner)
        elif isinstance(value, (torch.dtype, torch.device)):
            if self._claim(name, value):
                self._bind_module("torch", torch, owner)
                self._constants[name] = f"{name} = {value!r}"
                if isinstance(value, torch.device):
                    self._constants[name] = f"{name} = torch.device({str(value)!r})"
        elif _is_literal(value):
            if self._claim(name, value):
                self._constants[name] = f"{name} = {value!r}"
        else:
            raise SourceCaptureError(
                f"{owner} uses the notebook global {name!r}, a {type(value).__name__}, which "
                "cannot be written as source; pass it as a constructor argument, or store it "
                "on the model (attribute, parameter or buffer)"
            )

    def _worker_module(self, module: str, what: str, owner: str, hint: str = "") -> str:
        """The name a serving worker imports ``module`` by: the built-in handlers' package
        for their notebook-side copy (noted in ``builtin_modules``, so the archive ships it),
        else ``module`` itself; jupyter_torchserve is refused, as no worker has it."""
        builtin = builtin_module_of(module)
        if builtin:
            self.builtin_modules.add(builtin)
            return builtin
        if module.split(".")[0] == "jupyter_torchserve":
            raise SourceCaptureError(
                f"{owner} uses {what}; archives must not import jupyter_torchserve{hint}"
            )
        return module

    def _bind_module(self, name: str, module: types.ModuleType, owner: str) -> None:
        modname = self._worker_module(module.__name__, f"the module {module.__name__}", owner)
        if not self._claim(name, module):
            return
        if modname == name:
            self._imports[name] = f"import {modname}"
        elif "." in modname and modname.rsplit(".", 1)[1] == name:
            self._imports[name] = f"from {modname.rsplit('.', 1)[0]} import {name}"
        else:
            self._imports[name] = f"import {modname} as {name}"

    def _bind_import(self, name: str, value: object, module: str, owner: str) -> None:
        qualname = getattr(value, "__qualname__", getattr(value, "__name__", ""))
        hint = " (handlers may subclass the built-in ones)"
        target = self._worker_module(module, f"{qualname} from {module}", owner, hint)
        if target not in self.builtin_modules:  # a built-in ships with the archive: no check
            try:
                found = importlib.import_module(module)
                for part in qualname.split("."):
                    found = getattr(found, part)
            except (ImportError, AttributeError):
                found = None
            if found is not value:
                raise SourceCaptureError(
                    f"{owner} uses {name!r} ({qualname} from module {module!r}), which cannot "
                    "be imported by that name in a serving worker"
                )
        if "." in qualname:
            raise SourceCaptureError(f"{owner} uses the nested object {qualname} from {module}")
        if not self._claim(name, value):
            return
        line = f"from {target} import {qualname}"
        self._imports[name] = line if qualname == name else f"{line} as {name}"


def capture_module(roots: Iterable[object], header: str = "") -> CapturedModule:
    """Capture several roots (e.g. a model class and its submodule classes) into one module."""
    capture = SourceCapture()
    for root in roots:
        capture.add(root)
    return capture.render(header)


def check_generated(source: str, filename: str) -> None:
    """Fail early, with the generated file's line, if the captured text is not valid Python."""
    try:
        compile(source, filename, "exec")
    except SyntaxError as exc:
        raise SourceCaptureError(
            f"captured source {os.path.basename(filename)} does not compile: {exc}"
        ) from exc
