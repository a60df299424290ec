"""The committed gRPC stubs are what protoc makes of our .proto files, and those files keep
the services' names and field numbers that TorchServe's and the OIP's clients rely on."""

from __future__ import annotations

import importlib

import pytest
from google.protobuf import descriptor_pb2

from jupyter_torchserve.protos import generate

pytest.importorskip("grpc_tools")


def test_committed_stubs_match_the_proto_files(tmp_path):
    out = tmp_path / "set.pb"
    generate.descriptor_set(out)
    wanted = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert len(wanted.file) == len(generate.PROTOS) == 3
    for proto in wanted.file:
        _drop_json_names(proto)  # protoc's set has them, the stubs' copy leaves them out
        module = importlib.import_module(
            proto.name.removesuffix(".proto").replace("/", ".") + "_pb2"
        )
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert committed == proto, (
            f"{proto.name} changed since its stubs were made: run "
            "`python -m jupyter_torchserve.protos.generate` and commit the result"
        )


def _drop_json_names(proto: descriptor_pb2.FileDescriptorProto) -> None:
    messages = list(proto.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            field.ClearField("json_name")


def test_services_and_fields_on_the_wire():
    from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2
    from jupyter_torchserve.protos.torchserve import inference_pb2, management_pb2

    services = {
        s.full_name: sorted(m.name for m in s.methods)
        for mod in (inference_pb2, management_pb2, v2)
        for s in mod.DESCRIPTOR.services_by_name.values()
    }
    assert services == {
        "org.pytorch.serve.grpc.inference.InferenceAPIsService": [
            "Ping",
            "Predictions",
            "StreamPredictions",
            "StreamPredictions2",
        ],
        "org.pytorch.serve.grpc.management.ManagementAPIsService": [
            "DescribeModel",
            "ListModels",
            "RegisterModel",
            "ScaleWorker",
            "SetDefault",
            "UnregisterModel",
        ],
        "org.pytorch.serve.grpc.openinference.GRPCInferenceService": [
            "ModelInfer",
            "ModelMetadata",
            "ModelReady",
            "ServerLive",
            "ServerMetadata",
            "ServerReady",
        ],
    }
    fields = {f.name: f.number for f in inference_pb2.PredictionsRequest.DESCRIPTOR.fields}
    assert fields == {"model_name": 1, "model_version": 2, "input": 3, "sequence_id": 4}
    fields = {f.name: f.number for f in management_pb2.RegisterModelRequest.DESCRIPTOR.fields}
    assert fields["url"] == 9 and fields["startup_timeout"] == 11
    fields = {f.name: f.number for f in v2.ModelInferRequest.DESCRIPTOR.fields}
    assert fields["raw_input_contents"] == 7 and fields["inputs"] == 5
    assert {f.name: f.number for f in v2.ModelInferResponse.DESCRIPTOR.fields}[
        "raw_output_contents"
    ] == 6


@pytest.mark.slow
def test_our_v2_messages_read_tritonclients_bytes():
    """tritonclient's `inference.ModelInferRequest` and ours are the same message on the wire.
    In its own interpreter: tritonclient and kserve cannot share protobuf's default pool."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    script = (
        "import sys; from tritonclient.grpc import service_pb2 as t\n"
        "r = t.ModelInferRequest(model_name='m', id='7', raw_input_contents=[b'\\x00\\x01'])\n"
        "r.inputs.add(name='x', datatype='FP32', shape=[1, 4])\n"
        "sys.stdout.buffer.write(r.SerializeToString())"
    )
    wire = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2

    ours = v2.ModelInferRequest.FromString(wire)
    assert (ours.model_name, ours.id, list(ours.inputs[0].shape)) == ("m", "7", [1, 4])
    assert list(ours.raw_input_contents) == [b"\x00\x01"]
