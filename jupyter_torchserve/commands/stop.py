"""``%torchserve stop``: stop the engine; its snapshot brings the models back on next start."""

from __future__ import annotations

import argparse

from .. import api
from ..display import Message
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Stop the engine (models are restored from its snapshot on the next start)."


def add_arguments(q: Parser) -> None:
    """No options."""


def run(args: argparse.Namespace, user: UserNamespace) -> Message:
    info = api.find()
    if info is None or not api.stop(info):
        return Message("No engine was running.")
    return Message(f"Stopped the engine (pid {info['pid']}).")
