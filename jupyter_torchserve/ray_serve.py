"""A TorchServe archive as a Ray Serve application: `jupyter_torchserve.ray_serve:app`.

    serve run jupyter_torchserve.ray_serve:app archive=/abs/path/mnist.mar

Each replica loads the `.mar` through our handler runtime (`handlers.service.load_service`,
what the engine's workers run), so a handler behaves and answers as in the engine. Routes on
Serve's HTTP proxy, as on the engine's inference port: `POST|PUT /predictions/NAME[/VERSION]`
(and `/explanations/...`), KServe v1 `POST /v1/models/NAME:predict|explain`, v2
`POST /v2/models/NAME[/versions/V]/infer`, and `GET /ping`, `/v1/models/NAME`,
`/v2/health/ready`, `/v2/models/NAME`. Requests are batched with `@serve.batch`, sized from
the archive's batchSize and maxBatchDelay (or the application's args).

`serve deploy` refuses a local working_dir, so the application imports this installed
package and takes an absolute archive path (or one the cluster's nodes mount).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from .engine.errors import (
    ApiError,
    model_not_found,
    not_found_route,
    version_not_found,
)
from .engine.http.kserve import V1_VERBS
from .engine.http.predictions import body_params
from .engine.inference import kserve
from .engine.inference.predictions import Params, prediction_headers
from .engine.jobs import Reply
from .engine.v2_schema import v2_metadata_tensors
from .handlers.service import HandlerError, RequestInput, ResponseOutput, load_service

DEPLOYMENT = "TorchServeModel"


class _OneModel:
    """This replica's one model version, as the engine's request functions
    (engine/inference/kserve.py) read a `ModelVersion`: its name, version, metadata,
    serving built-in (the archive's: a replica loads the archive's own handler) and v2
    description. The envelopes are the engine's own code, so v1/v2 answers match the
    engine's."""

    def __init__(self, name: str, version: str, metadata: dict[str, Any]) -> None:
        self.name = name
        self.version = version
        self.metadata = metadata
        self.builtin_handler: str | None = metadata.get("builtin_handler")
        self.v2_tensors = v2_metadata_tensors(metadata, self.builtin_handler)

    def get_version(self, name: str, version: str | None = None) -> _OneModel:
        if name != self.name:
            raise model_not_found(name)
        if version not in (None, self.version):
            raise version_not_found(name, version)
        return self


