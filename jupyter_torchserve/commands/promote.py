"""``%torchserve promote NAME VERSION``: the version becomes the default; its canary ends."""

from __future__ import annotations

import argparse

from .. import traffic
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Make a version (usually the canary) the default, ending the canary."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    q.add_argument("version", metavar="VERSION")


def run(args: argparse.Namespace, user: UserNamespace) -> traffic.CanarySplit:
    return traffic.promote(args.name, args.version)
