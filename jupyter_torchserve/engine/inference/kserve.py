"""KServe v1 and v2 (Open Inference Protocol) as calls, apart from any transport.

TorchServe needs `service_envelope=kserve` or `kservev2` for the whole server; here each call
decodes its own envelope into ordinary jobs, so one engine answers all three protocols.
v1: each instance becomes one job (they batch together). v2: a numeric tensor travels to the
worker as `.npy` bytes (exact dtype, no JSON of floats); BYTES elements become one job each.

The callers resolve the model version and decode their body first (HTTP: a 404 before a
400), then pass Python objects: a parsed JSON dict, or for v2 `Tensor`s, which a gRPC
servicer can fill from protobuf contents (typed lists, raw bytes as an array) without
re-encoding them as JSON. `run` queues the items of one request and waits for their replies
(`predictions.run_jobs`, bound to the caller's request id and hang-up handling).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..._version import __version__
from ...content import is_binary
from ...v2_dtypes import EXPLAIN_OUTPUT, V2_DTYPES
from .. import jsonbody
from ..errors import ApiError, bad_request
from ..jobs import Reply
from ..model import ModelVersion
from ..registry import ModelEntry, ModelRegistry
from .predictions import Params

Run = Callable[[list[Params], dict[str, str]], Awaitable[list[Reply]]]
"""Queues one job per item (with these handler headers) and waits for their replies."""


PLATFORMS = {
    "export": "pytorch_export",
    "torchscript": "pytorch_torchscript",
    "eager": "pytorch_eager",
}


def _reply_value(reply: Reply) -> Any:
    if reply.status >= 400:
        raise ApiError(reply.status, "InternalServerException", reply.body.decode(errors="replace"))
    if reply.content_type.startswith("application/json"):
        return json.loads(reply.body)
    try:
        return reply.body.decode()
    except UnicodeDecodeError:
        return base64.b64encode(reply.body).decode()


def json_body(body: bytes) -> Any:
    return jsonbody.parse(body or b"null")


def v1_envelope(body: bytes) -> dict[str, Any] | None:
    """The parsed body when it is a KServe v1 envelope (a JSON object with "instances"),
    else None: TorchServe without `service_envelope` hands any other body (a PNG from
    `curl -T`, raw bytes, plain JSON) to the handler as it came, and so does `:predict`.
    JSON nested past what the parser can read is refused here (jsonbody's 400): no handler
    could read it either."""
    if body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        payload = json.loads(body)
    except RecursionError:
        return jsonbody.parse(body)  # raises its 400
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and "instances" in payload else None


def error_body(err: ApiError, with_traceback: bool = False) -> dict[str, Any]:
    """A v2 error: OIP clients read "error"; TorchServe clients read code/type/message."""
    body = err.to_json(with_traceback)
    return {**body, "error": body["message"]}


# -- v1 ------------------------------------------------------------------------------------
def v1_instance_params(instance: Any) -> Params:
    if isinstance(instance, dict):
        if "b64" in instance and len(instance) == 1:
            try:
                return [
                    (
                        "body",
                        "application/octet-stream",
                        base64.b64decode(instance["b64"], validate=True),
                    )
                ]
            except (binascii.Error, TypeError):
                raise bad_request("instance field b64 is not valid base64") from None
        return [(k, "application/json", json.dumps(v).encode()) for k, v in instance.items()]
    # a bare tensor instance is ONE sample: send it as a batch of one, unwrap the answer
    return [("body", "application/json", json.dumps([instance]).encode())]


def v1_prediction(instance: Any, reply: Reply) -> Any:
    value = _reply_value(reply)
    if not isinstance(instance, dict) and isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def v1_status(entry: ModelEntry) -> dict[str, Any]:
    """`GET /v1/models/{name}`."""
    return {"name": entry.name, "ready": bool(entry.default.ready_workers)}


async def v1_predict(
    payload: Any, headers: dict[str, str], run: Run, *, explain: bool = False
) -> dict[str, Any]:
    """`:predict` or `:explain` of a v1 body `{"instances": [...]}`: each instance is one job."""
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise bad_request('KServe v1 expects a JSON object {"instances": [...]}')
    instances = payload["instances"]
    if not instances:
        raise bad_request("instances is empty")
    if explain:
        headers = {**headers, "explain": "True"}
    replies = await run([v1_instance_params(i) for i in instances], headers)
    key = "explanations" if explain else "predictions"
    return {key: [v1_prediction(i, r) for i, r in zip(instances, replies, strict=True)]}


# -- v2 ------------------------------------------------------------------------------------
@dataclass
class Tensor:
    """One v2 input: `data` is its elements, flat or nested as JSON has them, or an array.
    BYTES elements are str (base64 of binary data, or text), bytes, or JSON values."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


def v2_server() -> dict[str, Any]:
    """`GET /v2`: server metadata."""
    return {
        "name": "jupyter_torchserve",
        "version": __version__,
        "extensions": ["kserve", "kubeflow", "torchserve"],
    }


def v2_live() -> dict[str, Any]:
    return {"live": True}


def v2_ready(registry: ModelRegistry) -> dict[str, Any]:
    """Ready when every version that asks for workers has one ready."""
    return {"ready": all(v.ready_workers for v in registry.all_versions() if v.min_workers)}


def v2_model_ready(name: str, mv: ModelVersion) -> dict[str, Any]:
    return {"name": name, "ready": bool(mv.ready_workers)}


def v2_model_metadata(entry: ModelEntry, mv: ModelVersion) -> dict[str, Any]:
    """`GET /v2/models/{name}[/versions/{v}]`: the schema the archive was made with."""
    return {
        "name": entry.name,
        "versions": sorted(entry.versions),
        "platform": PLATFORMS.get(mv.metadata.get("format") or "", "pytorch_torchserve"),
        **mv.v2_tensors,
    }


def v2_tensors(payload: Any) -> list[Tensor]:
    """The inputs of a JSON v2 request, checked."""
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("inputs"), list)
        or not payload["inputs"]
    ):
        raise bad_request('KServe v2 expects {"inputs": [{"name", "shape", "datatype", "data"}]}')
    return [_check_input(i) for i in payload["inputs"]]


