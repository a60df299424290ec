"""The engine's gRPC APIs, called with stubs made from our .proto files and with
tritonclient.grpc, on real engines on free ports."""

from __future__ import annotations

import concurrent.futures
import json
import time

import grpc
import numpy as np
import pytest
import requests
import torch
from _engine_helpers import linear_mar, manifest, model_store, scripted_linear, write_mar
from _grpc_helpers import grpc_engine
from google.protobuf import empty_pb2

from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2
from jupyter_torchserve.protos.torchserve import inference_pb2 as ts
from jupyter_torchserve.protos.torchserve import inference_pb2_grpc as ts_grpc
from jupyter_torchserve.protos.torchserve import management_pb2 as mg

pytestmark = pytest.mark.slow

STREAM_HANDLER = """
from ts.handler_utils.utils import send_intermediate_predict_response

def handle(data, context):
    if data is None:
        return None
    for i in range(3):
        send_intermediate_predict_response(
            ["part %d;" % i] * len(data), context.request_ids, "Intermediate", 200, context)
    return ["done"] * len(data)
"""


SLOW_LOAD_HANDLER = """
import time

def handle(data, context):
    if data is None:
        time.sleep(3)  # loading
        return None
    return ["loaded"] * len(data)
"""


def _code(call, *args, **kwargs) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, **kwargs)
    return e.value.code()


def _linear(x: list[list[float]]) -> np.ndarray:
    model = torch.jit.load(__import__("io").BytesIO(scripted_linear()))
    return model(torch.tensor(x)).detach().numpy()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """Token auth on for both APIs; probe, linear and stream models with one worker each."""
    tmp = tmp_path_factory.mktemp("grpc")
    store = model_store(tmp, "probe")
    linear_mar(store, "linear", "1.0")
    write_mar(
        store / "stream.mar",
        {"stream_handler.py": STREAM_HANDLER, "d.txt": "x"},
        manifest("stream", "1.0", "d.txt", "stream_handler.py"),
    )
    write_mar(
        store / "slow.mar",
        {"slow_handler.py": SLOW_LOAD_HANDLER, "d.txt": "x"},
        manifest("slow", "1.0", "d.txt", "slow_handler.py"),
    )
    with grpc_engine(tmp, model_store=str(store), inference_token_required=True) as env:
        info, client, stubs = env
        for mar in ("probe-1.0.mar", "linear-1.0.mar", "stream.mar"):
            client.register(mar, initial_workers=1)
        yield env


def test_discovery_and_status_name_the_grpc_addresses(engine):
    info, client, _ = engine
    status = client.engine_status()
    for api in ("inference", "management"):
        assert info[f"grpc_{api}_address"].startswith("127.0.0.1:")
        assert status[f"grpc_{api}_address"] == info[f"grpc_{api}_address"]
    # what `%torchserve status` shows
    from jupyter_torchserve import api

    rows = dict(api.status(info).table()[1])
    assert rows["gRPC inference"] == info["grpc_inference_address"]
    assert rows["gRPC management"] == info["grpc_management_address"]


def test_ping_answers_rest_ping_json(engine):
    _, _, s = engine
    health = s.inference.Ping(empty_pb2.Empty(), metadata=s.auth("inference"))
    assert json.loads(health.health) == {"status": "Healthy"}


def test_predictions_with_and_without_token(engine):
    _, _, s = engine
    request = ts.PredictionsRequest(model_name="probe", input={"body": b'{"echo": "hi"}'})
    reply = s.inference.Predictions(request, metadata=s.auth("inference"))
    assert json.loads(reply.prediction)["echo"] == "hi"
    assert _code(s.inference.Predictions, request) == grpc.StatusCode.PERMISSION_DENIED
    wrong = [("authorization", "Bearer nope")]
    assert _code(s.inference.Predictions, request, metadata=wrong) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # like REST /ping, Ping needs no key
    assert json.loads(s.inference.Ping(empty_pb2.Empty()).health) == {"status": "Healthy"}


def test_predictions_of_a_tensor_model_match_torch(engine):
    _, _, s = engine
    x = [[1.0, 2.0, 3.0, 4.0]]
    request = ts.PredictionsRequest(
        model_name="linear", model_version="1.0", input={"data": json.dumps(x).encode()}
    )
    reply = s.inference.Predictions(request, metadata=s.auth("inference"))
    np.testing.assert_allclose(
        np.array(json.loads(reply.prediction)).reshape(1, 3), _linear(x), rtol=1e-5
    )


