"""What is exported: a model's versions, each with its archive and its serving settings.

Read from a running engine through its management API (so what leaves the notebook is
what is being served: batch size, delay, workers, timeouts, the default version), or
from a `.mar` on disk, whose own settings are TorchServe's defaults unless the archive
carries a model-config YAML.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from ..client import Client

#: VersionSnapshot's fields and TorchServe's keys for them
KEYS = {
    "min_workers": "minWorkers",
    "max_workers": "maxWorkers",
    "batch_size": "batchSize",
    "max_batch_delay": "maxBatchDelay",
    "response_timeout": "responseTimeout",
}


class ExportError(ValueError):
    """The model or archive cannot be exported as asked; the message says what to change."""


@dataclass
class VersionSnapshot:
    """One version to export. The settings' defaults are TorchServe's register defaults,
    which a `.mar` that says nothing of them is served with."""

    version: str
    archive: Path  # a local .mar, .tar.gz or archive directory
    default: bool
    min_workers: int = 1
    max_workers: int = 1
    batch_size: int = 1
    max_batch_delay: int = 100  # ms
    response_timeout: int = 120  # s
    requirements: bool = False  # the archive has a requirements file to install
    handler_note: str | None = None  # registration named a handler the archive does not run

    @classmethod
    def from_settings(
        cls,
        version: str,
        archive: Path,
        default: bool,
        settings: dict[str, Any],
        requirements: bool,
    ) -> VersionSnapshot:
        """A version from TorchServe's keys (a describe answer, a model-config YAML): what
        they leave out is TorchServe's default, and maxWorkers is never below minWorkers."""
        defaults = {f.name: f.default for f in fields(cls)}
        got = {name: int(settings.get(key, defaults[name])) for name, key in KEYS.items()}
        got["max_workers"] = max(got["min_workers"], got["max_workers"])
        return cls(version, archive, default, requirements=requirements, **got)

    def settings(self) -> dict[str, Any]:
        """TorchServe's model_snapshot keys for this version (KServe's sample set)."""
        return {"defaultVersion": self.default} | {
            key: getattr(self, name) for name, key in KEYS.items()
        }


@dataclass
class ModelSnapshot:
    name: str
    versions: list[VersionSnapshot]
    source: str  # where it came from, for the bundle's README
    metadata: dict[str, Any] = field(default_factory=dict)  # MAR-INF/jupyter_torchserve.json
    canary_note: str | None = None  # the engine splits the default route: it does not travel

    @property
    def default(self) -> VersionSnapshot:
        return next(v for v in self.versions if v.default)


#: The engine an export reads a served model from: a client, or a function that makes one,
#: called only when `source` names a served model (an archive needs no engine), so that a
#: caller can hand over its own rule for which engine, e.g. the kernel's pinned one.
EngineChoice = Union["Client", Callable[[], "Client"], None]


def take_snapshot(
    source: str | os.PathLike[str], version: str | None, client: EngineChoice
) -> ModelSnapshot:
    """`source` is an archive path (it exists, or ends like one) or a served model's name."""
    from ..archive.reader import ARCHIVE_SUFFIXES

    text = os.fspath(source)
    if isinstance(source, os.PathLike) or os.path.exists(text) or text.endswith(ARCHIVE_SUFFIXES):
        return from_archive(Path(text), version)
    return from_engine(client, text, version)


def from_archive(path: Path, version: str | None = None) -> ModelSnapshot:
    from ..archive.reader import is_archive, read_manifest

    if not path.exists():
        raise ExportError(f"{path} does not exist: name a .mar that does, or a served model")
    if not is_archive(path):
        raise ExportError(f"{path} is not a model archive (.mar, .tar.gz or archive folder)")
    model = read_manifest(path).get("model", {})
    name = model.get("modelName") or path.stem
    found = str(model.get("modelVersion") or "1.0")
    if version is not None and version != found:
        raise ExportError(f"{path} holds version {found} of {name}, not {version}")
    settings = _model_config(path, model.get("configFile"))
    requirements = bool(model.get("requirementsFile"))
    snap = VersionSnapshot.from_settings(found, path.resolve(), True, settings, requirements)
    return ModelSnapshot(name, [snap], f"archive {path.resolve()}", _metadata(path))


