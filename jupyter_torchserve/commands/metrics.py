"""``%torchserve metrics``: the engine's Prometheus metrics, as a table or as the raw page."""

from __future__ import annotations

import argparse

from .. import api
from ..display import Metrics
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Prometheus metrics of the engine."


def add_arguments(q: Parser) -> None:
    q.add_argument("--model", metavar="NAME", help="only this model's samples")
    q.add_argument("--name", action="append", metavar="FAMILY", help="only these families")
    q.add_argument("--raw", action="store_true", help="the Prometheus text as it is")


def run(args: argparse.Namespace, user: UserNamespace) -> Metrics | None:
    m = api.metrics(args.name, model=args.model)
    if args.raw:
        print(m.text)
        return None
    return m
