"""Which module a handler name loads from an unpacked archive, without importing it.

Light on purpose (os and the handler names only): the worker runtime (`service`) imports
what these names resolve to, and the engine's main process, which never imports torch,
asks `served_builtin` which built-in serves a version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from .names import BUILTIN_HANDLERS


def builtin_dir() -> str:
    """Directory holding our standalone built-in handlers (``tensor.py``, ``jts_base.py``, ...)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")


def local_module_names(model_dir: str) -> set[str]:
    """Top-level module names an archive provides (its ``*.py`` files and packages)."""
    names: set[str] = set()
    for entry in os.listdir(model_dir):
        full = os.path.join(model_dir, entry)
        if entry.endswith(".py") and os.path.isfile(full):
            names.add(entry[:-3])
        elif os.path.isfile(os.path.join(full, "__init__.py")):
            names.add(entry)
    return names


def split_handler(handler: str) -> tuple[str, str | None]:
    """``dir/file.py:fn`` -> (``file``, ``fn``): the module name and the entry point."""
    module_part, _, function_name = handler.partition(":")
    module_name = module_part.replace("\\", "/").split("/")[-1]
    if module_name.endswith(".py"):
        module_name = module_name[:-3]
    return module_name, (function_name or None)


@dataclass(frozen=True)
class HandlerSource:
    """Where the worker finds a handler module, and which built-in that code is.

    `where` is "archive" (a file of the unpacked archive), "builtin" (our built-in, loaded
    by path so it never collides with a user module called e.g. ``tensor``) or "path" (an
    ordinary import from ``sys.path``, such as an installed package). `builtin` names the
    built-in the code is: set for "builtin" and for an archive's ``jts_<name>.py``, the
    copy of built-in ``<name>`` the archiver puts there; None for anyone's own code."""

    where: Literal["archive", "builtin", "path"]
    builtin: str | None


def locate_handler(model_dir: str, module_name: str) -> HandlerSource:
    """The rule the worker loads by (`service._import_handler_module`) and the engine's
    main process describes by (`served_builtin`): the archive's file of that name first,
    then the built-in of that name, then ``sys.path``."""
    short = module_name.removeprefix("jts_")
    if module_name in local_module_names(model_dir):
        copied = module_name.startswith("jts_") and os.path.isfile(
            os.path.join(builtin_dir(), f"{short}.py")
        )
        return HandlerSource("archive", short if copied else None)
    if short in BUILTIN_HANDLERS:
        return HandlerSource("builtin", short)
    return HandlerSource("path", None)


def served_builtin(model_dir: str, handler: str) -> str | None:
    """The built-in that `handler` runs from the unpacked archive in `model_dir`, or None
    for the archive's own code. The engine asks it for a handler given at registration, so
    its KServe envelopes follow the handler that really serves (engine/inference/kserve.py)."""
    return locate_handler(model_dir, split_handler(handler)[0]).builtin
