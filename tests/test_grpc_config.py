"""gRPC settings from a TorchServe config.properties, and the error -> status rules (no process)."""

from __future__ import annotations

import grpc

from jupyter_torchserve.config import EngineConfig, load_ts_config
from jupyter_torchserve.engine.errors import ApiError, QueueFull, invalid_key, model_not_found
from jupyter_torchserve.engine.grpc.server import grpc_addresses
from jupyter_torchserve.engine.grpc.status import status_code


def test_torchserve_grpc_keys_open_the_grpc_apis(tmp_path):
    props = tmp_path / "config.properties"
    props.write_text(
        "grpc_inference_port=7070\ngrpc_management_port=7071\n"
        "grpc_management_address=0.0.0.0\nenable_grpc_ssl=true\n"
        "certificate_file=/c.pem\nprivate_key_file=/k.pem\n"
    )
    values = load_ts_config(props)
    assert values.pop("_ignored") == []
    config = EngineConfig(**values)
    assert config.enable_grpc_ssl and config.certificate_file == "/c.pem"
    assert grpc_addresses(config) == {
        "grpc_inference_address": "127.0.0.1:7070",
        "grpc_management_address": "0.0.0.0:7071",
    }
    assert grpc_addresses(EngineConfig()) == {}  # off unless a port is set


def test_errors_map_to_torchserves_codes_with_two_deliberate_changes():
    assert (
        status_code(ApiError(400, "BadRequestException", "x")) == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert status_code(invalid_key()) == grpc.StatusCode.PERMISSION_DENIED
    assert status_code(model_not_found("m")) == grpc.StatusCode.NOT_FOUND  # TorchServe: INTERNAL
    assert status_code(QueueFull("m", "1.0", 100)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert QueueFull("m", "1.0", 100).status == 503  # REST keeps TorchServe's answer
    no_worker = ApiError(503, "ServiceUnavailableException", "no worker")
    assert status_code(no_worker) == grpc.StatusCode.UNAVAILABLE
    assert status_code(ApiError(500, "InternalServerException", "x")) == grpc.StatusCode.INTERNAL
