"""``%torchserve use``: pin this kernel to one of several running engines."""

from __future__ import annotations

import argparse

from .. import api
from ..display import EngineStatus
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Pin this kernel to one running engine (by pid, port or management address)."


def add_arguments(q: Parser) -> None:
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--pid", type=int)
    which.add_argument("--port", type=int, help="any of its inference/management/metrics ports")
    which.add_argument("--management-address", metavar="URL")


def run(args: argparse.Namespace, user: UserNamespace) -> EngineStatus:
    info = api.use(args.pid, args.port, args.management_address)
    print(f"Using engine pid {info['pid']} — inference {info['inference_address']}")
    return api.status(info)
