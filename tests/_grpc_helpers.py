"""Engines with their gRPC APIs on free ports, and channels to them."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from _engine_helpers import running_engine
from _ports import free_port

from jupyter_torchserve.discovery import read_keys
from jupyter_torchserve.protos.kserve import predict_v2_pb2_grpc
from jupyter_torchserve.protos.torchserve import inference_pb2_grpc, management_pb2_grpc


class Stubs:
    """Stubs of the three services over the engine's two gRPC channels, and its keys."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.inference_channel = grpc.insecure_channel(info["grpc_inference_address"])
        self.management_channel = grpc.insecure_channel(info["grpc_management_address"])
        self.inference = inference_pb2_grpc.InferenceAPIsServiceStub(self.inference_channel)
        self.oip = predict_v2_pb2_grpc.GRPCInferenceServiceStub(self.inference_channel)
        self.management = management_pb2_grpc.ManagementAPIsServiceStub(self.management_channel)
        self.keys = read_keys(info)

    def auth(self, api: str) -> list[tuple[str, str]]:
        """The metadata that carries `api`'s key (none with token auth off)."""
        key = getattr(self.keys, api)
        return [("authorization", f"Bearer {key}")] if key else []

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until both ports accept connections (TorchServe binds gRPC after REST answers)."""
        for channel in (self.inference_channel, self.management_channel):
            grpc.channel_ready_future(channel).result(timeout=timeout)

    def close(self) -> None:
        self.inference_channel.close()
        self.management_channel.close()


@contextmanager
def grpc_engine(tmp: Path, **config: Any):
    """`running_engine` with gRPC inference and management on free ports: (info, client, stubs)."""
    config.setdefault("grpc_inference_port", free_port())
    config.setdefault("grpc_management_port", free_port())
    with running_engine(tmp, **config) as (info, client):
        stubs = Stubs(info)
        try:
            yield info, client, stubs
        finally:
            stubs.close()
