"""``%torchserve list``: registered models and their versions."""

from __future__ import annotations

import argparse

from .. import api
from ..display import ModelList
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Registered models and their versions."


def add_arguments(q: Parser) -> None:
    """No options."""


def run(args: argparse.Namespace, user: UserNamespace) -> ModelList:
    return api.list_models()
