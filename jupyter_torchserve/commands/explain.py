"""``%torchserve explain NAME FILE|--data EXPR [--target N]``: an explanation, drawn."""

from __future__ import annotations

import argparse
from typing import Any

from .. import api
from .namespace import UserNamespace
from .parsing import Parser
from .request_options import add_request_arguments, request_data

HELP = "Explain a prediction: the input, a signed heatmap and an overlay (or coloured words)."


def add_arguments(q: Parser) -> None:
    add_request_arguments(q)
    q.add_argument("--target", type=int, help="the class to explain (default: the predicted one)")


def run(args: argparse.Namespace, user: UserNamespace) -> Any:
    data = request_data(args, user)
    return api.explain(args.name, data, args.version, args.content_type, args.target)