@serve.deployment(name=DEPLOYMENT)
class TorchServeModel:
    def __init__(
        self,
        archive: str,
        name: str | None = None,
        batch_size: int = 1,
        max_batch_delay: int = 100,
    ) -> None:
        import ray

        from .archive.reader import extract

        self._cache = tempfile.mkdtemp(prefix="jts-ray-")
        model_dir, manifest = extract(archive, self._cache)
        model = manifest.get("model", {})
        self.name = name or model.get("modelName")
        self.version = str(model.get("modelVersion") or "1.0")
        self.metadata = _metadata(str(model_dir))
        import torch

        # in a replica Ray assigns CPUs and GPUs (CUDA_VISIBLE_DEVICES: the first is ours);
        # outside one (a test calling the class itself) there is nothing to ask
        cpus, gpus = 1.0, []
        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
            gpus = ray.get_gpu_ids()
        torch.set_num_threads(max(1, int(cpus)))
        gpu_id = 0 if gpus and torch.cuda.is_available() else None
        self.service = load_service(
            str(model_dir), model_name=self.name, batch_size=batch_size, gpu_id=gpu_id
        )
        self._predict.set_max_batch_size(max(1, batch_size))
        self._predict.set_batch_wait_timeout_s(max(0, max_batch_delay) / 1000)
        self._model = _OneModel(self.name, self.version, self.metadata)

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_cache", ""), ignore_errors=True)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.1)
    async def _predict(self, batch: list[RequestInput]) -> list[ResponseOutput | HandlerError]:
        # in a thread: the replica keeps taking requests (the next batch) meanwhile
        return await asyncio.to_thread(self.service.predict_each, batch)

    async def _run(self, items: list[Params], headers: dict[str, str]) -> list[Reply]:
        """One request's items through the batcher, as the engine's `run_jobs` does."""
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        inputs = [
            RequestInput(request_id if len(items) == 1 else f"{request_id}-{i}", headers, params)
            for i, params in enumerate(items)
        ]
        outputs = await asyncio.gather(*(self._predict(r) for r in inputs))
        replies = []
        for out in outputs:
            if isinstance(out, HandlerError):
                raise ApiError(out.status, "InternalServerException", f"Prediction failed: {out}")
            replies.append(Reply(out.status, out.content_type, out.body, out.reason, out.headers))
        return replies

    async def __call__(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        v2 = parts[:1] == ["v2"]
        try:
            return await self._route(request, parts)
        except ApiError as e:
            body = kserve.error_body(e) if v2 else e.to_json()
            return Response(json.dumps(body), e.status, media_type="application/json")

    async def _route(self, request: Request, parts: list[str]) -> Response:
        """The engine's inference routes, in the engine's order: the model (404) before the
        body (400)."""
        method = request.method
        if method == "GET":
            return self._get(parts)
        if method not in ("POST", "PUT"):
            raise not_found_route()
        body = await request.body()
        pairs = request.headers.items()
        if parts[:1] in (["predictions"], ["explanations"]) and len(parts) >= 2:
            self._model.get_version(parts[1], parts[2] if len(parts) > 2 else None)
            url_path = "/".join(parts[3:]) or None
            return await self._prediction(request, body, url_path, parts[0] == "explanations")
        headers = prediction_headers(pairs, None, False)
        if parts[:2] == ["v1", "models"] and len(parts) == 3 and ":" in parts[2]:
            name, verb = parts[2].split(":", 1)
            explain = V1_VERBS.get(verb)
            if explain is None:
                raise not_found_route()
            self._model.get_version(name)
            payload = kserve.v1_envelope(body)
            if payload is None:  # a PNG from `curl -T`, raw bytes: the handler's, as in the engine
                return await self._prediction(request, body, None, explain)
            return _json(await kserve.v1_predict(payload, headers, self._run, explain=explain))
        if parts[:2] == ["v2", "models"] and parts[-1] == "infer" and len(parts) in (4, 6):
            version = parts[4] if len(parts) == 6 and parts[3] == "versions" else None
            mv = self._model.get_version(parts[2], version)
            payload = kserve.json_body(body)
            # the request functions read only a version's name, version, metadata and built-in
            return _json(await kserve.v2_infer(mv, payload, headers, self._run))  # type: ignore[arg-type]
        raise not_found_route()

    async def _prediction(
        self, request: Request, body: bytes, url_path: str | None, explain: bool
    ) -> Response:
        """One body to the handler as it came, its answer back: TorchServe's /predictions."""
        headers = prediction_headers(request.headers.items(), url_path, explain)
        items = [body_params(request.headers.get("content-type", ""), body)]
        (reply,) = await self._run(items, headers)
        return Response(
            reply.body, reply.status, headers=reply.headers, media_type=reply.content_type
        )

    def _get(self, parts: list[str]) -> Response:
        if parts == ["ping"]:
            return _json({"status": "Healthy"})
        if parts == ["v2", "health", "ready"] or parts == ["v2", "health", "live"]:
            return _json({parts[2]: True})
        if parts[:2] == ["v1", "models"] and len(parts) == 3:
            self._model.get_version(parts[2])
            return _json({"name": self.name, "ready": True})
        if parts[:2] == ["v2", "models"] and len(parts) >= 3:
            self._model.get_version(parts[2], parts[4] if len(parts) > 4 else None)
            if parts[-1] == "ready":
                return _json({"name": self.name, "ready": True})
            return _json(
                {
                    "name": self.name,
                    "versions": [self.version],
                    "platform": "pytorch_torchserve",
                    **self._model.v2_tensors,
                }
            )
        raise not_found_route()


def _json(value: Any) -> Response:
    return Response(json.dumps(value), 200, media_type="application/json")


def _metadata(model_dir: str) -> dict[str, Any]:
    path = os.path.join(model_dir, "MAR-INF", "jupyter_torchserve.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def app(args: dict[str, Any]) -> Application:
    """The application builder Serve calls with the config's `args` (or `serve run` k=v):
    `archive` (absolute path, required), and optionally `name`, `batch_size`,
    `max_batch_delay` (ms); the last two default to the archive's model config."""
    archive = str(args.get("archive") or "")
    if not os.path.isabs(archive):
        raise ValueError(
            f"archive must be an absolute path on the cluster's nodes, got {archive!r} "
            "(serve deploy uploads no working_dir)"
        )
    from .export.snapshot import from_archive

    default = from_archive(__import__("pathlib").Path(archive)).default
    return TorchServeModel.bind(
        archive=archive,
        name=args.get("name"),
        batch_size=int(args.get("batch_size", default.batch_size)),
        max_batch_delay=int(args.get("max_batch_delay", default.max_batch_delay)),
    )
