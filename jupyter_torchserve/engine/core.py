"""The engine: registry of model versions and the operations the management API exposes.

HTTP handlers stay thin (parse, call one method here, format the answer); everything with
state lives here, so the same operations back register, snapshot restore and `load_models`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import EngineConfig, parse_model_snapshot
from . import forkserver
from .errors import ApiError, bad_request, invalid_key, model_not_found, version_not_found
from .gpu import GpuAssigner, list_gpus
from .keys import KeyStore
from .metrics import EngineMetrics
from .model import ModelVersion
from .protocol import FrameLink
from .store import resolve_url
from .workers import Worker

log = logging.getLogger("jupyter_torchserve.engine")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
METADATA_FILE = "MAR-INF/jupyter_torchserve.json"


class ModelEntry:
    def __init__(self, name: str) -> None:
        self.name = name
        self.versions: dict[str, ModelVersion] = {}
        self.default_version: str | None = None

    @property
    def default(self) -> ModelVersion:
        assert self.default_version is not None
        return self.versions[self.default_version]


class Engine:
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
        # Unix socket paths are limited to 107 bytes: keep them short and private
        self._sock_dir = tempfile.mkdtemp(prefix="jts-")
        self.worker_socket = os.path.join(self._sock_dir, "w.sock")
        self.keys: KeyStore | None = None
        if not config.disable_token_authorization:
            self.keys = KeyStore(self.state_dir / "key_file.json", config.token_expiration_min)
        self.models: dict[str, ModelEntry] = {}
        self.pending_workers: dict[str, Worker] = {}
        gpus = list_gpus()
        count = len(gpus) if config.number_of_gpu is None else min(len(gpus), config.number_of_gpu)
        self.gpu_count = count
        self.cpus = os.cpu_count() or 1
        self.busy_workers: set[Worker] = set()  # those with a batch out (kept by Worker)
        self.gpus = GpuAssigner(count)
        self.metrics = EngineMetrics(self)
        self._worker_ids = 9000
        self._server: asyncio.AbstractServer | None = None
        self._forkserver_ready: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._restoring = False

    # -- start / stop -------------------------------------------------------------------------
    async def start_worker_server(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: FrameLink(self._on_worker_hello), self.worker_socket
        )
        os.chmod(self.worker_socket, 0o600)
        self._forkserver_ready = loop.run_in_executor(None, forkserver.warm)

    def _on_worker_hello(self, link: FrameLink, header: dict[str, Any]) -> None:
        worker = self.pending_workers.pop(str(header.get("worker_id")), None)
        if worker is None:
            link.close()
            return
        worker.attach(link)

    async def shutdown(self) -> None:
        versions = list(self.all_versions())
        await asyncio.gather(*(v.unload() for v in versions), return_exceptions=True)
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        if self.keys is not None:
            self.keys.remove()

    # -- helpers for workers ------------------------------------------------------------------
    def next_worker_id(self) -> str:
        self._worker_ids += 1
        return str(self._worker_ids - 1)

    def assign_gpu(self, device_type: str | None) -> int | None:
        return self.gpus.assign(device_type)

    def authorize(self, api: str, authorization: str | None) -> None:
        """Raise TorchServe's invalid-key error unless `authorization` (the Authorization
        header) carries `api`'s key, where one is needed: management always, inference only
        with `inference_token_required`, nothing with token auth off."""
        keys = self.keys
        if keys is None:
            return
        required = api == "management" or self.config.inference_token_required
        if required and not keys.check(api, authorization):
            raise invalid_key()

    def answer_due(self) -> float | None:
        """Seconds until the next worker answer is expected (negative: late), for the
        selector's busy-poll; None when polling would not pay.

        It pays only at light load: a worker with a second batch already waiting, or
        requests queued, has its next work whatever the engine's wake-up costs, and the
        clients of a loaded engine need the CPU more. And only while the busy workers
        leave a CPU free for the engine to poll on.
        """
        busy = self.busy_workers
        if not busy or len(busy) >= self.cpus:
            return None
        due = math.inf
        for worker in busy:
            if not _lightly_loaded(worker):
                return None
            due = min(due, worker.answer_expected_at())
        return due - time.perf_counter()

    def worker_poll_us(self, worker: Worker) -> int:
        """How long `worker`, just given a batch, may busy-poll for its next one after it
        answers: only at light load (this is its one batch and nothing is queued), and only
        while the engine and every busy worker still have a CPU each; beyond that a polling
        worker would take the CPU that another one, or the engine, is waiting for.
        """
        if not _lightly_loaded(worker) or len(self.busy_workers) >= self.cpus:
            return 0
        return self.config.busy_poll_us

    def threads_per_worker(self) -> int:
        """torch intra-op threads for a new worker.

        Sized from the workers the engine is *asked* for (every version's min_workers, so two
        workers started together get the same count), leaving one core to the HTTP frontend.
        Measured on 2 cores (docs/performance.md): two threads beside the event loop made
        small ops wait milliseconds for a core, 338 vs 2,337 req/s for the same model.
        """
        if self.config.worker_threads > 0:
            return self.config.worker_threads
        planned = sum(v.min_workers for v in self.all_versions()) or 1
        return max(1, (self.cpus - 1) // planned)

    async def requirements_for(self, version: ModelVersion) -> str | None:
        """Install an archive's requirements into a per-model folder, when opted in."""
        req = version.manifest.get("model", {}).get("requirementsFile")
        if not (self.config.install_py_dep_per_model and req):
            return None
        target = Path(version.model_dir + "-deps")
        if not target.exists():
            from ..handlers.requirements import install_requirements

            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(
                    None, install_requirements, version.model_dir, str(target)
                )
            except Exception as e:  # noqa: BLE001
                shutil.rmtree(target, ignore_errors=True)
                raise ApiError(
                    500,
                    "InternalServerException",
                    f"Installing the requirements of model {version.name} failed: {e}",
                ) from None
        return str(target)

    async def _wait_forkserver(self) -> None:
        if self._forkserver_ready is not None:
            await self._forkserver_ready

    # -- registry -----------------------------------------------------------------------------
    def all_versions(self) -> list[ModelVersion]:
        return [v for entry in self.models.values() for v in entry.versions.values()]

    def get_entry(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None or not entry.versions:
            raise model_not_found(name)
        return entry

    def get_version(self, name: str, version: str | None = None) -> ModelVersion:
        entry = self.get_entry(name)
        if version is None:
            return entry.default
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
    async def register(
        self,
        url: str,
        *,
        model_name: str | None = None,
        handler: str | None = None,
        runtime: str | None = None,
        batch_size: int | None = None,
        max_batch_delay: int | None = None,
        initial_workers: int | None = None,
        synchronous: bool = True,
        response_timeout: float | None = None,
        startup_timeout: float | None = None,
        device_type: str | None = None,
        loaded_at_startup: bool = False,
        min_workers: int | None = None,
        max_workers: int | None = None,
        make_default: bool = False,
    ) -> tuple[int, dict[str, str]]:
        from ..archive.reader import extract

        if not url:
            raise bad_request("Parameter url is required.")
        if runtime is not None and runtime not in ("python", "python3", "LSP"):
            raise bad_request(f"Invalid RuntimeType value: {runtime}")
        if device_type not in (None, "", "cpu", "gpu"):
            raise bad_request(f"Invalid device_type {device_type!r}: use cpu or gpu")
        path = await resolve_url(
            url, self.model_store, list(self.config.allowed_urls), self.config.max_archive_size
        )
        loop = asyncio.get_running_loop()
        try:
            model_dir, manifest = await loop.run_in_executor(
                None, lambda: extract(str(path), str(self.cache_dir))
            )
        except Exception as e:  # noqa: BLE001 - any unreadable archive is the caller's input
            raise bad_request(f"Failed to open model archive {url}: {e}") from None
        model_dir = str(model_dir)
        model = manifest.get("model", {})
        name = model_name or model.get("modelName")
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
        yaml_cfg = _model_yaml(model_dir, model.get("configFile"))
        async with self._lock:
            entry = self.models.setdefault(name, ModelEntry(name))
            if version in entry.versions:
                raise ApiError(
                    409,
                    "ConflictStatusException",
                    f"Model version {version} is already registered for model {name}",
                )
            mv = ModelVersion(
                self,
                name=name,
                version=version,
                url=url,
                model_dir=model_dir,
                manifest=manifest,
                metadata=metadata,
                handler_override=handler or None,
                batch_size=batch_size or int(yaml_cfg.get("batchSize", self.config.batch_size)),
                max_batch_delay=(
                    max_batch_delay
                    if max_batch_delay is not None
                    else int(yaml_cfg.get("maxBatchDelay", self.config.max_batch_delay))
                ),
                response_timeout=response_timeout
                or float(yaml_cfg.get("responseTimeout", self.config.default_response_timeout)),
                startup_timeout=startup_timeout
                or float(yaml_cfg.get("startupTimeout", self.config.default_startup_timeout)),
                device_type=device_type or yaml_cfg.get("deviceType"),
                loaded_at_startup=loaded_at_startup,
                cache_key=Path(model_dir).name,
            )
            entry.versions[version] = mv
            if entry.default_version is None or make_default:
                entry.default_version = version
        if initial_workers is None:
            initial_workers = int(yaml_cfg.get("minWorkers", self.config.default_workers_per_model))
        if initial_workers < 0:
            await self._drop(mv)
            raise bad_request("initial_workers cannot be negative")
        lo = initial_workers if min_workers is None else min_workers
        hi = max(
            lo, max_workers if max_workers is not None else int(yaml_cfg.get("maxWorkers", lo))
        )
        if lo == 0:
            mv.max_workers = hi
            self.save_snapshot()
            return 200, {
                "status": (
                    f'Model "{name}" Version: {version} registered with 0 initial workers. '
                    "Use scale workers API to add workers for the model."
                )
            }
        await self._wait_forkserver()

        async def start() -> None:
            try:
                await mv.scale(lo, hi)
            except BaseException:
                await self._drop(mv)
                raise
            self.save_snapshot()

        if not synchronous:
            task = asyncio.get_running_loop().create_task(start())
            task.add_done_callback(_log_task_error)
            return 202, {"status": "Processing worker updates..."}
        await start()
        return 200, {
            "status": f'Model "{name}" Version: {version} registered with {lo} initial workers'
        }

    async def _drop(self, mv: ModelVersion) -> None:
        """Forget a version whose workers failed to start, like TorchServe does."""
        await mv.unload()
        entry = self.models.get(mv.name)
        if entry is not None and entry.versions.get(mv.version) is mv:
            del entry.versions[mv.version]
            if entry.default_version == mv.version:
                entry.default_version = next(iter(entry.versions), None)
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
        mv = self.get_version(name, version)
        if min_worker < 0:
            raise bad_request("min_worker cannot be negative.")
        max_worker = min_worker if max_worker is None else max_worker
        if max_worker < min_worker:
            raise bad_request("max_worker cannot be less than min_worker.")
        await self._wait_forkserver()

        async def run() -> None:
            await mv.scale(min_worker, max_worker, timeout)
            self.save_snapshot()

        if not synchronous:
            task = asyncio.get_running_loop().create_task(run())
            task.add_done_callback(_log_task_error)
            return 202, {"status": "Processing worker updates..."}
        await run()
        msg = f"Workers scaled to {min_worker} for model: {name}"
        if version:
            msg += f", version: {version}"
        return 200, {"status": msg}

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
        self.save_snapshot()
        return {"status": f'Default version successfully updated for model "{name}" to "{version}"'}

    # -- snapshot -----------------------------------------------------------------------------
    def save_snapshot(self) -> None:
        """TorchServe's model_snapshot layout, so either server can restore the other's."""
        if not self.config.snapshot or self._restoring:
            return
        models: dict[str, dict[str, Any]] = {}
        for name, entry in self.models.items():
            models[name] = {}
            for v, mv in entry.versions.items():
                models[name][v] = {
                    "defaultVersion": v == entry.default_version,
                    **mv.snapshot_json(),
                }
        snap = {
            "name": "snapshot",
            "created": int(time.time() * 1000),
            "modelCount": sum(len(e.versions) for e in self.models.values()),
            "models": models,
        }
        tmp = self.snapshot_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(snap, indent=2))
        tmp.replace(self.snapshot_path)

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
                await self._restore_snapshot(snap)
            if self.config.load_models:
                await self._load_models(self.config.load_models)
        finally:
            self._restoring = False
        self.save_snapshot()

    async def _restore_snapshot(self, snap: dict[str, Any]) -> None:
        for name, versions in (snap.get("models") or {}).items():
            for version, spec in versions.items():
                try:
                    await self.register(
                        spec["marName"],
                        model_name=name,
                        handler=spec.get("handler"),
                        batch_size=spec.get("batchSize"),
                        max_batch_delay=spec.get("maxBatchDelay"),
                        response_timeout=spec.get("responseTimeout"),
                        startup_timeout=spec.get("startupTimeout"),
                        device_type=spec.get("deviceType"),
                        initial_workers=int(spec.get("minWorkers", 1)),
                        max_workers=spec.get("maxWorkers"),
                        loaded_at_startup=True,
                        # the default is in place before any worker answers
                        make_default=bool(spec.get("defaultVersion")),
                    )
                except ApiError as e:
                    log.error("could not restore %s version %s: %s", name, version, e.message)

    async def _load_models(self, spec: str) -> None:
        items: list[tuple[str | None, str]] = []
        if spec.strip() == "all":
            for path in sorted(self.model_store.iterdir()):
                if (
                    path.suffix == ".mar"
                    or path.name.endswith(".tar.gz")
                    or (path.is_dir() and (path / "MAR-INF" / "MANIFEST.json").exists())
                ):
                    items.append((None, path.name))
        else:
            for item in spec.split(","):
                item = item.strip()
                if not item:
                    continue
                name, _, url = item.rpartition("=")
                items.append((name or None, url))
        for name, url in items:
            try:
                await self.register(url, model_name=name, loaded_at_startup=True)
            except ApiError as e:
                if e.status != 409:
                    log.error("could not load %s: %s", url, e.message)

    # -- status -------------------------------------------------------------------------------
    def status_json(self, addresses: dict[str, str]) -> dict[str, Any]:
        from .._version import __version__

        return {
            "version": __version__,
            "pid": os.getpid(),
            "started": self.started,
            "uptime_s": round(time.time() - self.started, 1),
            **addresses,
            "model_store": str(self.model_store),
            "log_dir": str(self.log_dir),
            "token_auth": self.keys is not None,
            "max_request_size": self.config.max_request_size,
            "max_response_size": self.config.max_response_size,
            "gpus": [g.to_json() for g in list_gpus()[: self.gpu_count]],
            "models": sum(len(e.versions) for e in self.models.values()),
            "workers": sum(len(v.live_workers) for v in self.all_versions()),
        }


def _model_yaml(model_dir: str, config_file: str | None) -> dict[str, Any]:
    """Frontend keys of an archive's model-config YAML (minWorkers, batchSize, ...)."""
    if not config_file:
        return {}
    path = Path(model_dir) / config_file
    try:
        import yaml
    except ImportError:
        log.warning("%s needs PyYAML to be read; its settings are ignored", config_file)
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise bad_request(f"Cannot read the model config {config_file}: {e}") from None
    return data if isinstance(data, dict) else {}


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("background worker update failed: %s", getattr(exc, "message", exc))


def _lightly_loaded(worker: Worker) -> bool:
    """One batch out and nothing queued for its model: the only case where busy-polling
    pays (with more, the next work is already there whatever a wake-up costs)."""
    return len(worker.inflight) <= 1 and not worker.version.queue
