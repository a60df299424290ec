"""``%torchserve unregister NAME [--version V]``: remove a model version."""

from __future__ import annotations

import argparse

from .. import api
from ..display import Message
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Remove a model version (the default one without --version)."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    q.add_argument("--version")


def run(args: argparse.Namespace, user: UserNamespace) -> Message:
    return api.unregister(args.name, args.version)
