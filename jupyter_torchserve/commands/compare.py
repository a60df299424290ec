"""``%torchserve compare NAME V1 V2 --x-test X [--y-test Y]``: two versions, the same rows."""

from __future__ import annotations

import argparse

from ..comparison import Comparison, compare
from ..evaluation import DEFAULT_BATCH
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Send the same held-out rows to two versions: agreement, metrics, latency."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    q.add_argument("first", metavar="VERSION1")
    q.add_argument("second", metavar="VERSION2")
    q.add_argument("--x-test", metavar="EXPR", required=True, help="held-out inputs")
    q.add_argument("--y-test", metavar="EXPR", help="their labels or targets")
    q.add_argument("--metric", metavar="EXPR", help="a function (y_true, y_pred) -> float")
    q.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="rows per request")
    q.add_argument("--handler", help="image_classifier: send each row as that handler's image")
    q.add_argument("--handler-config", metavar="EXPR", help="the deploy's handler config")


def run(args: argparse.Namespace, user: UserNamespace) -> Comparison:
    return compare(
        args.name,
        args.first,
        args.second,
        user.eval(args.x_test, "--x-test"),
        user.eval(args.y_test, "--y-test"),
        handler=args.handler,
        handler_config=user.eval(args.handler_config, "--handler-config"),
        metric=user.eval(args.metric, "--metric"),
        batch_size=args.batch_size,
    )
