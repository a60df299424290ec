"""The server extension against a real engine with the digits classifier deployed.

One engine per module (start + train + deploy take a few seconds); each test's Jupyter server
finds it through a copy of its discovery file in that test's runtime directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _serverext_helpers import SERVER_CONFIG, RealEngine, predict
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.slow  # starts real processes


@pytest.fixture(scope="module")
def real_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    engine = RealEngine(tmp_path_factory.mktemp("engine")).start()
    yield engine
    engine.stop()


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return SERVER_CONFIG


@pytest.fixture
def engine(real_engine: RealEngine, jp_serverapp: Any, jp_runtime_dir: Path) -> RealEngine:
    real_engine.copy_discovery_to(Path(jp_runtime_dir))
    return real_engine


def secrets(engine: RealEngine) -> list[str]:
    keys = json.loads(Path(engine.info["key_file"]).read_text())
    return [v["key"] for v in keys.values() if isinstance(v, dict) and v.get("key")]


def no_secret(engine: RealEngine, resp: Any) -> None:
    text = resp.body.decode("utf-8", "replace") + repr(dict(resp.headers))
    for key in secrets(engine):
        assert key not in text


async def test_status_overview_and_metrics(jp_fetch: Any, engine: RealEngine) -> None:
    status = json.loads((await jp_fetch("torchserve", "engine")).body)
    assert status["running"] is True
    assert status["pid"] == engine.info["pid"]
    assert isinstance(status["gpus"], list)
    overview = await jp_fetch("torchserve", "overview")
    no_secret(engine, overview)
    data = json.loads(overview.body)
    (mnist,) = [m for m in data["models"] if m["modelName"] == "mnist"]
    assert mnist["versions"][0]["isDefault"] is True
    assert mnist["versions"][0]["workers"][0]["status"] == "READY"
    # a prediction shows in the per-model numbers
    await predict(jp_fetch, "mnist", engine.png)
    metrics = json.loads((await jp_fetch("torchserve", "metrics")).body)
    assert metrics["models"]["mnist"]["requests"] >= 1
    assert metrics["models"]["mnist"]["latency_ms_p50"] > 0


async def test_predict_through_jupyter(jp_fetch: Any, engine: RealEngine) -> None:
    resp = await predict(jp_fetch, "mnist", engine.png)
    scores = json.loads(resp.body)
    assert max(scores, key=scores.get) == "7"
    # the curl path: /torchserve/predictions/mnist and KServe v2 health
    resp = await jp_fetch("torchserve", "predictions", "mnist", method="POST", body=engine.png)
    assert max(json.loads(resp.body), key=json.loads(resp.body).get) == "7"
    resp = await jp_fetch("torchserve", "v2", "health", "ready")
    assert resp.code == 200


async def test_sample_input_is_the_deployed_example(jp_fetch: Any, engine: RealEngine) -> None:
    """deploy() wrote the PNG it proved parity with next to the archive: the sample is that
    body, for /predictions; sent back through Jupyter it predicts the 7."""
    resp = await jp_fetch("torchserve", "models", "mnist", "sample")
    assert resp.body == engine.png
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Torchserve-Sample-Protocol"] == "predictions"
    resp = await predict(jp_fetch, "mnist", resp.body)
    scores = json.loads(resp.body)
    assert max(scores, key=scores.get) == "7"


async def test_scale_logs_and_unknown_model(jp_fetch: Any, engine: RealEngine) -> None:
    await jp_fetch(
        "torchserve", "models", "mnist", method="PUT", body=b"", params={"min_worker": "2"}
    )
    described = json.loads((await jp_fetch("torchserve", "models", "mnist")).body)
    assert len(described[0]["workers"]) == 2
    await jp_fetch(
        "torchserve", "models", "mnist", method="PUT", body=b"", params={"min_worker": "1"}
    )
    logs = (await jp_fetch("torchserve", "models", "mnist", "logs", params={"tail": "20"})).body
    assert b"mnist" in logs
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("torchserve", "models", "nope")
    assert err.value.code == 404
    body = json.loads(err.value.response.body)
    assert set(body) == {"code", "type", "message"} and "nope" in body["message"]


async def test_unregister_and_register_from_store(jp_fetch: Any, engine: RealEngine) -> None:
    store = json.loads((await jp_fetch("torchserve", "store")).body)["archives"]
    url = next(a["url"] for a in store if a["url"].startswith("mnist"))
    await jp_fetch("torchserve", "models", "mnist", method="DELETE")
    models = json.loads((await jp_fetch("torchserve", "models")).body)["models"]
    assert "mnist" not in [m["modelName"] for m in models]
    resp = await jp_fetch("torchserve", "models", method="POST", body=json.dumps({"url": url}))
    assert resp.code == 200
    models = json.loads((await jp_fetch("torchserve", "models")).body)["models"]
    assert "mnist" in [m["modelName"] for m in models]


# A module-level handler that answers the fields it was given, as text: a raw body is the
# one field "body", a form one field per key.
ECHO_HANDLER = """
def handle(data, context):
    text = lambda v: v if isinstance(v, str) else bytes(v).decode()
    return data and [{k: text(v) for k, v in row.items()} for row in data]
