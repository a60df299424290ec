"""An ArgumentParser for a magic: errors and ``--help`` must not end the kernel.

Why argparse (with ``error``/``exit`` turned into exceptions): users already know the
TorchServe command lines, ``--help`` comes for free at every level, and a typo prints the
usage with the error instead of killing the kernel (argparse's default ``sys.exit``) or
dumping a traceback.
"""

from __future__ import annotations

import argparse
import sys

from IPython.core.error import UsageError

PROG = "%torchserve"


class HelpShown(Exception):
    """argparse printed --help and wanted to exit."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting the process.

    The top-level parser has ``exit_on_error=False``; subcommand parsers keep argparse's
    default so that their errors go through :meth:`error` and show *their* usage.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr)
        raise HelpShown()
