"""The request options that ``predict`` and ``explain`` share: a FILE or ``--data EXPR``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError

from .namespace import UserNamespace
from .parsing import Parser


def add_request_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    q.add_argument("file", metavar="FILE", nargs="?", help="a file to send as the body")
    q.add_argument("--data", metavar="EXPR", help="an expression: tensor, bytes, JSON, text")
    q.add_argument("--version")
    q.add_argument("--content-type")


def request_data(args: argparse.Namespace, user: UserNamespace) -> Any:
    """The body to send: the FILE as a path (the client reads and types it), or the value."""
    if (args.file is None) == (args.data is None):
        raise UsageError(f"{args.command} needs a FILE or --data EXPR (one of them)")
    if args.file is not None:
        path = Path(args.file).expanduser()
        if not path.is_file():
            raise UsageError(f"no such file: {args.file}")
        return path
    return user.eval(args.data, "--data")
