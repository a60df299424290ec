"""``%torchserve status [--live]``: the engine, its GPUs and its models."""

from __future__ import annotations

import argparse

from .. import api
from ..display import EngineStatus
from .namespace import UserNamespace
from .parsing import Parser

HELP = "The engine, its GPUs and its models."


def add_arguments(q: Parser) -> None:
    q.add_argument("--live", action="store_true", help="keep refreshing (does not block)")
    q.add_argument("--interval", type=float, default=2.0, metavar="S")
    q.add_argument("--duration", type=float, default=600.0, metavar="S")


def run(args: argparse.Namespace, user: UserNamespace) -> EngineStatus | None:
    if args.live:
        from ..widgets import LiveStatus

        live = LiveStatus(api.status, interval=args.interval, duration=args.duration).show()
        user.ns["_torchserve_live"] = live  # so it can be stopped from code
        return None
    return api.status()
