"""The model registry without workers: versions registered with 0 workers start no process,
so `load_models`, the snapshot round trip and how register's settings resolve are tested
here in-process (fast tier). Serving through real workers: test_engine_behaviour.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

from _engine_helpers import probe_mar

from jupyter_torchserve.config import EngineConfig
from jupyter_torchserve.engine import snapshot
from jupyter_torchserve.engine.registration import Registration, resolve
from jupyter_torchserve.engine.registry import ModelRegistry


def _registry(tmp_path: Path, **config) -> ModelRegistry:
    return ModelRegistry(
        EngineConfig(
            state_dir=str(tmp_path / "state"),
            model_store=str(tmp_path / "store"),
            default_workers_per_model=0,
            disable_token_authorization=True,
            **config,
        )
    )


def _store_of_every_kind(store: Path) -> None:
    """The same probe archive as .mar, .zip, .tar.gz (torch-model-archiver's `<name>/`
    folder), .tgz and a directory, each under its own model name, plus two things that are
    not archives."""
    store.mkdir(parents=True)
    for name in ("a", "b", "c", "d", "e"):
        probe_mar(store, name)
    (store / "b-1.0.mar").rename(store / "b-1.0.zip")
    for name, suffix in (("c", ".tar.gz"), ("d", ".tgz")):
        folder = store / f"{name}-unpacked" / name
        with zipfile.ZipFile(store / f"{name}-1.0.mar") as z:
            z.extractall(folder)
        with tarfile.open(store / f"{name}-1.0{suffix}", "w:gz") as t:
            t.add(folder, arcname=name)
        shutil.rmtree(folder.parent)
        (store / f"{name}-1.0.mar").unlink()
    with zipfile.ZipFile(store / "e-1.0.mar") as z:
        z.extractall(store / "e-dir")
    (store / "e-1.0.mar").unlink()
    (store / "notes.txt").write_text("not an archive")
    (store / "empty-dir").mkdir()


def test_load_models_all_registers_every_archive_kind_in_the_store(tmp_path):
    _store_of_every_kind(tmp_path / "store")
    registry = _registry(tmp_path, load_models="all")

    async def scenario() -> dict[str, str]:
        await registry.restore()
        urls = {n: e.default.url for n, e in registry.models.items()}
        await registry.shutdown()
        return urls

    assert asyncio.run(scenario()) == {
        "a": "a-1.0.mar",
        "b": "b-1.0.zip",
        "c": "c-1.0.tar.gz",
        "d": "d-1.0.tgz",
        "e": "e-dir",
    }


def test_a_snapshot_restores_every_version_with_its_settings_and_default(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    probe_mar(store, "m", "1.0")
    probe_mar(store, "m", "2.0")

    async def first() -> list[dict]:
        registry = _registry(tmp_path)
        await registry.register(Registration("m-1.0.mar", batch_size=4, max_batch_delay=7))
        await registry.register(
            Registration("m-2.0.mar", response_timeout=9, initial_workers=0, max_workers=3)
        )
        registry.set_default("m", "2.0")
        described = [v.describe_json() for v in registry.get_entry("m").versions.values()]
        await registry.shutdown()
        return described

    async def again() -> tuple[list[dict], str | None]:
        registry = _registry(tmp_path)  # same state folder: it reads the snapshot
        await registry.restore()
        entry = registry.get_entry("m")
        described = [v.describe_json() for v in entry.versions.values()]
        await registry.shutdown()
        return described, entry.default_version

    before = asyncio.run(first())
    saved = json.loads((tmp_path / "state" / "snapshot.json").read_text())
    assert saved["modelCount"] == 2 and saved["models"]["m"]["2.0"]["defaultVersion"] is True
    assert saved["models"]["m"]["1.0"]["batchSize"] == 4
    after, default = asyncio.run(again())
    assert default == "2.0"
    keep = ("modelVersion", "modelUrl", "batchSize", "maxBatchDelay", "maxWorkers")
    keep += ("responseTimeout", "startupTimeout", "handler")
    assert [{k: d[k] for k in keep} for d in after] == [{k: d[k] for k in keep} for d in before]
    assert [d["loadedAtStartup"] for d in after] == [True, True]


def test_snapshot_layout_is_torchserves_and_reads_back_as_registrations():
    mv = SimpleNamespace(
        url="m.mar",
        min_workers=1,
        max_workers=2,
        batch_size=8,
        max_batch_delay=50,
        response_timeout=120.0,
        startup_timeout=60.0,
        handler_override=None,
        device_type="cpu",
    )
    snap = snapshot.to_json([("m", "1.0", {"1.0": mv, "2.0": mv})], 1234)
    assert snap == {
        "name": "snapshot",
        "created": 1234,
        "modelCount": 2,
        "models": {
            "m": {
                v: {
                    "defaultVersion": v == "1.0",
                    "marName": "m.mar",
                    "minWorkers": 1,
                    "maxWorkers": 2,
                    "batchSize": 8,
                    "maxBatchDelay": 50,
                    "responseTimeout": 120,
                    "startupTimeout": 60,
                    "handler": None,
                    "deviceType": "cpu",
                }
                for v in ("1.0", "2.0")
            }
        },
    }
    (name, version, reg), _ = list(snapshot.from_json(snap))
    assert (name, version) == ("m", "1.0")
    assert reg == Registration(
        "m.mar",
        model_name="m",
        batch_size=8,
        max_batch_delay=50,
        response_timeout=120,
        startup_timeout=60,
        device_type="cpu",
        initial_workers=1,
        max_workers=2,
        loaded_at_startup=True,
        make_default=True,
    )


def test_register_settings_come_from_the_call_then_the_archives_yaml_then_the_engine():
    config = EngineConfig(batch_size=1, max_batch_delay=100, default_workers_per_model=1)
    yaml_cfg = {"batchSize": 16, "maxBatchDelay": 5, "minWorkers": 2, "maxWorkers": 4}
    s = resolve(Registration("x", batch_size=3), yaml_cfg, config)
    assert (s.batch_size, s.max_batch_delay, s.min_workers, s.max_workers) == (3, 5, 2, 4)
    s = resolve(Registration("x", max_batch_delay=0, initial_workers=5), yaml_cfg, config)
    assert (s.max_batch_delay, s.min_workers, s.max_workers) == (0, 5, 5)  # never below min
    s = resolve(Registration("x"), {}, config)
    # REST register: TorchServe's documented initial_workers default, 0
    assert (s.batch_size, s.max_batch_delay, s.min_workers, s.max_workers) == (1, 100, 0, 0)
    s = resolve(Registration("x", loaded_at_startup=True), {}, config)
    assert (s.min_workers, s.max_workers) == (1, 1)  # a start-up model: default_workers_per_model
    assert s.response_timeout == config.default_response_timeout and s.device_type is None
