"""Issue 15: the KServe bundle of a model defined in a notebook cell, booted with exactly the
ServingRuntime's command line and the bundle's config (KServe's mount /mnt/models remapped
to a temporary folder, the listeners moved to free loopback ports through the TS_* variables
the config enables), answers KServe v1 and v2 with the kernel model's answers: on real
TorchServe 0.12 (with the TS_SERVICE_ENVELOPE KServe's controller injects for the protocol)
and on our engine through the image's `torchserve` shim.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from _export_helpers import (
    NotebookModel,
    Runtime,
    assert_top5,
    kserve_load,
    kserve_requests,
    notebook_model,
    port_env,
    remap,
    v2_value,
    wait_ready,
)
from _ports import free_port
from _torchserve_helpers import skip_reason

from jupyter_torchserve.config import parse_model_snapshot, parse_properties
from jupyter_torchserve.export import export, kserve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
TS_SKIP = skip_reason()
DIGITS = (0, 3, 7)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> NotebookModel:
    return notebook_model(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def bundle(notebook: NotebookModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "mnist-kserve"
    result = export(notebook.archive, to="kserve", out=out, protocol="v1")
    written = {str(f) for f in result.files}
    assert {
        "config/config.properties",
        "model-store/mnist.mar",
        "inferenceservice.yaml",
        "servingruntime.yaml",
        "image/Dockerfile",
        "README.md",
    } <= written
    return out


def storage(bundle: Path, root: Path) -> Path:
    """What KServe's storage initializer puts at /mnt/models: the bundle's two folders."""
    mount = root / "mnt" / "models"
    for part in ("config", "model-store"):
        shutil.copytree(bundle / part, mount / part)
    return mount


def boot(
    which: str, bundle: Path, root: Path, envelope: str, protocol: str
) -> tuple[Runtime, list[int]]:
    """The runtime's container as KServe starts it: its args and the env it injects."""
    mount = storage(bundle, root)
    ports = [free_port() for _ in range(5)]
    env = {
        "TS_SERVICE_ENVELOPE": envelope,  # {{.Labels.serviceEnvelope}}
        "PROTOCOL_VERSION": protocol,  # appended by SetTorchServeDefaults
        **port_env(ports),
    }
    return Runtime(
        which, remap(kserve.RUNTIME_ARGS, kserve.MOUNT, mount), root / "work", env
    ), ports


def form_typed_v1(ports: list[int], notebook: NotebookModel) -> requests.Response:
    """A v1 body sent as `curl -d @v1.json` sends it: typed as a form, not as JSON."""
    v1, _ = kserve_requests(notebook.png(DIGITS[0]), "mnist")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url = f"http://127.0.0.1:{ports[0]}/v1/models/mnist:predict"
    return requests.post(url, data=json.dumps(v1), headers=form, timeout=120)


def ask(ports: list[int], notebook: NotebookModel, protocol: str, what: str) -> None:
    base = f"http://127.0.0.1:{ports[0]}"
    for digit in DIGITS:
        v1, v2 = kserve_requests(notebook.png(digit), "mnist")
        want = notebook.top5(digit)
        if protocol == "v1":
            r = requests.post(f"{base}/v1/models/mnist:predict", json=v1, timeout=120)
            assert r.status_code == 200, f"{what} v1: {r.status_code} {r.text[:500]}"
            (got,) = r.json()["predictions"]
        else:
            r = requests.post(f"{base}/v2/models/mnist/infer", json=v2, timeout=120)
            assert r.status_code == 200, f"{what} v2: {r.status_code} {r.text[:500]}"
            got = v2_value(r.json())
        assert_top5(got, want, f"{what} {protocol}, digit {digit}")


def test_bundle_config_is_kserves_layout_with_the_served_settings(bundle: Path) -> None:
    props = parse_properties((bundle / "config/config.properties").read_text())
    assert props["enable_envvars_config"] == "true"
    assert props["disable_token_authorization"] == "true"  # else :predict is 400 on 0.12
    assert props["model_store"] == "/mnt/models/model-store"
    snap = parse_model_snapshot(props["model_snapshot"])
    assert snap["models"]["mnist"]["1.0"] == {
        "defaultVersion": True,
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 1,
        "maxBatchDelay": 100,
        "responseTimeout": 120,
        "marName": "mnist.mar",
    }
    import yaml

    kserve_load(
        yaml.safe_load((bundle / "inferenceservice.yaml").read_text()), "V1beta1InferenceService"
    )
    kserve_load(
        yaml.safe_load((bundle / "servingruntime.yaml").read_text()), "V1alpha1ServingRuntime"
    )


@pytest.mark.torchserve
@pytest.mark.skipif(TS_SKIP is not None, reason=TS_SKIP or "")
@pytest.mark.parametrize("protocol,envelope", [("v1", "kserve"), ("v2", "kservev2")])
def test_torchserve_0_12_serves_the_bundle_as_written(
    protocol: str, envelope: str, bundle: Path, notebook: NotebookModel, tmp_path: Path
) -> None:
    runtime, ports = boot("torchserve", bundle, tmp_path, envelope, protocol)
    with runtime:
        try:
            wait_ready(f"http://127.0.0.1:{ports[1]}", "mnist")
            ask(ports, notebook, protocol, "TorchServe 0.12")
            if protocol == "v1":  # why the bundle's README sends the JSON header
                r = form_typed_v1(ports, notebook)
                assert (r.status_code, r.json()["message"]) == (503, "Prediction failed")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{runtime.log()}") from None


