"""``%torchserve set-default NAME VERSION``: the version the unversioned routes answer with."""

from __future__ import annotations

import argparse

from .. import api
from ..display import Message
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Make a version the default one."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    q.add_argument("version", metavar="VERSION")


def run(args: argparse.Namespace, user: UserNamespace) -> Message:
    return api.set_default(args.name, args.version)
