"""The MODEL options that ``deploy`` and ``archive`` share, and the keywords they become."""

from __future__ import annotations

import argparse
from typing import Any

from .namespace import UserNamespace
from .parsing import Parser


def add_model_arguments(q: Parser) -> None:
    q.add_argument("model", metavar="MODEL", help="a torch.nn.Module in the namespace")
    q.add_argument("--name", required=True, help="model name (TorchServe's rules)")
    q.add_argument("--version", help="model version (default 1.0)")
    q.add_argument(
        "--handler",
        help="a built-in handler (tensor, image_classifier, image_segmenter, "
        "object_detector, text_classifier), a handler .py file, or a name in the "
        "namespace (a handler class, or a dict of preprocess/postprocess functions)",
    )
    q.add_argument("--example", metavar="EXPR", help="an example input (expression)")
    q.add_argument(
        "--format",
        default="auto",
        help="auto | export | torchscript | eager | onnx (asked for only)",
    )
    q.add_argument(
        "--extra-files", metavar="EXPR", help="dict {file name: content or path} (expression)"
    )
    q.add_argument(
        "--handler-config", metavar="EXPR", help="dict for the handler, e.g. mean/std, topk"
    )
    q.add_argument("--requirements", metavar="EXPR", help="list of pip requirements")
    q.add_argument(
        "--archive-format", default="default", help="default | tgz | no-archive | zip-store"
    )


def model_kwargs(args: argparse.Namespace, user: UserNamespace) -> dict[str, Any]:
    """The keywords ``deploy`` and ``archive`` both take, evaluated in the user's namespace."""
    return {
        "handler": user.handler(args.handler),
        "example": user.eval(args.example, "--example"),
        "format": args.format,
        "extra_files": user.eval(args.extra_files, "--extra-files"),
        "handler_config": user.eval(args.handler_config, "--handler-config"),
        "requirements": user.eval(args.requirements, "--requirements"),
        "archive_format": args.archive_format,
    }
