"""Management API: TorchServe's register/scale/describe/unregister/set-default/list, plus our
`GET /engine` (status, GPUs), `GET /models/{m}/logs` (a model's log tail) and
`/models/{m}/canary` (a share of the default route for another version)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..._version import __version__
from ...archive.report import evaluation_in_store
from .. import jsonbody
from ..canary import parse_percent
from ..errors import ApiError, bad_request, invalid_key, method_not_allowed
from ..gpu import list_gpus
from ..model import ModelVersion
from ..registration import Registration
from ..registry import ModelRegistry
from .base import BaseHandler


class ManagementHandler(BaseHandler):
    api = "management"

    def params(self) -> dict[str, str]:
        """Query parameters, or (observed in TorchServe) the same keys as a JSON body."""
        params = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        ctype = self.request.headers.get("Content-Type", "")
        if self.body and ctype.startswith("application/json"):
            body = jsonbody.parse(self.body)
            if isinstance(body, dict):
                params.update(
                    {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()}
                )
        return params

    def require_model_api(self) -> None:
        if not self.registry.config.enable_model_api:
            raise method_not_allowed()


class ModelsHandler(ManagementHandler):
    def get(self) -> None:
        limit = self.int_arg("limit", 100)
        offset = self.int_arg("next_page_token", 0)
        assert limit is not None and offset is not None
        self.write_json(self.registry.list_models(limit, max(0, offset)))

    async def post(self) -> None:
        self.require_model_api()
        p = self.params()
        # read everything through the typed helpers so a bad value is a 400, not a 500
        self.request.query_arguments = {k: [v.encode()] for k, v in p.items()}
        status, body = await self.registry.register(
            Registration(
                p.get("url", ""),
                model_name=p.get("model_name") or None,
                handler=p.get("handler") or None,
                runtime=p.get("runtime") or None,
                batch_size=self.int_arg("batch_size"),
                max_batch_delay=self.int_arg("max_batch_delay"),
                initial_workers=self.int_arg("initial_workers"),
                synchronous=self.bool_arg("synchronous", True),
                response_timeout=self.float_arg("response_timeout"),
                startup_timeout=self.float_arg("startup_timeout"),
                device_type=p.get("device_type") or None,
            )
        )
        self.write_json(body, status)


class ModelHandler(ManagementHandler):
    async def get(self, name: str, version: str | None = None) -> None:
        entry = self.registry.get_entry(name)
        if version == "all":
            versions = list(entry.versions.values())
        else:
            versions = [self.registry.get_version(name, version or None, routed=False)]
        # ours, beside TorchServe's keys (its describe has none): which version the
        # unversioned routes answer with, so a client need not guess
        out = [
            {**mv.describe_json(), "isDefault": mv.version == entry.default_version}
            for mv in versions
        ]
        if entry.canary is not None:  # ours: each version's part of the default route
            for mv, item in zip(versions, out, strict=True):
                traffic = entry.canary.version_json(mv.version, entry.default.version)
                if traffic is not None:
                    item["traffic"] = traffic
        if self.bool_arg("customized", False):
            for mv, item in zip(versions, out, strict=True):
                item["customizedMetadata"] = await customized_metadata(
                    mv, self.registry.model_store
                )
        self.write_json(out)

    async def put(self, name: str, version: str | None = None) -> None:
        status, body = await self.registry.scale(
            name,
            version or None,
            min_worker=self.int_arg("min_worker", 1) or 0,
            max_worker=self.int_arg("max_worker"),
            synchronous=self.bool_arg("synchronous", False),
            timeout=self.float_arg("timeout"),
        )
        self.write_json(body, status)

    async def delete(self, name: str, version: str | None = None) -> None:
        self.require_model_api()
        self.write_json(await self.registry.unregister(name, version or None))


async def customized_metadata(mv: ModelVersion, store: Path | None = None) -> Any:
    """The handler's ``describe_handle``, from a ready worker; with ``store``, a held-out
    report that a deploy stored in the archive after this worker loaded it is added under
    ``evaluation`` (the worker read the metadata before the report existed)."""
    value = await _describe(mv)
    if store is not None and isinstance(value, dict) and value.get("evaluation") is None:
        report = await asyncio.get_running_loop().run_in_executor(
            None, evaluation_in_store, store, mv.url
        )
        if report is not None:
            value = {**value, "evaluation": report}
    return value


async def _describe(mv: ModelVersion) -> Any:
    workers = mv.ready_workers
    if not workers:
        raise ApiError(
            503, "ServiceUnavailableException", f'Model "{mv.name}" has no worker to describe it'
        )
    try:
        return await workers[0].describe(mv.response_timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, "RequestTimeoutException", "describe timed out") from None


class CanaryHandler(ManagementHandler):
    """Ours (TorchServe has none): `GET` the split, `PUT ?version=&percent=` start or change
    it, `DELETE` end it. Promoting is TorchServe's set-default, which ends the canary."""

    def get(self, name: str) -> None:
        self.write_json(self.registry.canary_json(name))

    def put(self, name: str) -> None:
        p = self.params()
        version = p.get("version")
        if not version:
            raise bad_request("Parameter version is required: the version to send traffic to.")
        percent = parse_percent(p.get("percent"))
        self.write_json(self.registry.start_canary(name, version, percent))

    def delete(self, name: str) -> None:
        self.write_json(self.registry.end_canary(name))


class SetDefaultHandler(ManagementHandler):
    def put(self, name: str, version: str) -> None:
        self.write_json(self.registry.set_default(name, version))


class EngineStatusHandler(ManagementHandler):
    def get(self) -> None:
        self.write_json(engine_status(self.registry, self.settings["addresses"]))


class LogsHandler(ManagementHandler):
    def get(self, name: str) -> None:
        self.registry.get_entry(name)
        tail = self.int_arg("tail", 200) or 200
        path = self.registry.log_dir / f"{name}.log"
        lines: deque[str] = deque(maxlen=max(1, min(tail, 100_000)))
        if path.exists():
            with open(path, errors="replace") as f:
                lines.extend(f)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("".join(lines))


class TokenHandler(ManagementHandler):
    """TorchServe's `GET /token?type=...`: a new key, authorised by the API key."""

    def prepare(self) -> None:
        keys = self.registry.keys
        if keys is None:
            raise bad_request("Token authorization is disabled")
        if not keys.check("API", self.request.headers.get("Authorization")):
            raise invalid_key()

    def get(self) -> None:
        kind = self.get_query_argument("type", "")
        if kind not in ("inference", "management"):
            raise bad_request("type must be inference or management")
        assert self.registry.keys is not None
        self.registry.keys.regenerate(kind)
        self.set_status(200)
        self.finish()


def engine_status(registry: ModelRegistry, addresses: dict[str, str]) -> dict[str, Any]:
    """`GET /engine`: what the sidebar and `jupyter-torchserve status` show."""
    return {
        "version": __version__,
        "pid": os.getpid(),
        "started": registry.started,
        "uptime_s": round(time.time() - registry.started, 1),
        **addresses,
        "model_store": str(registry.model_store),
        "log_dir": str(registry.log_dir),
        "token_auth": registry.keys is not None,
        "max_request_size": registry.config.max_request_size,
        "max_response_size": registry.config.max_response_size,
        "gpus": [g.to_json() for g in list_gpus()[: registry.gpu_count]],
        "models": sum(len(e.versions) for e in registry.models.values()),
        "workers": sum(len(v.live_workers) for v in registry.all_versions()),
    }
