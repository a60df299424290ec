"""The calls KServe's and T9k's documentation make, sent as their clients send them (curl),
to an engine serving a real image classifier: the answers are the handler's, as TorchServe
0.12 gives them (tests/test_torchserve_compat.py checks TorchServe's side)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import requests
import torch
from _engine_helpers import running_engine
from _notebook_helpers import Pooled, rgba_png
from _ports import free_port

from jupyter_torchserve.archive import archive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # starts real processes


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("kserve-fidelity")
    store = tmp / "store"
    store.mkdir()
    torch.manual_seed(0)
    model = Pooled(3).eval()
    for name, handler in (("digits", "image_classifier"), ("digits_plain", "tensor")):
        archive(
            model,
            name,
            handler=handler,
            example_inputs=torch.rand(1, 3, 36, 40),
            export_path=str(store),
            format="torchscript",
            preflight=False,
        )
    archive(
        torch.nn.Conv2d(3, 4, 1).eval(),  # four classes' scores per pixel: [N, 4, H, W]
        "regions",
        handler="image_segmenter",
        example_inputs=torch.rand(1, 3, 36, 40),
        export_path=str(store),
        format="torchscript",
        preflight=False,
    )
    with running_engine(tmp, model_store=str(store), grpc_inference_port=free_port()) as (
        info,
        client,
    ):
        client.register("digits.mar", initial_workers=1)
        client.register("regions.mar", initial_workers=1)
        # each archive served by the other's handler, named at registration
        client.register("digits.mar", "digits_as_tensor", handler="tensor", initial_workers=1)
        client.register(
            "digits_plain.mar", "plain_as_images", handler="image_classifier", initial_workers=1
        )
        png = tmp / "0.png"
        png.write_bytes(rgba_png())
        yield info["inference_address"], png, info


def curl(*args: str) -> tuple[int, str]:
    """curl as a user types it; the status code is the last line."""
    out = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def test_t9k_tutorial_put_of_a_raw_png_on_v1_predict_gets_the_handlers_answer(served):
    base, png, _ = served
    code, want = curl("-T", str(png), f"{base}/predictions/digits")
    assert code == 200 and len(json.loads(want)) == 5  # the handler's top-5 dict
    code, body = curl("-T", str(png), f"{base}/v1/models/digits:predict")
    assert code == 200 and json.loads(body) == json.loads(want)
    # POST of the raw bytes with an image content type, and with none
    r = requests.post(
        f"{base}/v1/models/digits:predict",
        data=png.read_bytes(),
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200 and r.json() == json.loads(want)
    code, body = curl("--data-binary", f"@{png}", f"{base}/v1/models/digits:predict")
    assert code == 200 and json.loads(body) == json.loads(want)  # curl's form content type


def test_kserve_documented_v2_bytes_sample_sent_by_curl_d_is_served(served, tmp_path: Path):
    """KServe's mnist_v2_bytes.json (shape [-1]) with `curl -d @file`: form content type."""
    base, png, _ = served
    name = "312a4eb0-0ca7-4803-a101-a6d2c18486fe"
    sample = {
        "inputs": [
            {
                "data": [base64.b64encode(png.read_bytes()).decode()],
                "datatype": "BYTES",
                "name": name,
                "shape": [-1],
            }
        ]
    }
    (tmp_path / "mnist_v2_bytes.json").write_text(json.dumps(sample))
    code, body = curl(
        "-d", f"@{tmp_path / 'mnist_v2_bytes.json'}", f"{base}/v2/models/digits/infer"
    )
    assert code == 200, body
    (output,) = json.loads(body)["outputs"]
    _, want = curl("-T", str(png), f"{base}/predictions/digits")
    assert output["name"] == name  # as TorchServe's kservev2 envelope names it
    assert output["datatype"] == "BYTES" and json.loads(output["data"][0]) == json.loads(want)
    # the v1 envelope from a file, form content type too
    v1 = {"instances": [{"b64": base64.b64encode(png.read_bytes()).decode()}]}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    code, body = curl("-d", f"@{tmp_path / 'v1.json'}", f"{base}/v1/models/digits:predict")
    assert code == 200 and json.loads(body) == {"predictions": [json.loads(want)]}
    # what is really malformed is still a 400 that says why
    bad = {"inputs": [{**sample["inputs"][0], "shape": [-2]}]}
    r = requests.post(f"{base}/v2/models/digits/infer", json=bad)
    assert r.status_code == 400 and "at least -1" in r.json()["error"]


