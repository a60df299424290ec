"""``%torchserve predict NAME FILE|--data EXPR [--protocol v1|v2]``: send one request."""

from __future__ import annotations

import argparse
from typing import Any

from .. import api, payloads
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
        content_type = args.content_type
        if payloads.several_tensors(data):  # `--data "(a, b)"`: the served names, in order
            data = payloads.multi_input_json(data, _served_input_names(args))
            content_type = content_type or "application/json"
        return api.predict(args.name, data, args.version, content_type)
    return api.kserve_predict(args.name, data, args.protocol, version=args.version)


def _served_input_names(args: argparse.Namespace) -> list[str] | None:
    """The names the served version's schema gives its inputs (KServe v2 metadata): a tuple
    is sent by position under them; None when the engine does not say (input-0, ...)."""
    with api.engine_client(None) as c:
        try:
            meta = c.v2_metadata(args.name, args.version)
        except Exception:  # noqa: BLE001 - a TorchServe without v2 metadata: by position
            return None
    names = [str(i.get("name")) for i in meta.get("inputs") or [] if i.get("name")]
    return names or None