def test_stream_predictions_sends_intermediate_responses(engine):
    _, _, s = engine
    request = ts.PredictionsRequest(model_name="stream", input={"data": b"go"})
    parts = [
        r.prediction.decode()
        for r in s.inference.StreamPredictions(request, metadata=s.auth("inference"))
    ]
    assert parts == ["part 0;", "part 1;", "part 2;", "done"]
    assert _code(lambda: list(s.inference.StreamPredictions(request))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_stream_predictions2_answers_each_request_and_keeps_the_stream_on_errors(engine):
    _, _, s = engine
    requests_ = [
        ts.PredictionsRequest(model_name="probe", input={"body": b'{"echo": 1}'}),
        ts.PredictionsRequest(model_name="nope", input={"body": b"{}"}, sequence_id="seq-7"),
        ts.PredictionsRequest(model_name="probe", input={"body": b'{"echo": 3}'}),
    ]
    answers = list(s.inference.StreamPredictions2(iter(requests_), metadata=s.auth("inference")))
    assert len(answers) == 3
    assert json.loads(answers[0].prediction)["echo"] == 1
    assert answers[0].sequence_id.startswith("ts-seq-")
    assert answers[1].sequence_id == "seq-7"
    assert answers[1].status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "nope" in answers[1].status.message
    assert json.loads(answers[2].prediction)["echo"] == 3


def test_bad_inference_requests_get_their_status_and_the_engine_keeps_serving(engine):
    _, _, s = engine
    md = s.auth("inference")
    unknown = ts.PredictionsRequest(model_name="nope", input={"data": b"x"})
    assert _code(s.inference.Predictions, unknown, metadata=md) == grpc.StatusCode.NOT_FOUND
    version = ts.PredictionsRequest(model_name="probe", model_version="9", input={"data": b"x"})
    assert _code(s.inference.Predictions, version, metadata=md) == grpc.StatusCode.NOT_FOUND
    empty = ts.PredictionsRequest(model_name="probe")
    assert _code(s.inference.Predictions, empty, metadata=md) == grpc.StatusCode.INVALID_ARGUMENT
    failing = ts.PredictionsRequest(model_name="probe", input={"body": b'{"raise": "boom"}'})
    with pytest.raises(grpc.RpcError) as e:
        s.inference.Predictions(failing, metadata=md)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "boom" in e.value.details()
    # a body the built-in handler cannot read is the caller's fault: INVALID_ARGUMENT, which
    # a gRPC client does not retry, where UNAVAILABLE tells it to
    unreadable = ts.PredictionsRequest(model_name="linear", input={"body": b"{not json"})
    with pytest.raises(grpc.RpcError) as e:
        s.inference.Predictions(unreadable, metadata=md)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert "not valid JSON" in e.value.details()
    ok = ts.PredictionsRequest(model_name="probe", input={"body": b'{"echo": "still"}'})
    assert json.loads(s.inference.Predictions(ok, metadata=md).prediction)["echo"] == "still"


def test_v2_health_metadata_and_infer_with_our_stubs(engine):
    _, _, s = engine
    md = s.auth("inference")
    assert s.oip.ServerLive(v2.ServerLiveRequest(), metadata=md).live
    assert s.oip.ServerReady(v2.ServerReadyRequest(), metadata=md).ready
    assert s.oip.ModelReady(v2.ModelReadyRequest(name="linear"), metadata=md).ready
    meta = s.oip.ServerMetadata(v2.ServerMetadataRequest(), metadata=md)
    assert meta.name == "jupyter_torchserve"
    model = s.oip.ModelMetadata(v2.ModelMetadataRequest(name="linear"), metadata=md)
    assert model.name == "linear" and list(model.versions) == ["1.0"]
    x = [[1.0, 2.0, 3.0, 4.0]]
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="input-0",
        datatype="FP32",
        shape=[1, 4],
        contents=v2.InferTensorContents(fp32_contents=x[0]),
    )
    typed = s.oip.ModelInfer(
        v2.ModelInferRequest(model_name="linear", id="r1", inputs=[tensor]), metadata=md
    )
    assert typed.id == "r1" and typed.model_name == "linear" and not typed.raw_output_contents
    out = typed.outputs[0]
    np.testing.assert_allclose(
        np.array(out.contents.fp32_contents).reshape(out.shape), _linear(x), rtol=1e-5
    )
    raw_tensor = v2.ModelInferRequest.InferInputTensor(
        name="input-0", datatype="FP32", shape=[1, 4]
    )
    raw = s.oip.ModelInfer(
        v2.ModelInferRequest(
            model_name="linear",
            inputs=[raw_tensor],
            raw_input_contents=[np.array(x, dtype="<f4").tobytes()],
        ),
        metadata=md,
    )
    values = np.frombuffer(raw.raw_output_contents[0], dtype="<f4").reshape(raw.outputs[0].shape)
    np.testing.assert_allclose(values, _linear(x), rtol=1e-5)
    request = v2.ModelInferRequest(model_name="linear", inputs=[tensor])
    assert _code(s.oip.ModelInfer, request) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(s.oip.ServerLive, v2.ServerLiveRequest()) == grpc.StatusCode.PERMISSION_DENIED


