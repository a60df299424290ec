"""``%torchserve deploy MODEL --name NAME``: archive, serve, and check the served answers."""

from __future__ import annotations

import argparse
from typing import Any

from ..deployment import Deployment, deploy
from ..parity import DEFAULT_TOLERANCE
from .model_options import add_model_arguments, model_kwargs
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Archive a model, serve it, and check the served answers match."


def add_arguments(q: Parser) -> None:
    add_model_arguments(q)
    q.add_argument("--workers", type=int, default=1, help="initial workers (default 1)")
    q.add_argument("--batch-size", type=int, default=1)
    q.add_argument("--max-batch-delay", type=int, default=100, metavar="MS")
    dev = q.add_mutually_exclusive_group()
    dev.add_argument("--gpu", dest="device", action="store_const", const="gpu")
    dev.add_argument("--cpu", dest="device", action="store_const", const="cpu")
    q.add_argument("--replace", action="store_true", help="replace a served name/version")
    q.add_argument("--no-parity", action="store_true", help="skip the parity check")
    q.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    q.add_argument("--response-timeout", type=float, metavar="S")
    q.add_argument("--x-test", metavar="EXPR", help="held-out inputs: evaluated on the served path")
    q.add_argument("--y-test", metavar="EXPR", help="their labels or targets")
    q.add_argument("--metric", metavar="EXPR", help="a function (y_true, y_pred) -> float")


def run(args: argparse.Namespace, user: UserNamespace) -> Deployment:
    model: Any = user.eval(args.model, "MODEL")
    return deploy(
        model,
        args.name,
        version=args.version,
        workers=args.workers,
        batch_size=args.batch_size,
        max_batch_delay=args.max_batch_delay,
        device=args.device or "auto",
        replace=args.replace,
        parity=not args.no_parity,
        tolerance=args.tolerance,
        response_timeout=args.response_timeout,
        x_test=user.eval(args.x_test, "--x-test"),
        y_test=user.eval(args.y_test, "--y-test"),
        metric=user.eval(args.metric, "--metric"),
        **model_kwargs(args, user),
    )
