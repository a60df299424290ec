"""What a version's KServe v2 metadata says `/infer` answers, worked out once per version.

Pure (no torch, no transport): `ModelVersion` keeps the result, so REST and gRPC metadata,
the v2 `/infer` output's datatype and the Ray app's metadata read one description.
"""

from __future__ import annotations

from typing import Any

#: Built-in handlers whose postprocess answers JSON objects (label -> score, detections), not
#: numbers: `/infer` answers their output as BYTES, one JSON per row (kserve.py's
#: `_datatype`), whatever the traced output's datatype.
POSTPROCESSED_HANDLERS = frozenset({"image_classifier", "object_detector", "text_classifier"})
#: image_segmenter answers each row's per-pixel argmax over the traced [N, C, H, W] scores:
#: class indices [N, H, W], INT64 (torch's argmax), not the traced FP32 scores.
SEGMENTER = "image_segmenter"


def v2_metadata_tensors(
    metadata: dict[str, Any], builtin: str | None
) -> dict[str, list[dict[str, Any]]]:
    """An archive's schema (in its `metadata`) as `/infer` answers: the inputs, and the
    output named after the first input (as inference/kserve.py's `v2_infer_tensors` names
    it), so a client that reads the output name here and asks the answer for it
    (tritonclient's `as_numpy(name)`) finds it. `builtin` is the built-in handler that
    serves (ModelVersion.builtin_handler: the archive's, or the one named at registration);
    its postprocess decides the output's datatype and shape (`_served_output`), not the
    traced tensor the schema records."""
    schema = metadata.get("schema") or {}
    inputs = schema.get("inputs") or []
    outputs = schema.get("outputs") or []
    if inputs and outputs:
        outputs = [{**outputs[0], "name": inputs[0]["name"]}]
    return {"inputs": inputs, "outputs": [_served_output(o, builtin) for o in outputs[:1]]}


def _served_output(traced: dict[str, Any], builtin: str | None) -> dict[str, Any]:
    """The traced output as `builtin`'s postprocess answers it: BYTES [rows] for
    POSTPROCESSED_HANDLERS, INT64 [N, H, W] for the segmenter; the traced tensor otherwise."""
    shape = list(traced.get("shape") or [-1])
    if builtin in POSTPROCESSED_HANDLERS:
        return {**traced, "datatype": "BYTES", "shape": shape[:1]}
    if builtin == SEGMENTER:
        return {**traced, "datatype": "INT64", "shape": shape[:1] + shape[2:]}
    return traced