def test_explain_on_v2_and_raw_v1_reaches_the_handlers_explain_path(served):
    """`POST /v2/models/{m}[/versions/{v}]/explain` and a raw body on v1 `:explain` get the
    handler's explanation (Captum attributions, one per input pixel), not its top-5."""
    base, png, _ = served
    b64 = base64.b64encode(png.read_bytes()).decode()
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [b64]}]}
    answers = []
    for path in ("/v2/models/digits/explain", "/v2/models/digits/versions/1.0/explain"):
        r = requests.post(base + path, json=body)
        assert r.status_code == 200, r.text
        (output,) = r.json()["outputs"]
        # named as in KServe's TorchServe sample (inference/kserve.v2_explain_tensors)
        assert output["name"] == "explain" and output["shape"] == [3, 36, 40]
        answers.append(output["data"])
    assert answers[0] == answers[1]
    code, raw = curl("-T", str(png), f"{base}/v1/models/digits:explain")
    assert code == 200 and torch.tensor(json.loads(raw)).flatten().tolist() == answers[0]
    r = requests.post(base + "/v2/models/nope/explain", json=body)
    assert r.status_code == 404 and r.json()["type"] == "ModelNotFoundException"


def test_v2_metadata_says_bytes_as_infer_answers_over_rest_and_grpc(served):
    """The archive's schema records the traced logits (FP32 [-1, 10]), but the image
    classifier's postprocess answers a top-5 dict, which `/infer` and ModelInfer send as
    BYTES: the model's metadata says BYTES too, over REST and gRPC, so a client that picks
    its decoder from the metadata reads the answer."""
    import grpc

    from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2
    from jupyter_torchserve.protos.kserve import predict_v2_pb2_grpc as v2_grpc

    base, png, info = served
    meta = requests.get(f"{base}/v2/models/digits").json()
    name = meta["inputs"][0]["name"]
    assert meta["outputs"] == [{"name": name, "datatype": "BYTES", "shape": [-1]}]
    b64 = base64.b64encode(png.read_bytes()).decode()
    body = {"inputs": [{"name": name, "datatype": "BYTES", "shape": [1], "data": [b64]}]}
    r = requests.post(f"{base}/v2/models/digits/infer", json=body)
    (output,) = r.json()["outputs"]
    assert (output["name"], output["datatype"]) == (name, meta["outputs"][0]["datatype"])
    with grpc.insecure_channel(info["grpc_inference_address"]) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        model = stub.ModelMetadata(v2.ModelMetadataRequest(name="digits"), timeout=60)
        assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
            (name, "BYTES", [-1])
        ]
        tensor = v2.ModelInferRequest.InferInputTensor(
            name=name,
            datatype="BYTES",
            shape=[1],
            contents=v2.InferTensorContents(bytes_contents=[png.read_bytes()]),
        )
        request = v2.ModelInferRequest(model_name="digits", inputs=[tensor])
        (out,) = stub.ModelInfer(request, timeout=60).outputs
    assert (out.name, out.datatype) == (name, model.outputs[0].datatype)