def from_engine(client: EngineChoice, name: str, version: str | None = None) -> ModelSnapshot:
    """The versions of `name` that the engine behind `client` (None: the newest) serves now."""
    if client is None:
        from ..client import Client

        client = Client.from_discovery(timeout=30)
    elif callable(client):
        client = client()
    default = client.describe(name)[0]["modelVersion"]
    described = client.describe(name, "all")
    if version is not None:
        described = [d for d in described if d["modelVersion"] == version]
        if not described:
            raise ExportError(f"model {name} has no version {version} on the engine")
    store = Path(client.engine_status()["model_store"])
    versions = []
    for d in described:
        archive = _archive_path(d["modelUrl"], store, name)
        manifest = _manifest_model(archive)
        is_default = d["modelVersion"] == default or len(described) == 1
        requirements = bool(manifest.get("requirementsFile"))
        snap = VersionSnapshot.from_settings(
            d["modelVersion"], archive, is_default, d, requirements
        )
        snap.handler_note = _handler_note(snap.version, d.get("handler"), manifest.get("handler"))
        versions.append(snap)
    versions.sort(key=lambda v: (not v.default, v.version))
    where = f"model {name} served by the engine at {client.management_address}"
    snapshot = ModelSnapshot(name, versions, where, _metadata(versions[0].archive))
    if version is None:  # one version alone is that bundle's default: no split to lose
        snapshot.canary_note = _canary_note(described, default)
    return snapshot


def _canary_note(described: list[dict[str, Any]], default: str) -> str | None:
    """The engine's canary (engine/canary.py) has no place in TorchServe's model_snapshot,
    nor in the MLService or Ray app written here: the bundle serves the default version to
    every request that names none. Say so, and how KServe would split it."""
    canary = next((d for d in described if (d.get("traffic") or {}).get("role") == "canary"), None)
    if canary is None:
        return None
    version, percent = canary["modelVersion"], canary["traffic"]["percent"]
    return (
        f"version {version} takes {percent:g}% of the default route as a canary on the engine; "
        f"a canary does not travel: this bundle sends every request that names no version "
        f"to {default}, the default. On KServe, serve {default} first, then apply {version} "
        f"with canaryTrafficPercent: {percent:g} on the InferenceService's predictor."
    )


def _handler_note(version: str, served: str | None, archived: str | None) -> str | None:
    """A handler named at registration serves in place of the archive's, but it is not
    part of the archive, and TorchServe's model_snapshot (KServe, T9k) and the Ray app read
    the handler from the archive alone: say so rather than export something else quietly.
    `tensor` and the archiver's `jts_tensor.py` are one handler."""
    from ..handlers.resolve import split_handler

    def code(handler: str) -> tuple[str, str | None]:
        module, function = split_handler(handler)
        return module.removeprefix("jts_"), function

    if not served or not archived or code(served) == code(archived):
        return None
    return (
        f"version {version} is served with handler {served!r}, named when it was "
        f"registered; the exported archive runs its own handler {archived!r}. To export "
        f"what is served, archive the model again with handler={served!r}."
    )


def _archive_path(url: str, store: Path, name: str) -> Path:
    if url.startswith(("http://", "https://")):
        raise ExportError(
            f"model {name} was registered from {url}; download it and export the .mar path"
        )
    path = Path(url.removeprefix("file://")).expanduser()
    path = path if path.is_absolute() else store / path
    if not path.exists():
        raise ExportError(f"the archive of model {name} is gone from {path}")
    return path.resolve()


def _manifest_model(path: Path) -> dict[str, Any]:
    from ..archive.reader import read_manifest

    return read_manifest(path).get("model", {})


def _metadata(path: Path) -> dict[str, Any]:
    import json

    from ..archive.reader import read_member

    try:
        return json.loads(read_member(path, "MAR-INF/jupyter_torchserve.json"))
    except Exception:  # noqa: BLE001 - archives of torch-model-archiver have none
        return {}


def _model_config(path: Path, config_file: str | None) -> dict[str, Any]:
    """An archive's model-config YAML: the frontend keys TorchServe reads from it."""
    if not config_file:
        return {}
    import yaml

    from ..archive.reader import read_member

    data = yaml.safe_load(read_member(path, config_file)) or {}
    return {k: data[k] for k in KEYS.values() if isinstance(data, dict) and k in data}