"""


async def test_a_body_without_content_type_reaches_the_handler_whole(
    jp_fetch: Any, engine: RealEngine, jp_http_port: int, jp_base_url: str, jp_auth_header: dict
) -> None:
    """A body sent through Jupyter with no Content-Type (curl --data-binary without -H, a
    script's raw POST) reaches the handler as the one raw body it is, as it does sent to the
    engine itself; never parsed as the form Tornado's client would label it."""
    import asyncio

    import requests
    from _engine_helpers import manifest, write_mar

    store = Path(engine.info["model_store"])
    write_mar(
        store / "echo-1.0.mar",
        {"echo_handler.py": ECHO_HANDLER, "dummy.txt": "x"},
        manifest("echo", "1.0", "dummy.txt", "echo_handler.py"),
    )
    await jp_fetch("torchserve", "models", method="POST", body=json.dumps({"url": "echo-1.0.mar"}))
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}torchserve"
    try:
        for url in (f"{base}/models/echo/predict", f"{base}/predictions/echo"):
            resp = await asyncio.to_thread(
                requests.post, url, data=b"a=1&b=2", headers=jp_auth_header, timeout=60
            )
            assert "Content-Type" not in resp.request.headers  # what this test sends
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"body": "a=1&b=2"}, url
        # the same body sent to the engine directly: the same answer
        direct = requests.post(
            engine.info["inference_address"] + "/predictions/echo", data=b"a=1&b=2", timeout=60
        )
        assert direct.json() == {"body": "a=1&b=2"}
    finally:
        await jp_fetch("torchserve", "models", "echo", method="DELETE")


async def test_export_writes_the_bundle_into_the_jupyter_root(
    jp_fetch: Any, engine: RealEngine, jp_root_dir: Path
) -> None:
    offer = json.loads((await jp_fetch("torchserve", "models", "mnist", "export")).body)
    assert offer["targets"] == ["kserve", "t9k", "ray", "torchserve"]
    from jupyter_torchserve.export.ray_cluster import ray_installed

    assert offer["ray_run"] is ray_installed()
    body = json.dumps({"to": "t9k", "min_replicas": 1, "max_replicas": 2})
    resp = await jp_fetch("torchserve", "models", "mnist", "export", method="POST", body=body)
    done = json.loads(resp.body)
    assert done["out"] == "mnist-t9k" and done["target"] == "t9k"
    assert "mlservice.yaml" in done["files"] and done["next_steps"]
    for f in done["files"]:
        assert (Path(jp_root_dir) / "mnist-t9k" / f).is_file()
    # the served archive, byte for byte
    served = json.loads((await jp_fetch("torchserve", "models", "mnist")).body)[0]["modelUrl"]
    mar = next((Path(jp_root_dir) / "mnist-t9k" / "model").glob("*.mar"))
    assert mar.read_bytes() == (engine.root / "store" / served).read_bytes()


@pytest.mark.parametrize(
    "model, body, code, needle",
    [
        ("mnist", {"to": "sagemaker"}, 400, "to must be one of"),
        ("mnist", {"to": "kserve", "out": "../outside"}, 400, "inside the Jupyter root"),
        ("mnist", {"to": "kserve", "run": True}, 400, "deploys Ray bundles only"),
        ("mnist", {"to": "kserve", "gpu": "two"}, 400, "bad export option"),
        ("nope", {"to": "kserve"}, 404, "nope"),
    ],
)
async def test_bad_exports_answer_torchserves_error_shape(
    jp_fetch: Any, engine: RealEngine, jp_root_dir: Path, model: str, body: dict, code: int,
    needle: str,
) -> None:  # fmt: skip
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch(
            "torchserve", "models", model, "export", method="POST", body=json.dumps(body)
        )
    assert err.value.code == code
    answer = json.loads(err.value.response.body)
    assert set(answer) == {"code", "type", "message"} and needle in answer["message"]
    assert not (Path(jp_root_dir) / f"{model}-kserve").exists()
