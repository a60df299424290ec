"""``%torchserve scale NAME --workers N`` (or ``--min N --max M``)."""

from __future__ import annotations

import argparse

from IPython.core.error import UsageError

from .. import api
from ..display import Message
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Change the number of workers."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--workers", type=int, metavar="N", help="exactly N workers")
    g.add_argument("--min", type=int, metavar="N", help="min workers (with --max)")
    q.add_argument("--max", type=int, metavar="M")
    q.add_argument("--version")
    q.add_argument("--async", dest="asynchronous", action="store_true")


def run(args: argparse.Namespace, user: UserNamespace) -> Message:
    if args.workers is not None:
        lo, hi = args.workers, args.workers
    else:
        lo, hi = args.min, args.max if args.max is not None else args.min
    if args.workers is not None and args.max is not None:
        raise UsageError("use either --workers N or --min N --max M")
    return api.scale(args.name, lo, hi, version=args.version, synchronous=not args.asynchronous)
