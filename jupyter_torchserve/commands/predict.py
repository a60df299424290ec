"""``%torchserve predict NAME FILE|--data EXPR [--protocol v1|v2]``: send one request."""

from __future__ import annotations

import argparse
from typing import Any

from .. import api
from .namespace import UserNamespace
from .parsing import Parser
from .request_options import add_request_arguments, request_data

HELP = "Send one request."


def add_arguments(q: Parser) -> None:
    add_request_arguments(q)
    q.add_argument(
        "--protocol",
        choices=("torchserve", "v1", "v2"),
        default="torchserve",
        help="torchserve (/predictions), KServe v1 or v2",
    )


def run(args: argparse.Namespace, user: UserNamespace) -> Any:
    data = request_data(args, user)
    if args.protocol == "torchserve":
        return api.predict(args.name, data, args.version, args.content_type)
    return api.kserve_predict(args.name, data, args.protocol, version=args.version)
