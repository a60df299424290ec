"""The same gRPC calls, with stubs from our .proto files, against a real TorchServe 0.12 and
our engine: the answers match, so the wire compatibility is shown rather than assumed.

The deliberate differences: an unknown model is NOT_FOUND here, INTERNAL in TorchServe; a
ListModels without a limit lists a page of 100 here, nothing in TorchServe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _engine_helpers import manifest, probe_mar, write_mar
from _grpc_helpers import Stubs
from _ports import free_port
from _torchserve_helpers import TorchServe, skip_reason
from google.protobuf import empty_pb2
from test_grpc_engine import STREAM_HANDLER

from jupyter_torchserve.protos.torchserve import inference_pb2 as ts
from jupyter_torchserve.protos.torchserve import management_pb2 as mg

SKIP = skip_reason()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.torchserve,
    pytest.mark.skipif(SKIP is not None, reason=SKIP or ""),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    probe_mar(store, "probe")
    write_mar(
        store / "stream.mar",
        {"stream_handler.py": STREAM_HANDLER, "d.txt": "x"},
        manifest("stream", "1.0", "d.txt", "stream_handler.py"),
    )
    return store


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[dict[str, Stubs]]:
    from jupyter_torchserve.launcher import start_engine, stop_engine

    server = TorchServe(tmp_path_factory.mktemp("torchserve"), store)
    ports = [free_port() for _ in range(5)]
    info = start_engine(
        inference_address=f"http://127.0.0.1:{ports[0]}",
        management_address=f"http://127.0.0.1:{ports[1]}",
        metrics_address=f"http://127.0.0.1:{ports[2]}",
        grpc_inference_port=ports[3],
        grpc_management_port=ports[4],
        model_store=str(store),
        state_dir=str(tmp_path_factory.mktemp("engine-state")),
        disable_token_authorization=True,
    )
    stubs: dict[str, Stubs] = {}
    try:
        server.start()
        stubs["torchserve"] = Stubs(
            {
                "grpc_inference_address": server.grpc_inference,
                "grpc_management_address": server.grpc_management,
            }
        )
        stubs["ours"] = Stubs(info)
        for s in stubs.values():
            s.wait_ready()
        yield stubs
    finally:
        for s in stubs.values():
            s.close()
        server.stop()
        stop_engine(info)


def each(both: dict[str, Stubs], call: Any) -> dict[str, Any]:
    """`call(stubs)` on both servers: {server: answer, or the RpcError's code}."""
    out = {}
    for name, stubs in both.items():
        try:
            out[name] = call(stubs)
        except grpc.RpcError as e:
            out[name] = e.code()
    return out


def test_same_management_and_inference_answers(both):
    register = mg.RegisterModelRequest(
        url="probe-1.0.mar", model_name="probe", initial_workers=1, synchronous=True
    )
    got = each(both, lambda s: s.management.RegisterModel(register, timeout=300).msg)
    assert got["ours"] == got["torchserve"], got
    stream = mg.RegisterModelRequest(
        url="stream.mar", model_name="stream", initial_workers=1, synchronous=True
    )
    got = each(both, lambda s: s.management.RegisterModel(stream, timeout=300).msg)
    assert got["ours"] == got["torchserve"], got

    got = each(both, lambda s: json.loads(s.inference.Ping(empty_pb2.Empty()).health))
    assert got["ours"] == got["torchserve"] == {"status": "Healthy"}

    page = mg.ListModelsRequest(limit=10)
    listed = each(both, lambda s: json.loads(s.management.ListModels(page).msg))
    assert listed["ours"] == listed["torchserve"], listed
    # unset limit (0): TorchServe lists nothing; we list a default page of 100, as REST does
    listed = each(both, lambda s: json.loads(s.management.ListModels(mg.ListModelsRequest()).msg))
    assert listed["torchserve"] == {"nextPageToken": "0", "models": []}
    assert len(listed["ours"]["models"]) == 2

    def described(s: Stubs) -> dict[str, Any]:
        (d,) = json.loads(
            s.management.DescribeModel(mg.DescribeModelRequest(model_name="probe")).msg
        )
        return {k: d[k] for k in ("modelName", "modelVersion", "batchSize", "minWorkers")}

    got = each(both, described)
    assert got["ours"] == got["torchserve"], got

    request = ts.PredictionsRequest(model_name="probe", input={"body": b'{"echo": "same"}'})

    def predicted(s: Stubs) -> dict[str, Any]:
        answer = json.loads(s.inference.Predictions(request, timeout=60).prediction)
        return {k: answer[k] for k in ("echo", "batch")}

    got = each(both, predicted)
    assert got["ours"] == got["torchserve"] == {"echo": "same", "batch": 1}

    go = ts.PredictionsRequest(model_name="stream", input={"data": b"go"})
    got = each(
        both, lambda s: [r.prediction for r in s.inference.StreamPredictions(go, timeout=60)]
    )
    assert got["ours"] == got["torchserve"] == [b"part 0;", b"part 1;", b"part 2;", b"done"]

    scale = mg.ScaleWorkerRequest(model_name="probe", min_worker=2, synchronous=True)
    got = each(both, lambda s: s.management.ScaleWorker(scale, timeout=300).msg)
    assert got["ours"] == got["torchserve"], got

    default = mg.SetDefaultRequest(model_name="probe", model_version="1.0")
    got = each(both, lambda s: s.management.SetDefault(default).msg)
    assert got["ours"] == got["torchserve"], got

    unknown = ts.PredictionsRequest(model_name="nope", input={"data": b"x"})
    got = each(both, lambda s: s.inference.Predictions(unknown, timeout=60))
    assert got == {"torchserve": grpc.StatusCode.INTERNAL, "ours": grpc.StatusCode.NOT_FOUND}

    got = each(
        both, lambda s: s.management.DescribeModel(mg.DescribeModelRequest(model_name="nope"))
    )
    assert got["ours"] == grpc.StatusCode.NOT_FOUND, got

    for name in ("probe", "stream"):
        gone = mg.UnregisterModelRequest(model_name=name)
        got = each(both, lambda s, r=gone: s.management.UnregisterModel(r, timeout=120).msg)
        assert got["ours"] == got["torchserve"], got