async def v2_infer(
    mv: ModelVersion, payload: Any, headers: dict[str, str], run: Run, *, explain: bool = False
) -> dict[str, Any]:
    """`POST /v2/models/{name}[/versions/{v}]/infer` (or `/explain`) with a JSON body, parsed."""
    inputs = v2_tensors(payload)
    if explain:
        outputs = await v2_explain_tensors(mv, inputs, headers, run, v2_target(payload))
    else:
        outputs = [await v2_infer_tensors(mv, inputs, headers, run)]
    return {
        "id": payload.get("id") or str(uuid.uuid4()),
        "model_name": mv.name,
        "model_version": mv.version,
        "outputs": outputs,
    }


async def v2_infer_tensors(
    mv: ModelVersion, inputs: list[Tensor], headers: dict[str, str], run: Run
) -> dict[str, Any]:
    """The output tensor for checked inputs: one BYTES input is one job per element,
    anything else one job. The output takes the first input's name, as TorchServe's kservev2
    envelope names it (clients ask `as_numpy(name)` for it), and the datatype the model's
    metadata gives it (ModelVersion.v2_tensors) while the handler answers numbers."""
    described = mv.v2_tensors["outputs"]
    out_name = inputs[0].name
    out_dtype = described[0].get("datatype") if described else None
    items, per_element = _v2_items(mv, inputs)
    values = [_reply_value(r) for r in await run(items, headers)]
    if per_element:
        return _bytes_or_tensor_output(out_name, values, out_dtype)
    return _tensor_output(out_name, values[0], out_dtype)


