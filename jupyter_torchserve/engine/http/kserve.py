"""KServe v1 and v2 over HTTP: the URL and body side of inference/kserve.py's calls.

`v1_http` and `v2_http` are what both HTTP paths run for a predict or infer request (the
fast path as a task, the Tornado handlers below when a request reaches them), so the order
of the checks, and with it which error a bad request gets, is one.

A v1 `:predict`/`:explain` body that is not a KServe envelope (`kserve.v1_envelope`) is a
TorchServe prediction: both paths hand it to the handler as `/predictions/{name}` does, so
`curl -T digit.png …/v1/models/mnist:predict` gets the handler's answer, as in TorchServe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tornado import web

from ..errors import ApiError, not_found_route
from ..inference import kserve
from ..inference.predictions import Params
from ..jobs import Reply
from ..model import ModelVersion
from ..registry import ModelRegistry
from .predictions import InferenceHandler, PredictionsHandler

RunJobs = Callable[
    [ModelVersion, "str | None", list[Params], dict[str, str]], Awaitable[list[Reply]]
]
"""`predictions.run_jobs` for one request: (version, URL version, items, headers) -> replies."""

V1_VERBS = {"predict": False, "explain": True}  # verb -> is it an explanation


async def v1_http(
    registry: ModelRegistry,
    name: str,
    verb: str,
    payload: dict[str, Any] | None,
    headers: dict[str, str],
    run_jobs: RunJobs,
) -> dict[str, Any]:
    """`POST /v1/models/{name}:{verb}` with a v1 envelope (`payload`, already parsed)."""
    explain = V1_VERBS.get(verb)
    if explain is None:
        raise not_found_route()
    mv = registry.get_version(name)

    def run(items: list[Params], headers: dict[str, str]) -> Awaitable[list[Reply]]:
        return run_jobs(mv, None, items, headers)

    return await kserve.v1_predict(payload, headers, run, explain=explain)


async def v2_http(
    registry: ModelRegistry,
    name: str,
    version: str | None,
    verb: str,
    body: bytes,
    headers: dict[str, str],
    run_jobs: RunJobs,
) -> dict[str, Any]:
    """`POST /v2/models/{name}[/versions/{version}]/infer` (or `/explain`)."""
    mv = registry.get_version(name, version)
    payload = kserve.json_body(body)
    if verb == "explain":
        headers = {**headers, "explain": "True"}

    def run(items: list[Params], headers: dict[str, str]) -> Awaitable[list[Reply]]:
        return run_jobs(mv, version, items, headers)

    return await kserve.v2_infer(mv, payload, headers, run)


class V1ModelHandler(InferenceHandler):
    def get(self, name: str) -> None:
        self.write_json(kserve.v1_status(self.registry.get_entry(name)))


class V1PredictHandler(PredictionsHandler):
    async def post(self, name: str, verb: str) -> None:  # type: ignore[override]
        explain = V1_VERBS.get(verb)
        payload = kserve.v1_envelope(self.body)
        if explain is not None and payload is None:
            self.explain = explain
            await super().post(name)
            return
        self.write_json(
            await v1_http(self.registry, name, verb, payload, self.handler_headers(), self.run_jobs)
        )

    put = post

    def options(self, *args: str) -> None:
        raise web.HTTPError(405)


class V2Handler(InferenceHandler):
    def error_body(self, err: ApiError) -> dict[str, Any]:
        return kserve.error_body(err, self.is_owner())


class V2ServerHandler(V2Handler):
    def get(self) -> None:
        self.write_json(kserve.v2_server())


class V2HealthHandler(V2Handler):
    def get(self, which: str) -> None:
        if which == "live":
            self.write_json(kserve.v2_live())
        else:
            ready = kserve.v2_ready(self.registry)
            self.write_json(ready, 200 if ready["ready"] else 503)


class V2ModelHandler(V2Handler):
    def get(self, name: str, version: str | None = None, ready: str | None = None) -> None:
        mv = self.registry.get_version(name, version or None, routed=False)
        if ready:
            self.write_json(kserve.v2_model_ready(name, mv))
        else:
            self.write_json(kserve.v2_model_metadata(self.registry.get_entry(name), mv))


class V2InferHandler(V2Handler):
    async def post(self, name: str, version: str | None, verb: str) -> None:
        self.write_json(
            await v2_http(
                self.registry,
                name,
                version or None,
                verb,
                self.body,
                self.handler_headers(),
                self.run_jobs,
            )
        )
