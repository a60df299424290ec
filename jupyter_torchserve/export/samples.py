"""Example request bodies for the bundle's call steps, from the archive's own sample input.

`archive()` stores a KServe v2 request (`sample_input.json`) in every archive it writes;
the v1 body holds the same tensor, each row one instance (our engine's v1 rule: a bare
instance is one sample), and the gRPC body is the same tensor as a `ModelInferRequest` in
protobuf's JSON form, which grpcurl reads. Archives without a sample get none: the README
says what to send.
"""

from __future__ import annotations

import json
from typing import Any

from ..handlers.builtins import IMAGE_HANDLERS
from .layout import BundleWriter
from .snapshot import ModelSnapshot

PREDICTIONS_REQUEST = "predictions-request.json"


def sample_requests(model: ModelSnapshot, grpc: bool = False) -> dict[str, Any]:
    """{"v2-request.json": body, "v1-request.json": body} (and "grpc-v2-request.json" when
    asked) or {} when the archive has none."""
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
    samples = {"v2-request.json": v2, "v1-request.json": {"instances": rows}}
    if grpc:
        grpc_body = grpc_request(model.name, v2)
        if grpc_body is not None:
            samples["grpc-v2-request.json"] = grpc_body
    return samples


def grpc_request(model_name: str, v2: dict[str, Any]) -> dict[str, Any] | None:
    """A REST v2 body as `inference.ModelInferRequest` JSON: each input's flat data in the
    typed `contents` field of its datatype (BYTES stays base64, as protobuf's JSON spells
    bytes). None when a datatype has no typed field (FP16: raw contents only)."""
    import numpy as np

    from ..v2_dtypes import GRPC_CONTENTS

    inputs = []
    for tensor in v2["inputs"]:
        datatype = tensor["datatype"]
        if datatype not in GRPC_CONTENTS:
            return None
        data = tensor["data"] if isinstance(tensor["data"], list) else [tensor["data"]]
        if datatype != "BYTES":
            data = np.asarray(data).reshape(-1).tolist()
        inputs.append(
            {
                "name": tensor["name"],
                "datatype": datatype,
                "shape": tensor["shape"],
                "contents": {GRPC_CONTENTS[datatype]: data},
            }
        )
    return {"model_name": model_name, "inputs": inputs}


def _reshape(data: list[Any], shape: list[int]) -> Any:
    import numpy as np

    return np.asarray(data).reshape(shape).tolist()


def predictions_call(model: ModelSnapshot, writer: BundleWriter, url: str) -> str:
    """The bundle's "call it" line for TorchServe's `/predictions` route, runnable as
    printed where the archive says what its handler reads: an image file for the image
    handlers, text for the text classifier, the archive's own sample (written beside it)
    for the tensor handler. A custom handler's body is its own business: the line says so."""
    handler = model.metadata.get("builtin_handler")
    if handler in IMAGE_HANDLERS:
        return f"curl -T your-image.png {url}   # any PNG or JPEG"
    if handler == "text_classifier":
        return f"curl {url} -H 'Content-Type: text/plain' --data-binary 'your text'"
    sample = sample_requests(model).get("v2-request.json")
    if handler == "tensor" and sample is not None:
        writer.text(PREDICTIONS_REQUEST, json.dumps(sample) + "\n")
        return f"curl {url} -H 'Content-Type: application/json' -d @{PREDICTIONS_REQUEST}"
    return f"curl {url} --data-binary @your-input   # the body your handler's preprocess reads"
