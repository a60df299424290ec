"""The engine's HTTP APIs, route by route, against TorchServe 0.12's shapes and codes."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
import torch
from _engine_helpers import linear_mar, model_store, probe_mar, running_engine, scripted_linear

from jupyter_torchserve import discovery
from jupyter_torchserve.client import EngineError

pytestmark = pytest.mark.slow  # starts real processes


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine-api")
    store = model_store(tmp)
    linear_mar(store, "linear", "1.0", seed=0)
    linear_mar(store, "linear", "2.0", seed=1)
    probe_mar(store)
    with running_engine(tmp, model_store=str(store)) as (info, client):
        client.register("linear-1.0.mar", initial_workers=1)
        yield info, client


def _reference(x: list[list[float]], seed: int = 0) -> np.ndarray:
    model = torch.jit.load(io.BytesIO(scripted_linear(seed)))
    with torch.no_grad():
        return model(torch.tensor(x)).numpy()


def _mgmt(info, method, path, token=True, **kw):
    headers = kw.pop("headers", {})
    if token:
        keys = json.loads(open(info["key_file"]).read())
        headers["Authorization"] = "Bearer " + keys["management"]["key"]
    return requests.request(
        method, info["management_address"] + path, headers=headers, timeout=60, **kw
    )


X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]


def test_ping(engine):
    info, _ = engine
    r = requests.get(info["inference_address"] + "/ping")
    assert r.status_code == 200 and r.json() == {"status": "Healthy"}
    assert r.headers["x-request-id"]


def test_predictions_json_body_matches_the_model(engine):
    info, _ = engine
    r = requests.post(info["inference_address"] + "/predictions/linear", json=X)
    assert r.status_code == 200
    np.testing.assert_allclose(np.array(r.json()), _reference(X), rtol=1e-5, atol=1e-6)


def test_predictions_put_raw_npy_and_multipart(engine, tmp_path):
    info, _ = engine
    buf = io.BytesIO()
    np.save(buf, np.array(X, dtype=np.float32))
    r = requests.put(
        info["inference_address"] + "/predictions/linear",
        data=buf.getvalue(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), _reference(X), rtol=1e-5, atol=1e-6)
    r = requests.post(
        info["inference_address"] + "/predictions/linear",
        files={"data": ("x.json", json.dumps(X), "application/json")},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), _reference(X), rtol=1e-5, atol=1e-6)


def test_curl_default_form_content_type_is_understood(engine):
    # curl -d '[[...]]' sends application/x-www-form-urlencoded; TorchServe answers 500
    info, _ = engine
    r = requests.post(
        info["inference_address"] + "/predictions/linear",
        data=json.dumps(X),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), _reference(X), rtol=1e-5, atol=1e-6)


def test_unknown_model_and_version_and_route(engine):
    info, client = engine
    r = requests.post(info["inference_address"] + "/predictions/nope", json=X)
    assert r.status_code == 404
    assert r.json() == {
        "code": 404,
        "type": "ModelNotFoundException",
        "message": "Model not found: nope",
    }
    r = requests.post(info["inference_address"] + "/predictions/linear/9.9", json=X)
    assert r.status_code == 404 and r.json()["type"] == "ModelVersionNotFoundException"
    assert r.json()["message"] == "Model version: 9.9 does not exist for model: linear"
    r = requests.get(info["inference_address"] + "/no/such/route")
    assert r.status_code == 404 and r.json()["type"] == "ResourceNotFoundException"


def test_openapi_documents_every_route(engine):
    info, _ = engine
    doc = requests.options(info["inference_address"] + "/").json()
    assert doc["openapi"] == "3.0.1"
    for path in (
        "/ping",
        "/predictions/{model_name}",
        "/v1/models/{model_name}:predict",
        "/v2/models/{model_name}/infer",
        "/explanations/{model_name}",
        "/v2/models/{model_name}/explain",
        "/v2/models/{model_name}/versions/{model_version}/explain",
    ):
        assert path in doc["paths"]
    assert "Integrated Gradients" in json.dumps(doc["paths"]["/explanations/{model_name}"])
    assert doc == requests.get(info["inference_address"] + "/api-description").json()
    mdoc = _mgmt(info, "OPTIONS", "/").json()
    assert "/models/{model_name}/{model_version}/set-default" in mdoc["paths"]
    assert "/models/{model_name}/logs" in mdoc["paths"]


def test_management_requires_token(engine):
    info, _ = engine
    r = _mgmt(info, "GET", "/models", token=False)
    assert r.status_code == 400
    assert r.json()["type"] == "InvalidKeyException"
    r = _mgmt(info, "GET", "/models", token=False, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 400
    # inference needs no token by default, metrics never
    assert requests.get(info["metrics_address"] + "/metrics").status_code == 200


def test_register_errors(engine):
    info, _ = engine
    r = _mgmt(info, "POST", "/models")
    assert r.status_code == 400 and r.json()["message"] == "Parameter url is required."
    r = _mgmt(info, "POST", "/models", params={"url": "missing.mar"})
    assert r.status_code == 404 and r.json()["message"] == "Model not found at: missing.mar"
    r = _mgmt(info, "POST", "/models", params={"url": "../outside.mar"})
    assert r.status_code == 404
    r = _mgmt(info, "POST", "/models", params={"url": "linear-1.0.mar", "runtime": "python4"})
    assert r.status_code == 400 and r.json()["message"] == "Invalid RuntimeType value: python4"
    r = _mgmt(info, "POST", "/models", params={"url": "linear-1.0.mar"})
    assert r.status_code == 409
    assert r.json() == {
        "code": 409,
        "type": "ConflictStatusException",
        "message": "Model version 1.0 is already registered for model linear",
    }
    r = _mgmt(info, "POST", "/models", params={"url": "http://example.com/x.mar"})
    assert r.status_code == 400 and "allowed" in r.json()["message"]
    r = _mgmt(info, "POST", "/models", params={"url": "linear-2.0.mar", "model_name": "bad name"})
    assert r.status_code == 400 and "Invalid model name" in r.json()["message"]
    r = _mgmt(info, "POST", "/models", params={"url": "linear-2.0.mar", "batch_size": "x"})
    assert r.status_code == 400 and "batch_size" in r.json()["message"]


def test_versions_default_and_unregister(engine):
    info, client = engine
    out = client.register("linear-2.0.mar", initial_workers=1)
    assert out == {"status": 'Model "linear" Version: 2.0 registered with 1 initial workers'}
    r = requests.post(info["inference_address"] + "/predictions/linear/2.0", json=X)
    np.testing.assert_allclose(np.array(r.json()), _reference(X, seed=1), rtol=1e-5, atol=1e-6)
    # the default is still the first version
    r = requests.post(info["inference_address"] + "/predictions/linear", json=X)
    np.testing.assert_allclose(np.array(r.json()), _reference(X, seed=0), rtol=1e-5, atol=1e-6)
    described = client.describe("linear", "all")
    assert sorted(d["modelVersion"] for d in described) == ["1.0", "2.0"]
    assert client.set_default("linear", "2.0") == {
        "status": 'Default version successfully updated for model "linear" to "2.0"'
    }
    r = requests.post(info["inference_address"] + "/predictions/linear", json=X)
    np.testing.assert_allclose(np.array(r.json()), _reference(X, seed=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(EngineError) as e:
        client.unregister("linear", "2.0")
    assert e.value.status == 403 and e.value.type == "InvalidModelVersionException"
    with pytest.raises(EngineError) as e:
        client.set_default("linear", "7.0")
    assert e.value.status == 404
    client.set_default("linear", "1.0")
    assert client.unregister("linear", "2.0") == {"status": 'Model "linear" unregistered'}
    assert [d["modelVersion"] for d in client.describe("linear", "all")] == ["1.0"]


def test_describe_shape(engine):
    _, client = engine
    (d,) = client.describe("linear")
    for key in (
        "modelName",
        "modelVersion",
        "modelUrl",
        "runtime",
        "minWorkers",
        "maxWorkers",
        "batchSize",
        "maxBatchDelay",
        "loadedAtStartup",
        "workers",
        "jobQueueStatus",
    ):
        assert key in d
    (w,) = d["workers"]
    for key in ("id", "startTime", "status", "memoryUsage", "pid", "gpu", "gpuUsage"):
        assert key in w
    assert w["status"] == "READY" and w["gpu"] is False and w["memoryUsage"] > 0
    assert d["jobQueueStatus"] == {"remainingCapacity": 100, "pendingRequests": 0}
    with pytest.raises(EngineError) as e:
        client.describe("nope")
    assert e.value.status == 404


def test_list_models_pagination(engine):
    info, client = engine
    client.register("probe-1.0.mar", initial_workers=0)
    try:
        page = client.list_models(limit=1)
        assert page == {
            "nextPageToken": "1",
            "models": [{"modelName": "linear", "modelUrl": "linear-1.0.mar"}],
        }
        page = client.list_models(limit=1, next_page_token=1)
        assert page["models"] == [{"modelName": "probe", "modelUrl": "probe-1.0.mar"}]
        assert client.list_models(limit=5) == {
            "models": [
                {"modelName": "linear", "modelUrl": "linear-1.0.mar"},
                {"modelName": "probe", "modelUrl": "probe-1.0.mar"},
            ]
        }
        # a model with no workers answers 503 with TorchServe's message
        r = requests.post(info["inference_address"] + "/predictions/probe", json={})
        assert r.status_code == 503 and r.json()["type"] == "ServiceUnavailableException"
    finally:
        client.unregister("probe")


def test_scale_codes(engine):
    info, client = engine
    r = _mgmt(info, "PUT", "/models/linear", params={"min_worker": 2, "max_worker": 1})
    assert (
        r.status_code == 400 and r.json()["message"] == "max_worker cannot be less than min_worker."
    )
    r = _mgmt(info, "PUT", "/models/linear", params={"min_worker": 2})
    assert r.status_code == 202 and r.json() == {"status": "Processing worker updates..."}
    out = client.scale("linear", 1, synchronous=True)
    assert out == {"status": "Workers scaled to 1 for model: linear"}
    assert len(client.describe("linear")[0]["workers"]) == 1
    r = _mgmt(info, "PUT", "/models/linear/9.9", params={"min_worker": 1})
    assert r.status_code == 404


def test_kserve_v1(engine):
    info, _ = engine
    base = info["inference_address"]
    assert requests.get(base + "/v1/models/linear").json() == {"name": "linear", "ready": True}
    r = requests.post(base + "/v1/models/linear:predict", json={"instances": X})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        np.array(r.json()["predictions"]), _reference(X), rtol=1e-5, atol=1e-6
    )
    # a body that is not a KServe envelope goes to the handler as it came, as TorchServe
    # 0.12 without service_envelope does (T9k's `curl -T 0.png .../v1/models/m:predict`);
    # the tensor handler cannot read this one, and says why in TorchServe's error shape, as
    # the request's fault (400), not the model's
    r = requests.post(base + "/v1/models/linear:predict", data=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"], r.text
    # this one it reads as an empty row, which the model refuses; an archive without an
    # example input gives no shape to blame the request by, so it is the model's failure
    r = requests.post(base + "/v1/models/linear:predict", data=b'{"rows": []}')
    assert r.status_code == 503 and "Prediction failed" in r.json()["message"], r.text
    # the notebook (the owner) sees where a model failed, but not the frames under a 400
    owner = {"X-Management-Authorization": f"Bearer {discovery.read_keys(info).management}"}
    r = requests.post(base + "/v1/models/linear:predict", data=b'{"rows": []}', headers=owner)
    assert r.status_code == 503 and "Traceback" in r.json()["message"], r.text
    r = requests.post(base + "/v1/models/linear:predict", data=b"{not json", headers=owner)
    assert r.status_code == 400 and "Traceback" not in r.json()["message"], r.text
    b64 = base64.b64encode(b"\x00\x01").decode()
    r = requests.post(base + "/v1/models/linear:predict", json={"instances": [{"b64": b64}]})
    assert r.status_code == 400  # the tensor handler cannot read two raw bytes: a clear error
    assert "neither JSON, .npy nor torch.save" in r.json()["message"]


def test_kserve_v2(engine):
    info, _ = engine
    base = info["inference_address"]
    assert requests.get(base + "/v2").json()["name"] == "jupyter_torchserve"
    assert requests.get(base + "/v2/health/live").json() == {"live": True}
    assert requests.get(base + "/v2/health/ready").json() == {"ready": True}
    assert requests.get(base + "/v2/models/linear/ready").json() == {
        "name": "linear",
        "ready": True,
    }
    meta = requests.get(base + "/v2/models/linear").json()
    assert meta["name"] == "linear" and "1.0" in meta["versions"]
    body = {
        "id": "req-7",
        "inputs": [
            {
                "name": "x",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [v for row in X for v in row],
            }
        ],
    }
    r = requests.post(base + "/v2/models/linear/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "req-7" and out["model_name"] == "linear"
    (o,) = out["outputs"]
    assert o["shape"] == [2, 3] and o["datatype"] == "FP32"
    np.testing.assert_allclose(
        np.array(o["data"]).reshape(2, 3), _reference(X), rtol=1e-5, atol=1e-6
    )
    r = requests.post(base + "/v2/models/linear/versions/1.0/infer", json=body)
    assert r.status_code == 200
    bad = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": [1, 2]}]}
    r = requests.post(base + "/v2/models/linear/infer", json=bad)
    assert r.status_code == 400 and "needs 12" in r.json()["error"]
    bad = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP7", "data": [1]}]}
    assert requests.post(base + "/v2/models/linear/infer", json=bad).status_code == 400
    assert requests.post(base + "/v2/models/nope/infer", json=body).status_code == 404


def test_oversize_body_is_413_and_engine_keeps_serving(engine):
    info, _ = engine
    r = requests.post(
        info["inference_address"] + "/predictions/linear",
        data=b"0" * 7_000_000,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 413
    assert "max_request_size" in r.json()["message"]
    r = requests.post(info["inference_address"] + "/predictions/linear", json=X)
    assert r.status_code == 200


def test_engine_status_and_logs_routes(engine):
    info, client = engine
    status = client.engine_status()
    assert status["pid"] == info["pid"] and status["gpus"] == []
    assert status["max_request_size"] == 6553500
    assert status["inference_address"] == info["inference_address"]
    logs = client.logs("linear", tail=500)
    assert "model loaded" in logs
    with pytest.raises(EngineError) as e:
        client.logs("nope")
    assert e.value.status == 404


def test_metrics_have_torchserve_names(engine):
    info, _ = engine
    requests.post(info["inference_address"] + "/predictions/linear", json=X)
    text = requests.get(info["metrics_address"] + "/metrics").text
    assert "ts_inference_requests_total{hostname=" in text
    assert "ts_inference_latency_microseconds{" in text
    assert "ts_queue_latency_microseconds{" in text
    assert 'model_name="linear"' in text and 'model_version="default"' in text
    assert "_created" not in text
    assert 'jts_workers{model_name="linear",model_version="1.0",status="READY"} 1.0' in text
    only = requests.get(
        info["metrics_address"] + "/metrics", params={"name[]": "ts_inference_requests_total"}
    ).text
    assert "ts_inference_requests_total" in only and "ts_queue_latency" not in only
