"""``%torchserve describe NAME``: settings and workers of a model."""

from __future__ import annotations

import argparse

from .. import api
from ..display import ModelDescription
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Settings and workers of a model."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--version")
    g.add_argument("--all", action="store_true", help="every version")
    q.add_argument("--customized", action="store_true", help="include the handler's metadata")


def run(args: argparse.Namespace, user: UserNamespace) -> ModelDescription:
    version = "all" if args.all else args.version
    described = api.describe(args.name, version, customized=args.customized)
    if args.customized:  # a stored evaluation shows as the deploy showed it, picture included
        from ..evaluation import Evaluation

        for d in described.versions:
            report = (d.get("customizedMetadata") or {}).get("evaluation")
            if isinstance(report, dict):
                described.reports.append(Evaluation.from_json(report))
    return described