def test_our_engine_serves_the_bundle_with_the_same_command_line(
    bundle: Path, notebook: NotebookModel, tmp_path: Path
) -> None:
    runtime, ports = boot("ours", bundle, tmp_path, "kserve", "v1")
    with runtime:
        try:
            described = wait_ready(f"http://127.0.0.1:{ports[1]}", "mnist")
            assert described[0]["batchSize"] == 1 and described[0]["minWorkers"] == 1
            ask(ports, notebook, "v1", "ours")
            ask(ports, notebook, "v2", "ours")  # one engine answers both protocols
            r = form_typed_v1(ports, notebook)  # taken as JSON, where TorchServe says 503
            assert r.status_code == 200, r.text[:500]
            assert_top5(r.json()["predictions"][0], notebook.top5(DIGITS[0]), "ours, form-typed")
            # metrics on the port KServe's Prometheus annotation names (remapped)
            metrics = requests.get(f"http://127.0.0.1:{ports[2]}/metrics", timeout=30).text
            assert "ts_inference_requests_total" in metrics
        except AssertionError as e:
            raise AssertionError(f"{e}\n{runtime.log()}") from None
    log = (tmp_path / "work" / "server.log").read_text()
    said = [line for line in log.splitlines() if "not acted on" in line]
    assert len(said) == 1 and "metrics_mode" in said[0] and "service_envelope" in said[0], log[
        -3000:
    ]


def test_a_grpc_v2_bundle_is_called_with_its_own_grpcurl_request(
    notebook: NotebookModel, tmp_path: Path
) -> None:
    """protocol="grpc-v2": the ISVC exposes the engine's gRPC port as h2c (KServe routes
    gRPC there), the runtime declares grpc-v2, and the bundle's `grpc-v2-request.json`
    (protobuf JSON, what its grpcurl step sends) answers over the standard OIP service name
    what its REST twin `v2-request.json` answers, on an engine booted as KServe boots it."""
    import json

    import grpc
    import yaml
    from google.protobuf import json_format

    from jupyter_torchserve.protos.kserve import predict_v2_pb2 as pb
    from jupyter_torchserve.protos.kserve import predict_v2_pb2_grpc

    out = tmp_path / "bundle"
    export(notebook.archive, to="kserve", out=out, protocol="grpc-v2")
    isvc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    model = isvc["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "grpc-v2"
    assert model["ports"] == [{"containerPort": 7070, "name": "h2c", "protocol": "TCP"}]
    runtime_spec = yaml.safe_load((out / "servingruntime.yaml").read_text())["spec"]
    assert "grpc-v2" in runtime_spec["protocolVersions"]
    kserve_load(isvc, "V1beta1InferenceService")
    props = parse_properties((out / "config/config.properties").read_text())
    assert (props["grpc_inference_address"], props["grpc_inference_port"]) == ("0.0.0.0", "7070")
    readme = (out / "README.md").read_text()
    assert "grpcurl -plaintext -proto grpc_predict_v2.proto" in readme
    assert "inference.GRPCInferenceService/ModelInfer < grpc-v2-request.json" in readme
    # the proto grpcurl reads defines the method the README calls, under its standard name
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    descriptor = tmp_path / "proto.pb"
    args = [
        "protoc",
        f"-I{out}",
        f"--descriptor_set_out={descriptor}",
        str(out / kserve.GRPC_PROTO),
    ]
    assert protoc.main(args) == 0
    (proto,) = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    assert proto.package == "inference"
    assert "ModelInfer" in [m.name for s in proto.service for m in s.method]

    request = json_format.Parse((out / "grpc-v2-request.json").read_text(), pb.ModelInferRequest())
    rest_body = json.loads((out / "v2-request.json").read_text())
    runtime, ports = boot("ours", out, tmp_path / "run", "kservev2", "grpc-v2")
    with runtime:
        try:
            wait_ready(f"http://127.0.0.1:{ports[1]}", "mnist")
            r = requests.post(
                f"http://127.0.0.1:{ports[0]}/v2/models/mnist/infer", json=rest_body, timeout=120
            )
            assert r.status_code == 200, r.text[:500]
            with grpc.insecure_channel(f"127.0.0.1:{ports[3]}") as channel:
                stub = predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
                reply = stub.ModelInfer(request, timeout=120)
        except (AssertionError, grpc.RpcError) as e:
            raise AssertionError(f"{e}\n{runtime.log()}") from None
    (output,) = reply.outputs
    (value,) = output.contents.bytes_contents
    rest_value = v2_value(r.json())
    assert json.loads(value) == json.loads(rest_value)
    from jupyter_torchserve.examples import mnist

    assert len(json.loads(value)) == 5 and set(json.loads(value)) <= set(mnist.LABELS.values())
