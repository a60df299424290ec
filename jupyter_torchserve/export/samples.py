"""Example request bodies for the bundle's curl steps, from the archive's own sample input.

`archive()` stores a KServe v2 request (`sample_input.json`) in every archive it writes;
the v1 body holds the same tensor, each row one instance (our engine's v1 rule: a bare
instance is one sample). Archives without a sample get none: the README says what to send.
"""

from __future__ import annotations

import json
from typing import Any

from .snapshot import ModelSnapshot


def sample_requests(model: ModelSnapshot) -> dict[str, Any]:
    """{"v2-request.json": body, "v1-request.json": body} or {} when the archive has none."""
    from ..archive.reader import read_member

    name = model.metadata.get("sample_input")
    if not name:
        return {}
    try:
        v2 = json.loads(read_member(model.default.archive, name))
        tensor = v2["inputs"][0]
        rows = _reshape(tensor["data"], tensor["shape"])
    except Exception:  # noqa: BLE001 - a sample we cannot read is simply not offered
        return {}
    return {"v2-request.json": v2, "v1-request.json": {"instances": rows}}


def _reshape(data: list[Any], shape: list[int]) -> Any:
    import numpy as np

    return np.asarray(data).reshape(shape).tolist()
