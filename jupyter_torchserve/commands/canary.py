"""``%torchserve canary NAME [VERSION] --percent P | --off``: a share of the default route."""

from __future__ import annotations

import argparse

from IPython.core.error import UsageError

from .. import traffic
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Send a share of a model's default-route traffic to another version (or end it)."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    q.add_argument("version", metavar="VERSION", nargs="?", help="the canary version")
    how = q.add_mutually_exclusive_group()
    how.add_argument(
        "--percent", type=float, help="its share of requests naming no version (0 < P < 100)"
    )
    how.add_argument("--off", action="store_true", help="end the canary")


def run(args: argparse.Namespace, user: UserNamespace) -> traffic.CanarySplit:
    if args.off:
        return traffic.end_canary(args.name)
    if args.version is None and args.percent is None:
        return traffic.split(args.name)  # just show it
    if args.version is None or args.percent is None:
        raise UsageError("%torchserve canary: a canary needs both VERSION and --percent P")
    return traffic.canary(args.name, args.version, args.percent)
