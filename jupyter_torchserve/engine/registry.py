"""The registry of model versions and the operations the management API exposes on it.

HTTP handlers stay thin (parse, call one method here, format the answer); everything with
state lives here, so the same operations back register, snapshot restore and `load_models`.
The registry owns the engine's state folder (logs, unpacked archives, keys, snapshot) and
hands each new version the pool it takes workers from.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..archive.errors import ArchiveTooLarge
from ..archive.reader import is_archive
from ..config import EngineConfig, parse_model_snapshot
from . import limits, snapshot
from .canary import Canary
from .errors import ApiError, bad_request, invalid_key, model_not_found, version_not_found
from .gpu import list_gpus
from .keys import KeyStore, inference_needs_key
from .metrics import EngineMetrics
from .model import ModelVersion
from .pool import WorkerPool
from .registration import Registration, model_yaml, resolve
from .store import resolve_url

log = logging.getLogger("jupyter_torchserve.engine")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
METADATA_FILE = "MAR-INF/jupyter_torchserve.json"


class ModelEntry:
    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[str, ModelVersion] = {}
        self.default_version: str | None = None
        self.canary: Canary | None = None  # canary.py: a share of the default route

    @property
    def default(self) -> ModelVersion:
        assert self.default_version is not None
        return self.versions[self.default_version]


class ModelRegistry:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.started = time.time()
        self.state_dir = config.resolved_state_dir()
        # absolute: kernels and the server extension in other directories read it from discovery
        self.model_store = Path(config.model_store).expanduser().resolve()
        self.model_store.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.state_dir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.cache_dir = self.state_dir / "cache"
        self.cache_dir.mkdir(exist_ok=True)
        self.snapshot_path = self.state_dir / "snapshot.json"
        self.keys: KeyStore | None = None
        if not config.disable_token_authorization:
            self.keys = KeyStore(self.state_dir / "key_file.json", config.token_expiration_min)
        self.inference_needs_key = inference_needs_key(config)
        self.models: dict[str, ModelEntry] = {}
        gpus = list_gpus()
        count = len(gpus) if config.number_of_gpu is None else min(len(gpus), config.number_of_gpu)
        self.gpu_count = count
        self.metrics = EngineMetrics(self.all_versions)
        self.pool = WorkerPool(
            config,
            gpu_count=count,
            planned_workers=lambda: sum(v.min_workers for v in self.all_versions()),
            on_metrics=self.metrics.custom,
        )
        self._lock = asyncio.Lock()
        self._restoring = False

    async def shutdown(self) -> None:
        versions = list(self.all_versions())
        await asyncio.gather(*(v.unload() for v in versions), return_exceptions=True)
        self.pool.close()
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        if self.keys is not None:
            self.keys.remove()

    def authorize(self, api: str, authorization: str | None) -> None:
        """Raise TorchServe's invalid-key error unless `authorization` (the Authorization
        header) carries `api`'s key, where one is needed (keys.py says where)."""
        keys = self.keys
        if keys is None:
            return
        required = api == "management" or self.inference_needs_key
        if required and not keys.check(api, authorization):
            raise invalid_key()

    def is_owner(self, authorization: str | None) -> bool:
        """Whether `authorization` (contract.OWNER_HEADER's value) is `Bearer <management key>`.
        With token auth off there is no key to prove anything with, and the management API
        (model logs included) is open to anyone who reaches it: then everyone is."""
        keys = self.keys
        return keys is None or keys.check("management", authorization)

    # -- lookups ------------------------------------------------------------------------------
    def all_versions(self) -> list[ModelVersion]:
        return [v for entry in self.models.values() for v in entry.versions.values()]

    def healthy(self) -> bool:
        """TorchServe 0.12's `/ping`: unhealthy only when a model has fewer workers than
        `minWorkers` *counting those starting or being replaced* (its "running" workers
        include restarts within `maxRetryTimeoutInSec`). So an engine restoring a snapshot,
        or replacing a crashed worker after its backoff, answers 200 Healthy, as TorchServe
        does, and start-up never logs a 500; a version being unregistered does not count."""
        return all(
            mv.unregistered or len(mv.live_workers) + mv.replacing >= mv.min_workers
            for mv in self.all_versions()
        )

    def get_entry(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None or not entry.versions:
            raise model_not_found(name)
        return entry

    def get_version(
        self, name: str, version: str | None = None, *, routed: bool = True
    ) -> ModelVersion:
        """The version that answers a request for `version` of `name`.

        Without a version, that is the default route: the default version, or, while the
        model has a canary, the canary for its share of requests (a random draw per request,
        recorded: canary.py). Every protocol resolves its version here, so the split holds
        for all of them alike; `routed=False` is the default version itself, for callers
        that describe or change it rather than send it a request.
        """
        entry = self.get_entry(name)
        if version is None:
            canary = entry.canary
            if canary is None or not routed:
                return entry.default
            chosen = entry.versions[canary.choose(entry.default.version)]
            self.metrics.routed(chosen, canary.role(chosen.version))
            return chosen
        found = entry.versions.get(version)
        if found is None:
            raise version_not_found(name, version)
        return found

    def list_models(self, limit: int, offset: int) -> dict[str, Any]:
        if limit < 0 or limit > 100:
            limit = 100
        names = sorted(n for n, e in self.models.items() if e.versions)
        page = names[offset : offset + limit]
        result: dict[str, Any] = {}
        if offset + limit <= len(names):
            result["nextPageToken"] = str(offset + limit)
        result["models"] = [{"modelName": n, "modelUrl": self.models[n].default.url} for n in page]
        return result

    # -- operations ---------------------------------------------------------------------------
    async def register(self, reg: Registration) -> tuple[int, dict[str, str]]:
        from ..archive.reader import extract

        url = reg.url
        if not url:
            raise bad_request("Parameter url is required.")
        if reg.runtime is not None and reg.runtime not in ("python", "python3", "LSP"):
            raise bad_request(f"Invalid RuntimeType value: {reg.runtime}")
        if reg.device_type not in (None, "", "cpu", "gpu"):
            raise bad_request(f"Invalid device_type {reg.device_type!r}: use cpu or gpu")
        limits.check_model_count(self.config, len(self.all_versions()))
        path = await resolve_url(
            url,
            self.model_store,
            list(self.config.allowed_urls),
            self.config.max_archive_size,
            self.config.download_timeout,
        )
        loop = asyncio.get_running_loop()
        limit = self.config.max_archive_size
        try:
            model_dir, manifest = await loop.run_in_executor(
                None,
                lambda: extract(
                    str(path),
                    str(self.cache_dir),
                    max_total_size=limit,
                    limit_name="max_archive_size",
                ),
            )
        except ArchiveTooLarge as e:
            if e.disk:
                raise ApiError(507, "InsufficientStorageException", str(e)) from None
            raise ApiError(413, "RequestEntityTooLarge", str(e)) from None
        except Exception as e:  # noqa: BLE001 - any unreadable archive is the caller's input
            raise bad_request(f"Failed to open model archive {url}: {e}") from None
        model_dir = str(model_dir)
        model = manifest.get("model", {})
        name = reg.model_name or model.get("modelName")
        if not name or not MODEL_NAME.match(name):
            raise bad_request(f"Invalid model name {name!r}: it must match {MODEL_NAME.pattern}")
        version = str(model.get("modelVersion") or "1.0")
        metadata: dict[str, Any] = {}
        meta_path = Path(model_dir) / METADATA_FILE
        if meta_path.exists():
            try:
                metadata = json.loads(meta_path.read_text())
            except ValueError:
                log.warning("ignoring an unreadable %s in %s", METADATA_FILE, url)
        settings = resolve(reg, model_yaml(model_dir, model.get("configFile")), self.config)
        if settings.min_workers < 0:
            raise bad_request("initial_workers cannot be negative")
        async with self._lock:
            entry = self.models.get(name)
            if entry is not None and version in entry.versions:
                raise ApiError(
                    409,
                    "ConflictStatusException",
                    f"Model version {version} is already registered for model {name}",
                )
            limits.check_model_count(self.config, len(self.all_versions()))
            limits.check_workers(
                self.config,
                self.all_versions(),
                None,
                settings.min_workers,
                settings.max_workers,
                what="initial_workers",
            )
            entry = self.models.setdefault(name, ModelEntry(name))
            mv = ModelVersion(
                self.pool,
                self.metrics,
                self.config,
                name=name,
                version=version,
                url=url,
                model_dir=model_dir,
                manifest=manifest,
                metadata=metadata,
                handler_override=reg.handler or None,
                settings=settings,
                loaded_at_startup=reg.loaded_at_startup,
                cache_key=Path(model_dir).name,
                log_path=self.log_dir / f"{name}.log",
            )
            entry.versions[version] = mv
            if entry.default_version is None or reg.make_default:
                entry.default_version = version
        lo, hi = settings.min_workers, settings.max_workers
        if lo == 0:
            mv.max_workers = hi
            self.save_snapshot()
            return 200, {
                "status": (
                    f'Model "{name}" Version: {version} registered with 0 initial workers. '
                    "Use scale workers API to add workers for the model."
                )
            }

        async def start() -> None:
            try:
                await mv.scale(lo, hi)
            except BaseException:
                await self._drop(mv)
                raise

        done = f'Model "{name}" Version: {version} registered with {lo} initial workers'
        return await self._update_workers(start, reg.synchronous, done)

    async def _update_workers(
        self, update: Callable[[], Awaitable[None]], synchronous: bool, done: str
    ) -> tuple[int, dict[str, str]]:
        """Run a worker update (start or scale) now, or in the background with TorchServe's
        202; either way the snapshot is saved once it has worked."""
        await self.pool.forkserver_ready()

        async def run() -> None:
            await update()
            self.save_snapshot()

        if not synchronous:
            task = asyncio.get_running_loop().create_task(run())
            task.add_done_callback(_log_task_error)
            return 202, {"status": "Processing worker updates..."}
        await run()
        return 200, {"status": done}

    async def _drop(self, mv: ModelVersion) -> None:
        """Forget a version whose workers failed to start, like TorchServe does."""
        await mv.unload()
        entry = self.models.get(mv.name)
        if entry is not None and entry.versions.get(mv.version) is mv:
            del entry.versions[mv.version]
            _end_canary_of(entry, mv.version)
            if entry.default_version == mv.version:
                entry.default_version = next(iter(entry.versions), None)
                _end_canary_of(entry, entry.default_version or "")
            if not entry.versions:
                del self.models[mv.name]
        self._release_cache(mv)

    def _release_cache(self, mv: ModelVersion) -> None:
        if mv.cache_key and not any(v.cache_key == mv.cache_key for v in self.all_versions()):
            shutil.rmtree(self.cache_dir / mv.cache_key, ignore_errors=True)
            shutil.rmtree(str(self.cache_dir / mv.cache_key) + "-deps", ignore_errors=True)

    async def scale(
        self,
        name: str,
        version: str | None,
        min_worker: int,
        max_worker: int | None,
        synchronous: bool,
        timeout: float | None,
    ) -> tuple[int, dict[str, str]]:
        mv = self.get_version(name, version, routed=False)
        if min_worker < 0:
            raise bad_request("min_worker cannot be negative.")
        max_worker = min_worker if max_worker is None else max_worker
        if max_worker < min_worker:
            raise bad_request("max_worker cannot be less than min_worker.")
        limits.check_workers(self.config, self.all_versions(), mv, min_worker, max_worker)
        done = f"Workers scaled to {min_worker} for model: {name}"
        if version:
            done += f", version: {version}"
        return await self._update_workers(
            lambda: mv.scale(min_worker, max_worker, timeout), synchronous, done
        )

    async def unregister(self, name: str, version: str | None) -> dict[str, str]:
        entry = self.get_entry(name)
        target = version or entry.default_version
        assert target is not None
        mv = entry.versions.get(target)
        if mv is None:
            raise version_not_found(name, target)
        if target == entry.default_version and len(entry.versions) > 1:
            raise ApiError(
                403,
                "InvalidModelVersionException",
                f"Cannot remove default version for model {name}",
            )
        del entry.versions[target]
        _end_canary_of(entry, target)
        if not entry.versions:
            del self.models[name]
        await mv.unload()
        self._release_cache(mv)
        self.save_snapshot()
        return {"status": f'Model "{name}" unregistered'}

    def set_default(self, name: str, version: str) -> dict[str, str]:
        entry = self.get_entry(name)
        if version not in entry.versions:
            raise version_not_found(name, version)
        entry.default_version = version
        _end_canary_of(entry, version)  # promoted: the canary has become the default
        self.save_snapshot()
        return {"status": f'Default version successfully updated for model "{name}" to "{version}"'}

    # -- canary (our extension; canary.py) ----------------------------------------------------
    def canary_json(self, name: str) -> dict[str, Any]:
        entry = self.get_entry(name)
        default = entry.default.version
        return {
            "modelName": name,
            "defaultVersion": default,
            "canary": None if entry.canary is None else entry.canary.to_json(default),
        }

    def start_canary(self, name: str, version: str, percent: float) -> dict[str, str]:
        """Send `percent` % of `name`'s default route to `version` (replacing a running
        canary: the counts start again, as they describe the new split)."""
        entry = self.get_entry(name)
        if version not in entry.versions:
            raise version_not_found(name, version)
        if version == entry.default_version:
            raise bad_request(
                f"Version {version} is the default version of model {name}: a canary must be "
                "another registered version"
            )
        entry.canary = Canary(version, percent)
        return {
            "status": f'Canary of model "{name}": version {version} takes {percent:g}% of the '
            f"default route, version {entry.default_version} the rest"
        }

    def end_canary(self, name: str) -> dict[str, str]:
        entry = self.get_entry(name)
        if entry.canary is None:
            raise ApiError(404, "CanaryNotFoundException", f"Model {name} has no canary")
        entry.canary = None
        return {
            "status": f'Canary of model "{name}" ended: version {entry.default_version} takes '
            "all of the default route"
        }

    # -- snapshot -----------------------------------------------------------------------------
    def save_snapshot(self) -> None:
        """Write the snapshot of the models now registered.

        It is called after a change has been made (register, scale, unregister, a new
        default), so it never raises: the change stands and the caller hears that it did;
        a snapshot that cannot be written (a full disk, a read-only folder) is logged, and
        the next change writes the whole state again.
        """
        if not self.config.snapshot or self._restoring:
            return
        try:
            snap = snapshot.to_json(
                ((n, e.default_version, e.versions) for n, e in self.models.items()),
                int(time.time() * 1000),
            )
            tmp = self.snapshot_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snap, indent=2, allow_nan=False))
            tmp.replace(self.snapshot_path)
        except Exception:  # noqa: BLE001 - see above: the change itself has been made
            log.exception("could not write the snapshot %s", self.snapshot_path)

    async def restore(self) -> None:
        """Load `model_snapshot` (given) or our last snapshot, then `load_models`."""
        snap = None
        if self.config.model_snapshot:
            snap = parse_model_snapshot(self.config.model_snapshot)
        elif self.config.snapshot and self.snapshot_path.exists():
            try:
                snap = json.loads(self.snapshot_path.read_text())
            except ValueError:
                log.error("ignoring an unreadable snapshot %s", self.snapshot_path)
        self._restoring = True
        try:
            if snap:
                for name, version, reg in snapshot.from_json(snap):
                    try:
                        await self.register(reg)
                    except ApiError as e:
                        log.error("could not restore %s version %s: %s", name, version, e.message)
            if self.config.load_models:
                await self._load_models(self.config.load_models)
        finally:
            self._restoring = False
        self.save_snapshot()

    async def _load_models(self, spec: str) -> None:
        items: list[tuple[str | None, str]] = []
        if spec.strip() == "all":
            items = [(None, p.name) for p in sorted(self.model_store.iterdir()) if is_archive(p)]
        else:
            for item in spec.split(","):
                item = item.strip()
                if not item:
                    continue
                name, _, url = item.rpartition("=")
                items.append((name or None, url))
        for name, url in items:
            try:
                await self.register(Registration(url, model_name=name, loaded_at_startup=True))
            except ApiError as e:
                if e.status != 409:
                    log.error("could not load %s: %s", url, e.message)


def _end_canary_of(entry: ModelEntry, version: str) -> None:
    """A canary ends when its version is unregistered or becomes the default (promoted)."""
    if entry.canary is not None and entry.canary.version == version:
        entry.canary = None


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("background worker update failed: %s", getattr(exc, "message", exc))
