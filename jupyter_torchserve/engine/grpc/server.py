"""The two gRPC servers (grpc.aio, on the engine's own event loop): inference with
TorchServe's InferenceAPIsService and KServe v2, management with ManagementAPIsService.

On the engine's loop, a gRPC request is queued, batched and answered by the same code and
in the same loop turn as an HTTP one, so the two can share a batch and nothing crosses a
thread. Message sizes are max_request_size / max_response_size, as in TorchServe (its
`maxInboundMessageSize`); gRPC itself refuses a bigger message with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import grpc

from ...config import EngineConfig
from ...protos.torchserve import inference_pb2_grpc, management_pb2_grpc
from ..registry import ModelRegistry
from ..tls import pem_pair
from . import oip
from .inference import InferenceServicer
from .management import ManagementServicer


def grpc_addresses(config: EngineConfig) -> dict[str, str]:
    """`host:port` of each gRPC API that is switched on (a port is set)."""
    out = {}
    if config.grpc_inference_port is not None:
        out["grpc_inference_address"] = (
            f"{config.grpc_inference_address}:{config.grpc_inference_port}"
        )
    if config.grpc_management_port is not None:
        out["grpc_management_address"] = (
            f"{config.grpc_management_address}:{config.grpc_management_port}"
        )
    return out


async def start_grpc(registry: ModelRegistry) -> list[grpc.aio.Server]:
    """Start what `grpc_addresses` lists; raise OSError when a port cannot be bound."""
    config = registry.config
    addresses = grpc_addresses(config)
    servers = []
    try:
        if "grpc_inference_address" in addresses:
            server = _server(config)
            inference_pb2_grpc.add_InferenceAPIsServiceServicer_to_server(
                InferenceServicer(registry), server
            )
            server.add_generic_rpc_handlers(oip.handlers(registry))
            servers.append(await _bind(server, addresses["grpc_inference_address"], config))
        if "grpc_management_address" in addresses:
            server = _server(config)
            management_pb2_grpc.add_ManagementAPIsServiceServicer_to_server(
                ManagementServicer(registry), server
            )
            servers.append(await _bind(server, addresses["grpc_management_address"], config))
    except BaseException:
        for s in servers:
            await s.stop(None)
        raise
    return servers


def _server(config: EngineConfig) -> grpc.aio.Server:
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.max_request_size),
            ("grpc.max_send_message_length", config.max_response_size),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared listener
        ]
    )


async def _bind(server: grpc.aio.Server, address: str, config: EngineConfig) -> grpc.aio.Server:
    if config.enable_grpc_ssl:
        key, cert = pem_pair(config)
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server