async def v2_explain_tensors(
    mv: ModelVersion,
    inputs: list[Tensor],
    headers: dict[str, str],
    run: Run,
    target: Any = None,
) -> list[dict[str, Any]]:
    """`/explain`: the jobs `/infer` would run, asked for explanations (header `explain:
    True`, as TorchServe's frontend sets it), answered as KServe's TorchServe sample does:
    an output named `explain`, FP64, shaped like one request's attributions (one BYTES
    element: its own shape; several: stacked), data flattened. The facts of each answer's
    `x-explanation` header go into that output's `parameters`; a text answer's words are
    a second output, `words`. `target` (the request's `parameters.target`) is every job's
    `target` field, or one per BYTES element when it is a list of that length."""
    items, per_element = _v2_items(mv, inputs)
    if target is not None:
        targets = (
            target
            if per_element and isinstance(target, list) and len(target) == len(items)
            else [target] * len(items)
        )
        items = [
            [*params, ("target", "application/json", json.dumps(t).encode())]
            for params, t in zip(items, targets, strict=True)
        ]
    replies = await run(items, {**headers, "explain": "True"})
    values = [_reply_value(r) for r in replies]
    facts = [_explanation_facts(r) for r in replies]
    outputs = []
    if values and all(isinstance(v, dict) and "importances" in v for v in values):
        for value, fact in zip(values, facts, strict=True):
            if fact.get("delta") is None and value.get("delta") is not None:
                fact["delta"] = value["delta"]
        outputs.append(_stacked_output(EXPLAIN_OUTPUT, [v["importances"] for v in values], "FP64"))
        outputs.append(_stacked_output("words", [v.get("words") or [] for v in values], "BYTES"))
    else:
        outputs.append(_stacked_output(EXPLAIN_OUTPUT, values, "FP64"))
    parameters = _explanation_parameters(facts)
    if parameters:
        outputs[0]["parameters"] = parameters
    return outputs


def v2_target(payload: dict[str, Any]) -> Any:
    """The class an explanation is asked toward: the request's `parameters.target`."""
    parameters = payload.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise bad_request("parameters must be an object")
    return parameters.get("target")


def _v2_items(mv: ModelVersion, inputs: list[Tensor]) -> tuple[list[Params], bool]:
    """The jobs of checked inputs, and whether they are one per element of a lone BYTES
    input (otherwise the request is one job)."""
    if len(inputs) == 1 and inputs[0].datatype == "BYTES":
        return [[("body", *_bytes_element(x))] for x in _flatten(inputs[0].data)], True
    if len(inputs) == 1 and mv.builtin_handler:
        # our handlers read .npy: exact dtype, no JSON of floats
        params = [("body", "application/x-npy", _npy(inputs[0]))]
    elif len(inputs) == 1:
        # what TorchServe's kservev2 envelope gives a handler: {"data": nested list}
        nested = json.dumps(_array(inputs[0]).tolist()).encode()
        params = [("data", "application/json", nested)]
    else:
        data = {i.name: _array(i).tolist() for i in inputs}
        params = [("body", "application/json", json.dumps(data).encode())]
    return [params], False


#: the header the built-in handlers set (jts_base.EXPLANATION_HEADER; archives' handler
#: files import nothing of ours, so the name is spelled in both places)
EXPLANATION_HEADER = "x-explanation"


def _explanation_facts(reply: Reply) -> dict[str, Any]:
    """The reply's `x-explanation` header as a dict ({} when the handler sent none)."""
    for key, value in reply.headers.items():
        if key.lower() == EXPLANATION_HEADER:
            try:
                facts = json.loads(value)
            except ValueError:
                return {}
            return facts if isinstance(facts, dict) else {}
    return {}


def _explanation_parameters(facts: list[dict[str, Any]]) -> dict[str, Any]:
    """OIP parameters are scalars: each fact as it is when it is one, as compact JSON text
    otherwise; for several jobs, each fact is the list of their values."""
    if len(facts) == 1:
        merged = facts[0]
    else:
        keys = list(dict.fromkeys(k for f in facts for k in f))
        merged = {k: [f.get(k) for f in facts] for k in keys}
    return {
        k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v, separators=(",", ":"))
        for k, v in merged.items()
        if v is not None
    }


def _stacked_output(name: str, values: list[Any], datatype: str) -> dict[str, Any]:
    """One job's value, or several stacked, as a v2 output of `datatype` (FP64 or BYTES);
    values that do not stack into one rectangular array come as BYTES, one JSON per job."""
    import numpy as np

    value = values[0] if len(values) == 1 else values
    try:
        array = np.asarray(value, dtype=np.float64 if datatype == "FP64" else np.str_)
        if array.dtype.kind == "O":
            raise ValueError("not rectangular")
    except (ValueError, TypeError):
        data = [v if isinstance(v, str) else json.dumps(v) for v in values]
        return {"name": name, "datatype": "BYTES", "shape": [len(data)], "data": data}
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape) or [1],
        "data": array.reshape(-1).tolist(),
    }


