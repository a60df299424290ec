"""``%torchserve start``: start the engine, or say which one already runs."""

from __future__ import annotations

import argparse

from .. import api, discovery
from ..display import EngineStatus
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Start the engine (or say which one is already running)."
_ADDRESSES = (
    "inference_address",
    "management_address",
    "metrics_address",
    "grpc_inference_port",
    "grpc_management_port",
    "model_store",
)


def add_arguments(q: Parser) -> None:
    q.add_argument("--inference-address")
    q.add_argument("--management-address")
    q.add_argument("--metrics-address")
    q.add_argument("--grpc-inference-port", type=int, metavar="PORT", help="serve gRPC inference")
    q.add_argument("--grpc-management-port", type=int, metavar="PORT")
    q.add_argument("--model-store", metavar="DIR")
    q.add_argument("--disable-token-auth", action="store_true")
    q.add_argument("--ts-config", metavar="FILE", help="a TorchServe config.properties")


def run(args: argparse.Namespace, user: UserNamespace) -> EngineStatus:
    config: dict[str, object] = {k: getattr(args, k) for k in _ADDRESSES if getattr(args, k)}
    if args.disable_token_auth:
        config["disable_token_authorization"] = True
    if args.ts_config:
        config["ts_config"] = args.ts_config
    info, started = api.start(**config)
    verb = "Started" if started else "Already running:"
    print(f"{verb} engine pid {info['pid']} — inference {info['inference_address']}")
    others = [i for i in discovery.find_engines() if int(i["pid"]) != int(info["pid"])]
    if others:  # several engines: say which one the next cells talk to, and how to change it
        print(
            f"This kernel now uses pid {info['pid']} ({len(others)} other engine"
            f"{'s' if len(others) > 1 else ''} running; `%torchserve use --pid N` switches)."
        )
    return api.status(info)
