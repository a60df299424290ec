"""``%torchserve``: the one-line notebook face of the engine.

Every command is a module of :mod:`jupyter_torchserve.commands` (its options and a runner
that calls :mod:`jupyter_torchserve.api`, which scripts and tests use directly); the table
below puts them in the order ``--help`` lists them. Errors meant for the user are
:class:`~jupyter_torchserve.api.TorchServeError` (shown by IPython as one clean message) or
IPython's ``UsageError`` for a bad command line.
"""

from __future__ import annotations

import argparse
import shlex
from types import ModuleType
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from . import api
from .commands import (
    archive,
    bench,
    canary,
    compare,
    deploy,
    describe,
    explain,
    export,
    list_models,
    logs,
    metrics,
    predict,
    promote,
    scale,
    set_default,
    start,
    status,
    stop,
    unregister,
    use,
)
from .commands.namespace import UserNamespace
from .commands.parsing import PROG, HelpShown, Parser

#: ``%torchserve COMMAND`` -> the module with its ``HELP``, ``add_arguments`` and ``run``.
COMMANDS: dict[str, ModuleType] = {
    "deploy": deploy,
    "archive": archive,
    "start": start,
    "use": use,
    "stop": stop,
    "status": status,
    "list": list_models,
    "describe": describe,
    "scale": scale,
    "predict": predict,
    "explain": explain,
    "bench": bench,
    "logs": logs,
    "metrics": metrics,
    "compare": compare,
    "set-default": set_default,
    "canary": canary,
    "promote": promote,
    "unregister": unregister,
    "export": export,
}


def build_parser() -> Parser:
    """The whole command line; kept separate so tests and docs can inspect it."""
    p = Parser(
        prog=PROG,
        exit_on_error=False,
        description="Serve PyTorch models from this notebook through a local, "
        "TorchServe-compatible engine.",
        epilog=f"Run `{PROG} COMMAND --help` for the options of a command.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP, description=command.HELP))
    return p


@magics_class
class TorchServeMagics(Magics):
    """Parses the line and hands it to its command's ``run``."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.parser = build_parser()

    @line_magic
    def torchserve(self, line: str) -> Any:
        """Serve PyTorch models: `%torchserve --help` lists the commands."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{self.parser.format_usage()}{PROG}: error: {exc}") from None
        try:
            args = self.parser.parse_args(argv)
        except HelpShown:
            return None
        except argparse.ArgumentError as exc:
            raise UsageError(f"{self.parser.format_usage()}{PROG}: error: {exc}") from None
        if not args.command:
            self.parser.print_help()
            return None
        user = UserNamespace(self.shell.user_ns if self.shell is not None else None)
        with api.user_errors(UsageError):
            return COMMANDS[args.command].run(args, user)


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%torchserve`` (``%load_ext jupyter_torchserve`` or ipython_config.py).

    It also makes ``ts`` importable (our compat tree, only when the real ``torchserve`` is
    absent): writing a ``BaseHandler`` subclass in a cell is what a TorchServe user does first.
    """
    from .handlers.compat import ensure_ts_importable

    ipython.register_magics(TorchServeMagics)
    ensure_ts_importable()


def unload_ipython_extension(ipython: Any) -> None:  # pragma: no cover - nothing to undo
    """Magics stay registered until the shell ends; the engine keeps running on purpose."""
