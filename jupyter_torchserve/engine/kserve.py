"""KServe v1 and v2 (Open Inference Protocol) on the same server as TorchServe's routes.

TorchServe needs `service_envelope=kserve` or `kservev2` for the whole server; here each route
decodes its own envelope into ordinary jobs, so one engine answers all three protocols.
v1: each instance becomes one job (they batch together). v2: a numeric tensor travels to the
worker as `.npy` bytes (exact dtype, no JSON of floats); BYTES elements become one job each.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._version import __version__
from .errors import ApiError, bad_request, not_found_route
from .inference import InferenceHandler
from .jobs import Reply
from .model import ModelVersion

if TYPE_CHECKING:
    from .core import Engine

V2_DTYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
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


# -- v1 ------------------------------------------------------------------------------------
def v1_instance_params(instance: Any) -> list[tuple[str, str, bytes]]:
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


class V1ModelHandler(InferenceHandler):
    def get(self, name: str) -> None:
        entry = self.engine.get_entry(name)
        self.write_json({"name": name, "ready": bool(entry.default.ready_workers)})


RunJobs = Callable[
    [ModelVersion, "str | None", list[list[tuple[str, str, bytes]]], dict[str, str]],
    Awaitable[list[Reply]],
]
"""Queues one job per item for this request and waits for their replies."""


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise bad_request(f"Request body is not valid JSON: {e}") from None


async def v1_predict(
    engine: Engine, name: str, verb: str, body: bytes, headers: dict[str, str], run: RunJobs
) -> dict[str, Any]:
    """`POST /v1/models/{name}:predict|explain`: each instance is one job."""
    if verb not in ("predict", "explain"):
        raise not_found_route()
    mv = engine.get_version(name)
    payload = _json_body(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise bad_request('KServe v1 expects a JSON object {"instances": [...]}')
    instances = payload["instances"]
    if not instances:
        raise bad_request("instances is empty")
    if verb == "explain":
        headers = {**headers, "explain": "True"}
    items = [v1_instance_params(i) for i in instances]
    replies = await run(mv, None, items, headers)
    key = "explanations" if verb == "explain" else "predictions"
    return {key: [v1_prediction(i, r) for i, r in zip(instances, replies, strict=True)]}


class V1PredictHandler(InferenceHandler):
    async def post(self, name: str, verb: str) -> None:
        self.write_json(
            await v1_predict(
                self.engine, name, verb, self.body, self.handler_headers(), self.run_jobs
            )
        )


# -- v2 ------------------------------------------------------------------------------------
class V2Handler(InferenceHandler):
    def error_body(self, err: ApiError) -> dict[str, Any]:
        return v2_error_body(err)


class V2ServerHandler(V2Handler):
    def get(self) -> None:
        self.write_json(
            {
                "name": "jupyter_torchserve",
                "version": __version__,
                "extensions": ["kserve", "kubeflow", "torchserve"],
            }
        )


class V2HealthHandler(V2Handler):
    def get(self, which: str) -> None:
        if which == "live":
            self.write_json({"live": True})
        else:
            ready = all(v.ready_workers for v in self.engine.all_versions() if v.min_workers)
            self.write_json({"ready": ready}, 200 if ready else 503)


class V2ModelHandler(V2Handler):
    def get(self, name: str, version: str | None = None, ready: str | None = None) -> None:
        mv = self.engine.get_version(name, version or None)
        if ready:
            self.write_json({"name": name, "ready": bool(mv.ready_workers)})
            return
        schema = mv.metadata.get("schema") or {}
        fmt = mv.metadata.get("format")
        platform = {
            "export": "pytorch_export",
            "torchscript": "pytorch_torchscript",
            "eager": "pytorch_eager",
        }.get(fmt or "", "pytorch_torchserve")
        self.write_json(
            {
                "name": name,
                "versions": sorted(self.engine.get_entry(name).versions),
                "platform": platform,
                "inputs": schema.get("inputs", []),
                "outputs": schema.get("outputs", []),
            }
        )


def v2_error_body(err: ApiError) -> dict[str, Any]:
    # OIP clients read "error"; TorchServe clients read code/type/message
    return {**err.to_json(), "error": err.message}


async def v2_infer(
    engine: Engine,
    name: str,
    version: str | None,
    body: bytes,
    headers: dict[str, str],
    run: RunJobs,
) -> dict[str, Any]:
    """`POST /v2/models/{name}[/versions/{v}]/infer` (Open Inference Protocol, JSON)."""
    mv = engine.get_version(name, version)
    payload = _json_body(body)
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("inputs"), list)
        or not payload["inputs"]
    ):
        raise bad_request('KServe v2 expects {"inputs": [{"name", "shape", "datatype", "data"}]}')
    inputs = [_check_input(i) for i in payload["inputs"]]
    schema_out = (mv.metadata.get("schema") or {}).get("outputs") or []
    out_name = schema_out[0]["name"] if schema_out else "output-0"
    out_dtype = schema_out[0].get("datatype") if schema_out else None
    if len(inputs) == 1 and inputs[0]["datatype"] == "BYTES":
        items = [[("body", *_bytes_element(x))] for x in _flatten(inputs[0]["data"])]
        replies = await run(mv, version, items, headers)
        values = [_reply_value(r) for r in replies]
        output = _bytes_or_tensor_output(out_name, values, out_dtype)
    else:
        if len(inputs) == 1 and mv.metadata.get("builtin_handler"):
            # our handlers read .npy: exact dtype, no JSON of floats
            params = [("body", "application/x-npy", _npy(inputs[0]))]
        elif len(inputs) == 1:
            # what TorchServe's kservev2 envelope gives a handler: {"data": nested list}
            nested = json.dumps(_array(inputs[0]).tolist()).encode()
            params = [("data", "application/json", nested)]
        else:
            data = {i["name"]: _array(i).tolist() for i in inputs}
            params = [("body", "application/json", json.dumps(data).encode())]
        (reply,) = await run(mv, version, [params], headers)
        output = _tensor_output(out_name, _reply_value(reply), out_dtype)
    return {
        "id": payload.get("id") or str(uuid.uuid4()),
        "model_name": name,
        "model_version": mv.version,
        "outputs": [output],
    }


class V2InferHandler(V2Handler):
    async def post(self, name: str, version: str | None = None) -> None:
        self.write_json(
            await v2_infer(
                self.engine,
                name,
                version or None,
                self.body,
                self.handler_headers(),
                self.run_jobs,
            )
        )


def _check_input(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise bad_request("each input must be an object with name, shape, datatype and data")
    for key in ("name", "shape", "datatype", "data"):
        if key not in item:
            raise bad_request(f"input is missing {key!r}")
    dt = item["datatype"]
    if dt != "BYTES" and dt not in V2_DTYPES:
        raise bad_request(f"unsupported datatype {dt!r} for input {item['name']}")
    shape = item["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise bad_request(f"shape of input {item['name']} must be a list of non-negative ints")
    if dt != "BYTES":
        n = len(_flatten(item["data"]))
        if n != math.prod(shape):
            raise bad_request(
                f"input {item['name']} has {n} values but shape {shape} needs {math.prod(shape)}"
            )
    return item


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for x in data:
        out.extend(_flatten(x)) if isinstance(x, list) else out.append(x)
    return out


def _array(item: dict[str, Any]) -> Any:
    import numpy as np

    try:
        return np.asarray(_flatten(item["data"]), dtype=V2_DTYPES[item["datatype"]]).reshape(
            item["shape"]
        )
    except (ValueError, TypeError) as e:
        raise bad_request(f"input {item['name']}: {e}") from None


def _npy(item: dict[str, Any]) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, _array(item), allow_pickle=False)
    return buf.getvalue()


def _bytes_element(x: Any) -> tuple[str, bytes]:
    """A v2 BYTES element: base64 for binary data (images), else text."""
    if not isinstance(x, str):
        return "application/json", json.dumps(x).encode()
    try:
        raw = base64.b64decode(x, validate=True)
        if raw[:4] in (b"\x89PNG", b"GIF8") or raw[:2] == b"\xff\xd8" or raw[:6] == b"\x93NUMPY":
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
    if hint and hint != "BYTES":
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
