"""``%torchserve bench NAME FILE|--data EXPR [--concurrency 1,8,32] [--workers 1,2,4] ...``."""

from __future__ import annotations

import argparse

from IPython.core.error import UsageError

from .. import api
from ..loadtest import PROTOCOLS
from ..loadtest_view import BenchResult
from .namespace import UserNamespace
from .parsing import Parser
from .request_options import add_request_arguments, request_data

HELP = "Load-test a model: req/s and latency per concurrency (and worker count)."


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,8,32, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers like 1,8,32, got {text!r}")
    return values


def add_arguments(q: Parser) -> None:
    add_request_arguments(q)
    q.add_argument(
        "--concurrency", type=_counts, default=[1, 8, 32], metavar="N,N", help="connections"
    )
    q.add_argument("--duration", type=float, default=10.0, metavar="S", help="seconds per level")
    q.add_argument("--requests", type=int, metavar="N", help="answers per level (not seconds)")
    q.add_argument("--protocol", choices=PROTOCOLS, default="torchserve")
    q.add_argument(
        "--workers", type=_counts, metavar="N,N", help="repeat at these worker counts (restored)"
    )
    q.add_argument("--slo-ms", type=float, metavar="MS", help="p99 target: choose a worker count")


def run(args: argparse.Namespace, user: UserNamespace) -> BenchResult:
    if args.requests is not None and args.requests < 1:
        raise UsageError("--requests must be positive")
    return api.bench(
        args.name,
        request_data(args, user),
        concurrency=args.concurrency,
        duration=args.duration,
        requests=args.requests,
        protocol=args.protocol,
        workers=args.workers,
        version=args.version,
        content_type=args.content_type,
        slo_ms=args.slo_ms,
    )
