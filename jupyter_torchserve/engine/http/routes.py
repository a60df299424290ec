"""The route tables of the three ports, and the Tornado applications and fast-path router
built from them.

The inference port has one table: each route is a regular expression over the path, the
Tornado handler that answers it, and optionally a `fast` answer (fastpath.py) that http1.py
runs first for the methods given, without Tornado. The router and the Application are both
made from the table, so the two cannot disagree about what a path means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote

from tornado import web

from ..registry import ModelRegistry
from . import fastpath
from .base import NotFoundHandler
from .http1 import Connection, Request, Router
from .kserve import (
    V1ModelHandler,
    V1PredictHandler,
    V2HealthHandler,
    V2InferHandler,
    V2ModelHandler,
    V2ServerHandler,
)
from .management import (
    CanaryHandler,
    EngineStatusHandler,
    LogsHandler,
    ModelHandler,
    ModelsHandler,
    SetDefaultHandler,
    TokenHandler,
)
from .metrics_api import MetricsHandler
from .openapi import ApiDescriptionHandler, inference_document, management_document
from .predictions import ExplanationsHandler, PingHandler, PredictionsHandler

NAME = r"([^/:]+)"  # a model name where a `:verb` may follow
SEG = r"([^/]+)"


@dataclass(frozen=True)
class Route:
    pattern: str  # matched against the whole path; its groups are the handler's arguments
    handler: type[web.RequestHandler]
    kwargs: dict[str, Any] = field(default_factory=dict)
    fast: fastpath.FastAnswer | None = None
    fast_methods: tuple[str, ...] = ("POST",)


def _description(document: Any, api: str) -> dict[str, Any]:
    return {"document": document, "api": api}


INFERENCE: tuple[Route, ...] = (
    Route(r"/", ApiDescriptionHandler, _description(inference_document, "inference")),
    Route(
        r"/api-description", ApiDescriptionHandler, _description(inference_document, "inference")
    ),
    Route(r"/ping", PingHandler),
    Route(
        rf"/predictions/{SEG}(?:/{SEG})?(/.*)?",
        PredictionsHandler,
        fast=partial(fastpath.predict, explain=False),
        fast_methods=("POST", "PUT"),
    ),
    Route(
        rf"/explanations/{SEG}(?:/{SEG})?(/.*)?",
        ExplanationsHandler,
        fast=partial(fastpath.predict, explain=True),
        fast_methods=("POST", "PUT"),
    ),
    Route(rf"/v1/models/{NAME}", V1ModelHandler),
    Route(
        rf"/v1/models/{NAME}:(\w+)",
        V1PredictHandler,
        fast=fastpath.v1_predict,
        fast_methods=("POST", "PUT"),
    ),
    Route(r"/v2/?", V2ServerHandler),
    Route(r"/v2/health/(live|ready)", V2HealthHandler),
    Route(
        rf"/v2/models/{SEG}(?:/versions/{SEG})?/(infer|explain)",
        V2InferHandler,
        fast=fastpath.v2_infer,
    ),
    Route(rf"/v2/models/{SEG}(?:/versions/{SEG})?(/ready)?", V2ModelHandler),
)


class _ManagementV1(V1ModelHandler):
    api = "management"


MANAGEMENT: tuple[Route, ...] = (
    Route(r"/", ApiDescriptionHandler, _description(management_document, "management")),
    Route(
        r"/api-description", ApiDescriptionHandler, _description(management_document, "management")
    ),
    Route(r"/models", ModelsHandler),
    Route(r"/engine", EngineStatusHandler),
    Route(r"/token", TokenHandler),
    Route(rf"/v1/models/{NAME}", _ManagementV1),
    Route(rf"/models/{SEG}/logs", LogsHandler),
    Route(rf"/models/{SEG}/canary", CanaryHandler),
    Route(rf"/models/{SEG}/{SEG}/set-default", SetDefaultHandler),
    Route(rf"/models/{SEG}(?:/{SEG})?", ModelHandler),
)

METRICS: tuple[Route, ...] = (Route(r"/metrics", MetricsHandler),)


def make_apps(registry: ModelRegistry, addresses: dict[str, str]) -> dict[str, web.Application]:
    common: dict[str, Any] = {
        "default_handler_class": NotFoundHandler,
        "default_handler_args": {"registry": registry},
        "addresses": addresses,
        "compress_response": False,
    }

    def app(routes: tuple[Route, ...]) -> web.Application:
        return web.Application(
            [(path_pattern(r), r.handler, {"registry": registry, **r.kwargs}) for r in routes],
            **common,
        )

    return {"inference": app(INFERENCE), "management": app(MANAGEMENT), "metrics": app(METRICS)}


def make_router(registry: ModelRegistry, routes: tuple[Route, ...] = INFERENCE) -> Router:
    """http1's router for `routes`. Like Tornado, it takes the first route that matches the
    path; when that route has a `fast` answer for the method, the answer runs, and every
    other request (and any the answer declines) goes to Tornado.

    Only the routes that can decide a fast route's paths are walked: the fast ones, and
    those before one whose literal start is compatible with its own (so "/ping" never is,
    "/v2/?" is before v2 infer). A route without special characters is a string compare.
    """
    patterns = [path_pattern(r) for r in routes]
    prefixes = [_literal_prefix(p) for p in patterns]
    table = []
    for i, r in enumerate(routes):
        later_fast = [prefixes[j] for j in range(i + 1, len(routes)) if routes[j].fast]
        if r.fast is None and not any(_overlap(prefixes[i], p) for p in later_fast):
            continue  # it cannot take a path from a fast route: Tornado's alone
        literal = patterns[i] if prefixes[i] == patterns[i] else None
        compiled = re.compile(patterns[i] + r"\Z")
        table.append((prefixes[i], literal, compiled, r.fast, r.fast_methods))
    # most requests are told apart from the fast routes without a regex
    fast_prefixes = tuple(prefix for prefix, _, _, fast, _ in table if fast is not None)
    methods = {m for *_, fast, ms in table if fast is not None for m in ms}

    def route(conn: Connection, req: Request) -> bool:
        if req.method not in methods or not req.target.startswith(fast_prefixes):
            return False
        path = req.path
        for prefix, literal, pattern, answer, allowed in table:
            if literal is not None:
                if path != literal:
                    continue
                groups: tuple[str | None, ...] = ()
            else:
                if not path.startswith(prefix):
                    continue
                m = pattern.match(path)
                if m is None:
                    continue
                groups = m.groups()
            if answer is None or req.method not in allowed:
                return False  # Tornado's handler (or its 405)
            try:
                args = [_arg(g) for g in groups]
            except UnicodeDecodeError:
                return False  # Tornado's 400 for an undecodable path argument
            return answer(registry, conn, req, *args)
        return False

    return route


def path_pattern(route: Route) -> str:
    """The route's pattern as both routers match it: a trailing slash addresses the same
    resource (`DELETE /models/squeezenet1_1/`), as in TorchServe."""
    p = route.pattern
    return p if p == "/" or p.endswith(("/?", "/")) else p + "/?"


def _overlap(a: str, b: str) -> bool:
    """Whether paths starting with `a` and paths starting with `b` can be the same path."""
    return a.startswith(b) or b.startswith(a)


def _literal_prefix(pattern: str) -> str:
    """The start every path matching `pattern` has: its literal characters up to the first
    special one, less a quantified last one; nothing when a `|` outside a group could match
    something else entirely."""
    depth, escaped = 0, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return ""
    head = re.split(r"[(\[\\?*+.{|^$]", pattern, maxsplit=1)[0]
    quantified = pattern[len(head) : len(head) + 1] in ("?", "*", "{")
    return head[:-1] if quantified else head


def _arg(value: str | None) -> str | None:
    """Unquote a path argument as Tornado does (no `+` to space; UTF-8 or an error)."""
    return unquote(value, errors="strict") if value and "%" in value else value
