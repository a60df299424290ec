"""`jupyter_torchserve.ray_serve:app`'s replica class, called in this process: its routes,
the engine's KServe envelopes, and `@serve.batch` sized from the archive's settings.

The replica runs the real handler runtime on real archives; only Ray Serve's check that
the batch size fits max_ongoing_requests is switched off, because it asks a replica context
that exists only inside a running Serve (test_export_ray.py runs the whole application on a
real Ray cluster).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from _engine_helpers import linear_mar, probe_mar

ray_serve = pytest.importorskip("jupyter_torchserve.ray_serve", reason="needs ray[serve]")


@pytest.fixture(autouse=True)
def _no_replica_context(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.serve.batching as batching

    monkeypatch.setattr(
        batching._BatchQueue,
        "_warn_if_max_batch_size_exceeds_max_ongoing_requests",
        lambda self: None,
    )


#: One event loop for the module, as a replica has one: Serve's batch queue binds to the
#: loop it first runs on.
_LOOP = asyncio.new_event_loop()


def run(coroutine: Any) -> Any:
    return _LOOP.run_until_complete(coroutine)


def request(method: str, path: str, body: Any = b"", ctype: str = "application/json") -> Any:
    from starlette.requests import Request

    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    headers = [(b"content-type", ctype.encode())]
    return Request(
        {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""},
        receive,
    )


def replica(archive: Path, **kwargs: Any) -> Any:
    return ray_serve.TorchServeModel.func_or_class(archive=str(archive), **kwargs)


def answer(response: Any) -> tuple[int, Any]:
    return response.status_code, json.loads(response.body)


def test_app_needs_an_absolute_archive_path(tmp_path: Path) -> None:
    """First in the module: Serve pickles the class when an application binds it, and a
    class whose batch queue has run in this process holds futures (a replica never does)."""
    with pytest.raises(ValueError, match="archive must be an absolute path"):
        ray_serve.app({"archive": "model-store/lin.mar"})
    application = ray_serve.app({"archive": str(linear_mar(tmp_path, "lin", "1.0"))})
    assert type(application).__name__ == "Application"


def test_requests_are_batched_up_to_the_archives_batch_size(tmp_path: Path) -> None:
    model = replica(probe_mar(tmp_path, "probe"), batch_size=4, max_batch_delay=200)

    async def five() -> list[Any]:
        calls = [model(request("POST", "/predictions/probe", {"echo": i})) for i in range(5)]
        return await asyncio.gather(*calls)

    results = [answer(r) for r in run(five())]
    assert [status for status, _ in results] == [200] * 5
    assert [body["echo"] for _, body in results] == [0, 1, 2, 3, 4]
    assert sorted(body["batch"] for _, body in results) == [1, 4, 4, 4, 4]


def test_routes_and_envelopes_answer_as_the_engine_does(tmp_path: Path) -> None:
    import torch

    archive = linear_mar(tmp_path, "lin", "1.0", seed=3)
    model = replica(archive)
    scripted = torch.jit.load(str(_member(archive, "model.pt", tmp_path)))
    x = [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]
    with torch.no_grad():
        want = scripted(torch.tensor(x)).tolist()

    async def calls() -> list[tuple[int, Any]]:
        return [
            answer(await model(request("POST", "/predictions/lin", x))),
            answer(await model(request("POST", "/predictions/lin/1.0", x))),
            answer(await model(request("POST", "/v1/models/lin:predict", {"instances": x}))),
            answer(
                await model(
                    request(
                        "POST",
                        "/v2/models/lin/infer",
                        {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x}]},
                    )
                )
            ),
            answer(await model(request("POST", "/v2/models/other/infer", {}))),
            answer(await model(request("POST", "/predictions/lin/9.9", x))),
            answer(await model(request("POST", "/v1/models/lin:predict", {"nope": 1}))),
            answer(await model(request("PUT", "/v1/models/lin:predict", x))),
            answer(await model(request("GET", "/ping"))),
            answer(await model(request("GET", "/v2/models/lin"))),
        ]

    (p, pv, v1, v2, other, version, bad, raw, ping, meta) = run(calls())
    flat = [v for row in want for v in row]
    assert p[0] == 200 and _flat(p[1]) == pytest.approx(flat) and pv == p
    assert v1[0] == 200 and _flat(v1[1]["predictions"]) == pytest.approx(flat)
    assert v2[0] == 200 and v2[1]["outputs"][0]["shape"] == [2, 3]
    assert v2[1]["outputs"][0]["data"] == pytest.approx(flat)
    assert other == (
        404,
        {
            "code": 404,
            "type": "ModelNotFoundException",
            "message": "Model not found: other",
            "error": "Model not found: other",
        },
    )
    assert version[0] == 404 and version[1]["type"] == "ModelVersionNotFoundException"
    # not a KServe envelope: the body goes to the handler as it came, as the engine (and
    # TorchServe without service_envelope) does; this one the tensor handler cannot read
    assert bad[0] == 503 and bad[1]["type"] == "InternalServerException"
    assert raw[0] == 200 and _flat(raw[1]) == pytest.approx(flat)
    assert ping == (200, {"status": "Healthy"})
    assert meta[0] == 200 and meta[1]["versions"] == ["1.0"]


def _flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def _member(archive: Path, name: str, tmp: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(archive) as z:
        return Path(z.extract(name, tmp / "x"))