def test_bad_v2_requests_get_their_status_and_the_engine_keeps_serving(engine):
    _, _, s = engine
    md = s.auth("inference")

    def infer(**kw):
        return s.oip.ModelInfer(v2.ModelInferRequest(**kw), metadata=md)

    tensor = v2.ModelInferRequest.InferInputTensor
    assert _code(
        infer, model_name="nope", inputs=[tensor(name="x", datatype="FP32", shape=[1])]
    ) == (grpc.StatusCode.NOT_FOUND)
    assert _code(infer, model_name="linear") == grpc.StatusCode.INVALID_ARGUMENT
    short = tensor(
        name="x",
        datatype="FP32",
        shape=[1, 4],
        contents=v2.InferTensorContents(fp32_contents=[1.0]),
    )
    assert _code(infer, model_name="linear", inputs=[short]) == grpc.StatusCode.INVALID_ARGUMENT
    odd = tensor(name="x", datatype="COMPLEX", shape=[1])
    assert _code(infer, model_name="linear", inputs=[odd]) == grpc.StatusCode.INVALID_ARGUMENT
    ragged = tensor(name="x", datatype="FP32", shape=[1, 4])
    assert _code(infer, model_name="linear", inputs=[ragged], raw_input_contents=[b"abc"]) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _code(s.oip.ModelReady, v2.ModelReadyRequest(name="nope"), metadata=md) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert s.oip.ModelReady(v2.ModelReadyRequest(name="linear"), metadata=md).ready


# tritonclient and kserve (also a test dependency) both register `inference.*` messages in
# protobuf's default pool, so they cannot be imported into one process: tritonclient runs in
# its own interpreter here
TRITON_SCRIPT = """
import sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

address, key, expected = sys.argv[1], sys.argv[2], np.array(eval(sys.argv[3]), dtype=np.float32)
headers = {"authorization": "Bearer " + key}
client = tc.InferenceServerClient(address)
assert client.is_server_live(headers=headers)
assert client.is_server_ready(headers=headers)
assert client.is_model_ready("linear", headers=headers)
assert client.get_server_metadata(headers=headers).name == "jupyter_torchserve"
assert client.get_model_metadata("linear", headers=headers).versions == ["1.0"]
x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
inp = tc.InferInput("input-0", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
result = client.infer("linear", [inp], headers=headers)
name = result.get_response().outputs[0].name
np.testing.assert_allclose(result.as_numpy(name), expected, rtol=1e-5)
try:
    client.get_model_config("linear", headers=headers)
    raise SystemExit("get_model_config answered")
except InferenceServerException as e:
    assert "UNIMPLEMENTED" in str(e.status()) and "Triton" in e.message(), e
try:
    client.is_server_live()
    raise SystemExit("no key, yet live")
except InferenceServerException as e:
    assert "PERMISSION_DENIED" in str(e.status()), e
print("tritonclient ok")
"""


def test_tritonclient_infer_metadata_health_and_triton_only_calls(engine):
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tritonclient") is None:  # not imported: see TRITON_SCRIPT
        pytest.skip("tritonclient is not installed")
    info, _, s = engine
    expected = repr(_linear([[1.0, 2.0, 3.0, 4.0]]).tolist())
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            TRITON_SCRIPT,
            info["grpc_inference_address"],
            s.keys.inference,
            expected,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "tritonclient ok" in out.stdout, out.stderr[-3000:]


