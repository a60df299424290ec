"""``%torchserve explain NAME FILE|--data EXPR``: ask the handler for an explanation."""

from __future__ import annotations

import argparse
from typing import Any

from .. import api
from .namespace import UserNamespace
from .parsing import Parser
from .request_options import add_request_arguments, request_data

HELP = "Ask for an explanation."


def add_arguments(q: Parser) -> None:
    add_request_arguments(q)


def run(args: argparse.Namespace, user: UserNamespace) -> Any:
    data = request_data(args, user)
    return api.predict(args.name, data, args.version, args.content_type, explain=True)