def _described_and_answered(info, model: str, rest_input: dict, grpc_input) -> list:
    """(what the metadata says of the output, what the answer's output is), each as
    (name, datatype, shape): over REST, then over gRPC (ModelMetadata, ModelInfer)."""
    import grpc

    from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2
    from jupyter_torchserve.protos.kserve import predict_v2_pb2_grpc as v2_grpc

    def told(t) -> tuple:
        if isinstance(t, dict):
            return t["name"], t["datatype"], list(t["shape"])
        return t.name, t.datatype, list(t.shape)

    base = info["inference_address"]
    metadata = requests.get(f"{base}/v2/models/{model}").json()
    (meta,) = metadata["outputs"]
    # named as the metadata names the input, as a client that reads it sends it
    grpc_input.name = metadata["inputs"][0]["name"]
    rest_input = {**rest_input, "name": grpc_input.name}
    r = requests.post(f"{base}/v2/models/{model}/infer", json={"inputs": [rest_input]})
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    with grpc.insecure_channel(info["grpc_inference_address"]) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        (gmeta,) = stub.ModelMetadata(v2.ModelMetadataRequest(name=model), timeout=60).outputs
        request = v2.ModelInferRequest(model_name=model, inputs=[grpc_input])
        (gout,) = stub.ModelInfer(request, timeout=60).outputs
    return [(told(meta), told(out)), (told(gmeta), told(gout))]


def _describes(described: tuple, answered: tuple) -> bool:
    """The metadata describes the answer: same name and datatype, same rank, and each
    dimension the answer's or -1 (any)."""
    (name, dt, shape), (a_name, a_dt, a_shape) = described, answered
    return (name, dt, len(shape)) == (a_name, a_dt, len(a_shape)) and all(
        d in (-1, a) for d, a in zip(shape, a_shape, strict=True)
    )


def _png_input(png: Path):
    """One PNG as a v2 BYTES input: the REST body's and gRPC's."""
    from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2

    raw = png.read_bytes()
    rest = {
        "name": "x",
        "datatype": "BYTES",
        "shape": [1],
        "data": [base64.b64encode(raw).decode()],
    }
    contents = v2.InferTensorContents(bytes_contents=[raw])
    tensor = v2.ModelInferRequest.InferInputTensor
    return rest, tensor(name="x", datatype="BYTES", shape=[1], contents=contents)


def test_v2_metadata_follows_the_handler_named_at_registration(served):
    """TorchServe's register `handler=` serves an archive with another handler: the image
    classifier archive registered with the tensor handler answers the traced logits (FP32
    [1, 10]), the tensor archive registered with the image classifier answers its top-5 as
    BYTES. The metadata describes what that handler answers, not the archive's own."""
    from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2

    _, png, info = served
    pixels = torch.rand(1, 3, 36, 40).flatten().tolist()
    rest = {"name": "x", "datatype": "FP32", "shape": [1, 3, 36, 40], "data": pixels}
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x",
        datatype="FP32",
        shape=[1, 3, 36, 40],
        contents=v2.InferTensorContents(fp32_contents=pixels),
    )
    for described, answered in _described_and_answered(info, "digits_as_tensor", rest, tensor):
        assert described[1:] == ("FP32", [-1, 10]) and answered[1:] == ("FP32", [1, 10])
        assert _describes(described, answered), (described, answered)
    for described, answered in _described_and_answered(info, "plain_as_images", *_png_input(png)):
        assert described[1:] == ("BYTES", [-1]) and answered[1:] == ("BYTES", [1])
        assert _describes(described, answered), (described, answered)


def test_v2_metadata_of_a_segmenter_is_the_class_map_infer_answers(served):
    """The segmenter's schema records the traced scores (FP32 [N, 4, 36, 40]), but its
    postprocess answers each pixel's class (argmax): `/infer` and ModelInfer answer INT64
    [1, 36, 40], and the metadata says INT64 [N, 36, 40], over REST and gRPC."""
    _, png, info = served
    for described, answered in _described_and_answered(info, "regions", *_png_input(png)):
        assert described[1] == "INT64" and described[2][1:] == [36, 40]
        assert answered[1:] == ("INT64", [1, 36, 40])
        assert _describes(described, answered), (described, answered)
    b64 = base64.b64encode(png.read_bytes()).decode()
    body = {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [b64]}]}
    (out,) = requests.post(
        f"{info['inference_address']}/v2/models/regions/infer", json=body
    ).json()["outputs"]
    assert set(out["data"]) <= {0, 1, 2, 3}  # class indices