def test_management_rpcs_answer_what_torchserve_answers(engine):
    _, _, s = engine
    md = s.auth("management")
    m = s.management
    listed = json.loads(m.ListModels(mg.ListModelsRequest(), metadata=md).msg)
    assert {x["modelName"] for x in listed["models"]} >= {"probe", "linear", "stream"}
    registered = m.RegisterModel(
        mg.RegisterModelRequest(
            url="probe-1.0.mar", model_name="p2", initial_workers=1, synchronous=True
        ),
        metadata=md,
    )
    assert registered.msg.startswith('Model "p2" Version: 1.0 registered')
    described = json.loads(
        m.DescribeModel(mg.DescribeModelRequest(model_name="p2"), metadata=md).msg
    )
    assert described[0]["modelName"] == "p2" and len(described[0]["workers"]) == 1
    scaled = m.ScaleWorker(
        mg.ScaleWorkerRequest(model_name="p2", min_worker=2, synchronous=True), metadata=md
    )
    assert scaled.msg == "Workers scaled to 2 for model: p2"
    described = json.loads(
        m.DescribeModel(mg.DescribeModelRequest(model_name="p2"), metadata=md).msg
    )
    assert len(described[0]["workers"]) == 2
    default = m.SetDefault(mg.SetDefaultRequest(model_name="p2", model_version="1.0"), metadata=md)
    assert default.msg == 'Default version successfully updated for model "p2" to "1.0"'
    gone = m.UnregisterModel(mg.UnregisterModelRequest(model_name="p2"), metadata=md)
    assert gone.msg == 'Model "p2" unregistered'
    for call, request in [
        (m.ListModels, mg.ListModelsRequest()),
        (m.DescribeModel, mg.DescribeModelRequest(model_name="probe")),
        (m.RegisterModel, mg.RegisterModelRequest(url="probe-1.0.mar", model_name="p3")),
        (m.ScaleWorker, mg.ScaleWorkerRequest(model_name="probe", min_worker=1)),
        (m.SetDefault, mg.SetDefaultRequest(model_name="probe", model_version="1.0")),
        (m.UnregisterModel, mg.UnregisterModelRequest(model_name="probe")),
    ]:
        assert _code(call, request) == grpc.StatusCode.PERMISSION_DENIED, call


def test_bad_management_requests_get_their_status(engine):
    _, _, s = engine
    md = s.auth("management")
    m = s.management
    assert _code(m.DescribeModel, mg.DescribeModelRequest(model_name="nope"), metadata=md) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert _code(m.RegisterModel, mg.RegisterModelRequest(), metadata=md) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    missing = mg.RegisterModelRequest(url="missing.mar")
    assert _code(m.RegisterModel, missing, metadata=md) == grpc.StatusCode.NOT_FOUND
    assert _code(
        m.SetDefault, mg.SetDefaultRequest(model_name="probe", model_version="9"), metadata=md
    ) == (grpc.StatusCode.NOT_FOUND)
    assert _code(m.UnregisterModel, mg.UnregisterModelRequest(model_name="nope"), metadata=md) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert json.loads(m.ListModels(mg.ListModelsRequest(limit=1), metadata=md).msg)["models"]


def _wait_ready(client, name: str) -> list:
    deadline = time.monotonic() + 60
    workers: list = []
    while time.monotonic() < deadline:
        workers = client.describe(name)[0]["workers"]  # 404 (EngineError): rolled back
        if workers and workers[0]["status"] == "READY":
            break
        time.sleep(0.2)
    return workers


def test_a_management_call_whose_caller_gives_up_is_carried_out_not_half_undone(engine):
    """A caller's deadline ends the call, not the change it asked for: the registration goes
    on and its worker comes up, over gRPC as over HTTP (and in TorchServe). Before, the
    cancelled gRPC call rolled the registration back."""
    info, client, s = engine
    md = s.auth("management")
    request = mg.RegisterModelRequest(url="slow.mar", initial_workers=1, synchronous=True)
    code = _code(s.management.RegisterModel, request, metadata=md, timeout=1.0)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [w["status"] for w in _wait_ready(client, "slow")] == ["READY"]
    assert client.predict("slow", b"{}").text == "loaded"
    gone = s.management.UnregisterModel(mg.UnregisterModelRequest(model_name="slow"), metadata=md)
    assert gone.msg == 'Model "slow" unregistered'

    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{info['management_address']}/models",
            params={"url": "slow.mar", "initial_workers": 1, "synchronous": "true"},
            headers=dict(md),
            timeout=1.0,
        )
    assert [w["status"] for w in _wait_ready(client, "slow")] == ["READY"]
    client.unregister("slow")


