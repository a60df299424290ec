"""``%torchserve logs NAME``: the tail of a model's worker log."""

from __future__ import annotations

import argparse

from .. import api
from ..display import Logs
from .namespace import UserNamespace
from .parsing import Parser

HELP = "The tail of a model's worker log."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    q.add_argument("--tail", type=int, default=200, metavar="N")


def run(args: argparse.Namespace, user: UserNamespace) -> Logs:
    return api.logs(args.name, tail=args.tail)