def _check_input(item: Any) -> Tensor:
    if not isinstance(item, dict):
        raise bad_request("each input must be an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype", "data"):
        if key not in item:
            raise bad_request(f"input is missing {key!r}")
    dt = item["datatype"]
    if not isinstance(dt, str) or (dt != "BYTES" and dt not in V2_DTYPES):
        raise bad_request(f"unsupported datatype {dt!r} for input {item['name']}")
    shape = item["shape"]
    # BYTES elements are one job each and never reshaped: KServe's own samples say [-1]
    least = -1 if dt == "BYTES" else 0
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= least for d in shape
    ):
        what = "ints of at least -1" if dt == "BYTES" else "non-negative ints"
        raise bad_request(f"shape of input {item['name']} must be a list of {what}")
    if dt != "BYTES":
        try:
            n = len(_flatten(item["data"]))
        except RecursionError:
            raise bad_request(f"data of input {item['name']} is nested too deeply") from None
        if n != math.prod(shape):
            raise bad_request(
                f"input {item['name']} has {n} values but shape {shape} needs {math.prod(shape)}"
            )
    return Tensor(item["name"], dt, shape, item["data"])


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for x in data:
        out.extend(_flatten(x)) if isinstance(x, list) else out.append(x)
    return out


def _array(tensor: Tensor) -> Any:
    import numpy as np

    data = tensor.data
    try:
        flat = data.reshape(-1) if isinstance(data, np.ndarray) else _flatten(data)
        return np.asarray(flat, dtype=V2_DTYPES[tensor.datatype]).reshape(tensor.shape)
    except (ValueError, TypeError, OverflowError) as e:  # Overflow: INT8 1000, UINT8 -1, inf
        raise bad_request(f"input {tensor.name}: {e}") from None


def _npy(tensor: Tensor) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, _array(tensor), allow_pickle=False)
    return buf.getvalue()


def _bytes_element(x: Any) -> tuple[str, bytes]:
    """A v2 BYTES element: base64 of binary data (images, .npy) is decoded, bytes (gRPC's
    bytes_contents) pass as they are, text stays text, other JSON values stay JSON."""
    if isinstance(x, bytes):
        return "application/octet-stream", x
    if not isinstance(x, str):
        return "application/json", json.dumps(x).encode()
    try:
        raw = base64.b64decode(x, validate=True)
        if is_binary(raw):
            return "application/octet-stream", raw
        raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return "text/plain", x.encode()
    return "text/plain", x.encode()


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _datatype(values: list[Any], hint: str | None) -> str:
    """The metadata's datatype while the handler answers numbers; a handler whose
    postprocess answers something else (an image classifier's top-5 dict) gets BYTES, JSON
    each, whatever the traced output was."""
    if hint and hint != "BYTES" and all(isinstance(v, (int, float)) for v in values):
        return hint
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP32"
    return "BYTES"


def _tensor_output(name: str, value: Any, hint: str | None) -> dict[str, Any]:
    flat = _flatten(value)
    dt = _datatype(flat, hint)
    if dt == "BYTES":
        flat = [v if isinstance(v, str) else json.dumps(v) for v in flat]
        return {"name": name, "datatype": "BYTES", "shape": [len(flat)], "data": flat}
    return {"name": name, "datatype": dt, "shape": _shape(value) or [1], "data": flat}


def _bytes_or_tensor_output(name: str, values: list[Any], hint: str | None) -> dict[str, Any]:
    if all(isinstance(v, (int, float, list)) for v in values):
        # one row per BYTES element: stack them
        rows = [v if isinstance(v, list) else [v] for v in values]
        if all(_shape(r) == _shape(rows[0]) for r in rows):
            stacked = rows if any(isinstance(v, list) for v in values) else [r[0] for r in rows]
            return _tensor_output(name, stacked, hint)
    data = [v if isinstance(v, str) else json.dumps(v) for v in values]
    return {"name": name, "datatype": "BYTES", "shape": [len(data)], "data": data}
