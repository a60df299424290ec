"""OpenAPI 3.0.1 documents of the inference and management APIs (`OPTIONS /`), and the
handler that serves them.

Each document is generated from a table of the paths it describes, in the templated form
OpenAPI wants; routes.py holds the regular expressions that serve those paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._version import __version__
from ..model import ModelVersion
from ..registry import ModelRegistry
from .base import BaseHandler

_ERR = {
    "description": "Error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer"},
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                },
            }
        }
    },
}

INFERENCE_ROUTES: list[tuple[str, list[str], str]] = [
    ("/", ["options"], "This API document."),
    ("/api-description", ["get"], "This API document."),
    ("/ping", ["get"], "Health: Healthy when every model has its minimum workers."),
    (
        "/predictions/{model_name}",
        ["post", "put", "options"],
        "Predict with the default version: raw body (curl -T), multipart form or JSON.",
    ),
    (
        "/predictions/{model_name}/{model_version}",
        ["post", "put", "options"],
        "Predict with one version.",
    ),
    ("/explanations/{model_name}", ["post"], "Explain a prediction (input x gradient)."),
    ("/explanations/{model_name}/{model_version}", ["post"], "Explain with one version."),
    ("/v1/models/{model_name}", ["get"], "KServe v1 model status."),
    ("/v1/models/{model_name}:predict", ["post"], 'KServe v1: {"instances": [...]}.'),
    ("/v1/models/{model_name}:explain", ["post"], "KServe v1 explanations."),
    ("/v2", ["get"], "Open Inference Protocol server metadata."),
    ("/v2/health/live", ["get"], "OIP liveness."),
    ("/v2/health/ready", ["get"], "OIP readiness."),
    ("/v2/models/{model_name}", ["get"], "OIP model metadata (inputs, outputs)."),
    ("/v2/models/{model_name}/ready", ["get"], "OIP model readiness."),
    ("/v2/models/{model_name}/infer", ["post"], "OIP inference with JSON tensors."),
    ("/v2/models/{model_name}/versions/{model_version}", ["get"], "OIP version metadata."),
    ("/v2/models/{model_name}/versions/{model_version}/ready", ["get"], "OIP version readiness."),
    ("/v2/models/{model_name}/versions/{model_version}/infer", ["post"], "OIP inference."),
]

MANAGEMENT_ROUTES: list[tuple[str, list[str], str]] = [
    ("/", ["options"], "This API document."),
    ("/api-description", ["get"], "This API document."),
    (
        "/models",
        ["get", "post"],
        "List models (limit, next_page_token); register a model (url, model_name, handler, "
        "batch_size, max_batch_delay, initial_workers, synchronous, response_timeout, "
        "startup_timeout, device_type).",
    ),
    (
        "/models/{model_name}",
        ["get", "put", "delete"],
        "Describe (customized), scale (min_worker, max_worker, synchronous, timeout) or "
        "unregister the default version.",
    ),
    ("/models/{model_name}/all", ["get"], "Describe every version."),
    (
        "/models/{model_name}/{model_version}",
        ["get", "put", "delete"],
        "Describe, scale or unregister one version.",
    ),
    ("/models/{model_name}/{model_version}/set-default", ["put"], "Make a version the default."),
    (
        "/models/{model_name}/logs",
        ["get"],
        "jupyter_torchserve: the last `tail` lines of the model's worker log (text/plain).",
    ),
    (
        "/models/{model_name}/canary",
        ["get", "put", "delete"],
        "jupyter_torchserve: a canary, i.e. a share of the default route (requests naming no "
        "version, on every protocol) sent to another version, drawn at random per request. GET: "
        "the split asked for and the requests each version got; PUT (version, percent: above 0, "
        "below 100): start or change it; DELETE: end it. set-default of the canary's version "
        "promotes it and ends the canary; unregistering it ends the canary too.",
    ),
    ("/engine", ["get"], "jupyter_torchserve: engine status, addresses and GPUs."),
    ("/token", ["get"], "Regenerate the inference or management key (needs the API key)."),
    ("/v1/models/{model_name}", ["get"], "KServe v1 model status."),
]


def _params(path: str) -> list[dict[str, Any]]:
    return [
        {"in": "path", "name": p, "required": True, "schema": {"type": "string"}}
        for p in ("model_name", "model_version")
        if "{" + p + "}" in path
    ]


def document(title: str, routes: list[tuple[str, list[str], str]]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, methods, summary in routes:
        paths[path] = {
            m: {
                "summary": summary,
                "parameters": _params(path),
                "responses": {"200": {"description": "OK"}, "400": _ERR, "404": _ERR, "503": _ERR},
            }
            for m in methods
        }
    return {
        "openapi": "3.0.1",
        "info": {
            "title": title,
            "description": "TorchServe-compatible API of jupyter_torchserve",
            "version": __version__,
        },
        "paths": paths,
    }


def inference_document() -> dict[str, Any]:
    return document("jupyter_torchserve inference API", INFERENCE_ROUTES)


def management_document() -> dict[str, Any]:
    return document("jupyter_torchserve management API", MANAGEMENT_ROUTES)


def model_openapi(mv: ModelVersion) -> dict[str, Any]:
    schema = mv.metadata.get("schema") or {}
    doc = document(
        f"Model {mv.name}",
        [
            (f"/predictions/{mv.name}", ["post"], f"Predict with {mv.name} version {mv.version}."),
        ],
    )
    doc["x-model"] = {"name": mv.name, "version": mv.version, "schema": schema}
    return doc


class ApiDescriptionHandler(BaseHandler):
    def initialize(  # type: ignore[override]
        self, registry: ModelRegistry, document: Callable[[], Any], api: str | None
    ) -> None:
        super().initialize(registry)
        self.document = document
        self.api = api

    def get(self) -> None:
        self.write_json(self.document())

    options = get