def test_oversized_message_is_refused_and_rest_and_grpc_share_a_batch(tmp_path):
    store = model_store(tmp_path, "probe")
    config = dict(model_store=str(store), max_request_size=10_000, max_inflight_per_worker=1)
    with grpc_engine(tmp_path, **config) as (info, c, s):
        c.register("probe-1.0.mar", initial_workers=1, batch_size=4)
        big = ts.PredictionsRequest(model_name="probe", input={"body": b"x" * 20_000})
        assert _code(s.inference.Predictions, big) == grpc.StatusCode.RESOURCE_EXHAUSTED
        url = info["inference_address"] + "/predictions/probe"

        def rest(body):
            return requests.post(url, json=body, timeout=60).json()

        def rpc():
            request = ts.PredictionsRequest(model_name="probe", input={"body": b'{"echo": "grpc"}'})
            return json.loads(s.inference.Predictions(request, timeout=60).prediction)

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            # the worker is busy with the first request; the next two queue and go together
            busy = pool.submit(rest, {"sleep": 1.5})
            time.sleep(0.5)
            answers = [f.result() for f in [pool.submit(rest, {"echo": "rest"}), pool.submit(rpc)]]
            assert busy.result()["batch"] == 1
        assert {a["echo"] for a in answers} == {"rest", "grpc"}
        assert [a["batch"] for a in answers] == [2, 2]
        # counted once each, by the protocol that carried them (the oversized one never came in)
        page = c.metrics(["jts_inference_requests_by_protocol_total"])
        assert 'model_name="probe",protocol="grpc"} 1.0' in page
        assert 'model_name="probe",protocol="http"} 2.0' in page


def test_client_grpc_calls(engine):
    from jupyter_torchserve.contract import EngineError

    _, client, _ = engine
    with client.grpc() as g:
        assert g.ping() == {"status": "Healthy"}
        assert json.loads(g.predict("probe", '{"echo": "c"}', key="body"))["echo"] == "c"
        assert list(g.stream_predict("stream", b"go")) == [
            b"part 0;",
            b"part 1;",
            b"part 2;",
            b"done",
        ]
        x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
        (out,) = g.infer("linear", {"input-0": x}).values()
        np.testing.assert_allclose(out, _linear(x.tolist()), rtol=1e-5)
        assert g.model_ready("linear")
        assert g.describe("linear")[0]["modelName"] == "linear"
        assert "linear" in {m["modelName"] for m in g.list_models()["models"]}
        with pytest.raises(EngineError) as e:
            g.predict("nope", b"x")
        assert (e.value.status, e.value.type) == (404, "NOT_FOUND")


def test_deploy_snippets_for_grpc_run(engine, tmp_path, capsys):
    import subprocess
    from types import SimpleNamespace

    from google.protobuf import json_format

    from jupyter_torchserve.snippets import deployment_snippets

    info, _, _ = engine
    x = [[1.0, 2.0, 3.0, 4.0]]
    raw = tmp_path / "linear.json"
    raw.write_text(json.dumps(x))
    dep = SimpleNamespace(
        endpoints={k: "http://h/p" for k in ("predictions", "kserve_v1", "kserve_v2", "metrics")},
        payloads={"raw": str(raw)},
        token=None,
        management_address="http://h",
        name="linear",
        version="1.0",
        is_default=True,
        info=info,
    )
    snippets = deployment_snippets(dep)
    exec(snippets["python_grpc"], {})  # reads the inference key from the key file itself
    answer = np.array(json.loads(capsys.readouterr().out)).reshape(1, 3)
    np.testing.assert_allclose(answer, _linear(x), rtol=1e-5)
    assert info["grpc_inference_address"] in snippets["grpcurl"]
    # grpcurl is not installable here: check the request its -d argument becomes
    d = snippets["grpcurl"].split(" -d ", 1)[1].rsplit(f" {info['grpc_inference_address']} ", 1)[0]
    sent = subprocess.run(["bash", "-c", f"printf %s {d}"], capture_output=True, text=True)
    request = json_format.Parse(sent.stdout, ts.PredictionsRequest())
    assert request.model_name == "linear" and request.input["data"] == raw.read_bytes()


