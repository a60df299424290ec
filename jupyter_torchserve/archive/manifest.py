"""The ``MAR-INF/MANIFEST.json`` layout exactly as torch-model-archiver 0.12 writes it.

torch-model-archiver builds the manifest from ``Manifest``/``Model`` objects and dumps it with
``json.dumps(indent=2)``; key order and "only present keys" matter to anyone diffing archives,
so we reproduce both. This module has no torch import: the engine uses it to validate manifests.
"""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from typing import Any

from .errors import ArchiveError, ArchiveWarning

ARCHIVER_VERSION = "0.12.0"
MAR_INF = "MAR-INF"
MANIFEST_NAME = "MANIFEST.json"
MANIFEST_PATH = f"{MAR_INF}/{MANIFEST_NAME}"
METADATA_PATH = f"{MAR_INF}/jupyter_torchserve.json"

#: TorchServe's model-name rule (torch-model-archiver ``check_model_name_regex_or_exit``).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
# Versions whose manifest layout we know: every torch-model-archiver release up to 0.12.x.
_KNOWN_VERSION_RE = re.compile(r"^0\.(\d+)\.\d+")
_MAX_KNOWN_MINOR = 12


def validate_model_name(name: object) -> str:
    """Return ``name`` if TorchServe accepts it as a model name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _MODEL_NAME_RE.match(name) or "\n" in name:
        raise ValueError(
            f"invalid model name {name!r}: TorchServe model names must match {MODEL_NAME_PATTERN} "
            "(start with a letter or digit, then letters, digits, '_', '-' or '.')"
        )
    return name


def build_manifest(
    model_name: str,
    serialized_file: str | None,
    handler: str,
    *,
    model_file: str | None = None,
    model_version: str | None = None,
    requirements_file: str | None = None,
    config_file: str | None = None,
    created_on: datetime | None = None,
    runtime: str = "python",
) -> dict[str, Any]:
    """Build the manifest dict with torch-model-archiver 0.12's key order and optional keys."""
    model: dict[str, Any] = {"modelName": model_name}
    if serialized_file:
        model["serializedFile"] = serialized_file
    model["handler"] = handler
    if model_file:
        model["modelFile"] = model_file.split("/")[-1]
    if model_version:
        model["modelVersion"] = model_version
    if requirements_file:
        model["requirementsFile"] = requirements_file.split("/")[-1]
    if config_file:
        model["configFile"] = config_file
    when = created_on or datetime.now()
    return {
        "createdOn": when.strftime("%d/%m/%Y %H:%M:%S"),
        "runtime": runtime,
        "model": model,
        "archiverVersion": ARCHIVER_VERSION,
    }


def dumps_manifest(manifest: dict[str, Any]) -> str:
    """Serialise like torch-model-archiver (``json.dumps(indent=2)``, no trailing newline)."""
    import json

    return json.dumps(manifest, indent=2)


def check_manifest(manifest: object, source: str = "archive") -> dict[str, Any]:
    """Validate a parsed manifest; warn (but accept) an unknown archiver version.

    Raises ``ArchiveError`` when the fields every loader needs are missing, because a worker
    that starts on such a manifest would only fail later with a less helpful message.
    """
    if not isinstance(manifest, dict):
        raise ArchiveError(f"{source}: {MANIFEST_PATH} is not a JSON object")
    model = manifest.get("model")
    if not isinstance(model, dict):
        raise ArchiveError(f"{source}: {MANIFEST_PATH} has no 'model' object")
    for key in ("modelName", "handler"):
        if not isinstance(model.get(key), str) or not model.get(key):
            raise ArchiveError(f"{source}: {MANIFEST_PATH} lacks model.{key}")
    for key in ("serializedFile", "modelFile", "requirementsFile", "configFile"):
        value = model.get(key)
        if value is not None and not isinstance(value, str):
            raise ArchiveError(f"{source}: {MANIFEST_PATH} model.{key} must be a string")
    version = manifest.get("archiverVersion")
    match = _KNOWN_VERSION_RE.match(version) if isinstance(version, str) else None
    if match is None or int(match.group(1)) > _MAX_KNOWN_MINOR:
        warnings.warn(
            f"{source}: manifest from unknown archiver version {version!r} "
            f"(known: torch-model-archiver <= {ARCHIVER_VERSION}); loading it anyway",
            ArchiveWarning,
            stacklevel=3,
        )
    return manifest
