"""``%torchserve archive MODEL --name NAME``: write a pre-flight checked .mar, serve nothing."""

from __future__ import annotations

import argparse

from ..display import Message
from .model_options import add_model_arguments, model_kwargs
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Write a .mar archive (pre-flight checked) without serving it."


def add_arguments(q: Parser) -> None:
    add_model_arguments(q)
    q.add_argument("--export-path", default=".", metavar="DIR")
    q.add_argument("--force", action="store_true", help="overwrite an existing archive")
    q.add_argument("--no-preflight", action="store_true")


def run(args: argparse.Namespace, user: UserNamespace) -> Message:
    from ..archive import archive

    kw = model_kwargs(args, user)
    example = kw.pop("example")
    result = archive(
        user.eval(args.model, "MODEL"),
        args.name,
        version=args.version or "1.0",
        example_inputs=example,
        export_path=args.export_path,
        force=args.force,
        preflight=not args.no_preflight,
        **kw,
    )
    diff = result.max_abs_diff
    check = f"pre-flight max abs diff {diff:.3g}" if diff is not None else "no pre-flight"
    failed = [f"{a.format}: {a.error}" for a in result.attempts if not getattr(a, "ok", True)]
    text = f"Archived {args.name} → {result.path} (format {result.format}; {check})"
    if failed:
        text += "\nformats tried first: " + "; ".join(failed)
    return Message(text, result)