def test_printed_http_snippets_send_the_inference_key_when_it_is_required(engine, tmp_path, capsys):
    """With inference_token_required, the curl and requests lines carry the inference key,
    read from the key file when they run (never printed), and the engine answers them."""
    import subprocess
    from types import SimpleNamespace

    from jupyter_torchserve.discovery import read_keys
    from jupyter_torchserve.snippets import deployment_snippets

    info, _, _ = engine
    x = [[1.0, 2.0, 3.0, 4.0]]
    want = _linear(x)
    files = {
        "raw": ("linear.json", x),
        "v1": ("linear.v1.json", {"instances": x}),
        "v2": (
            "linear.v2.json",
            {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": x[0]}]},
        ),
    }
    for name, body in files.values():
        (tmp_path / name).write_text(json.dumps(body))
    base = info["inference_address"]
    dep = SimpleNamespace(
        endpoints={
            "predictions": f"{base}/predictions/linear",
            "kserve_v1": f"{base}/v1/models/linear:predict",
            "kserve_v2": f"{base}/v2/models/linear/infer",
            "metrics": f"{info['metrics_address']}/metrics",
        },
        payloads={kind: str(tmp_path / name) for kind, (name, _) in files.items()},
        token=read_keys(info).management,
        management_address=info["management_address"],
        name="linear",
        version="1.0",
        is_default=True,
        info=info,
    )
    snippets = deployment_snippets(dep)
    keys = read_keys(info)
    assert all(keys.inference not in text for text in snippets.values())
    answers = {}
    for key in ("curl", "curl_v1", "curl_v2"):
        out = subprocess.run(
            snippets[key] + " --fail-with-body", shell=True, capture_output=True, text=True
        )
        assert out.returncode == 0, (key, out.stdout, out.stderr)
        answers[key] = json.loads(out.stdout)
    np.testing.assert_allclose(np.array(answers["curl"]).reshape(1, 3), want, rtol=1e-5)
    np.testing.assert_allclose(answers["curl_v1"]["predictions"], want, rtol=1e-5)
    got = np.array(answers["curl_v2"]["outputs"][0]["data"]).reshape(1, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    capsys.readouterr()
    exec(snippets["python"], {})
    status, _, answer = capsys.readouterr().out.strip().partition(" ")
    assert status == "200", answer
    exec(snippets["python_v2"], {})
    assert "outputs" in capsys.readouterr().out
    assert "--type inference" in snippets["grpcurl"]


def test_grpc_over_tls_with_torchserves_keys(tmp_path):
    """enable_grpc_ssl with certificate_file/private_key_file, as TorchServe documents it."""
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    store = model_store(tmp_path, "probe")
    tls = dict(enable_grpc_ssl=True, certificate_file=str(cert), private_key_file=str(key))
    with grpc_engine(tmp_path, model_store=str(store), **tls) as (info, c, _):
        c.register("probe-1.0.mar", initial_workers=1)
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(info["grpc_inference_address"], credentials) as channel:
            stub = ts_grpc.InferenceAPIsServiceStub(channel)
            request = ts.PredictionsRequest(model_name="probe", input={"body": b'{"echo": "tls"}'})
            assert json.loads(stub.Predictions(request, timeout=60).prediction)["echo"] == "tls"
        with grpc.insecure_channel(info["grpc_inference_address"]) as plain:
            stub = ts_grpc.InferenceAPIsServiceStub(plain)
            assert _code(stub.Predictions, request, timeout=10) == grpc.StatusCode.UNAVAILABLE


def test_a_grpc_port_in_use_stops_the_start_with_a_clear_message(tmp_path):
    import socket

    from jupyter_torchserve.launcher import EngineStartError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EngineStartError) as e:
            with grpc_engine(tmp_path, grpc_inference_port=port):
                pass
    assert "Cannot start the gRPC APIs" in str(e.value) and str(port) in str(e.value)
