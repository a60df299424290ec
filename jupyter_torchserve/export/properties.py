"""TorchServe `config.properties` files: the keys, and the `model_snapshot` that loads the
exported versions with their served settings at start (TorchServe 0.12 and our engine
both restore a `model_snapshot` given in the file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .layout import archive_file_name
from .snapshot import ExportError, ModelSnapshot


def model_snapshot(model: ModelSnapshot) -> str:
    """TorchServe's `model_snapshot` JSON for every exported version, on one line."""
    versions = {
        v.version: {**v.settings(), "marName": archive_file_name(model, v)} for v in model.versions
    }
    text = json.dumps(
        {"name": "startup.cfg", "modelCount": len(versions), "models": {model.name: versions}},
        separators=(",", ":"),
    )
    if "\\" in text:  # Java's Properties.load would eat the backslash of a JSON escape
        raise ExportError(f"model {model.name}: names must not need JSON escapes: {text}")
    return text


def properties_text(keys: Mapping[str, object], header: str) -> str:
    """`key=value` lines under a `#` header; values are written as TorchServe reads them."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    for key, value in keys.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if "\n" in text or "\\" in text:
            raise ExportError(f"config value of {key} cannot be written as one line: {text!r}")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"
