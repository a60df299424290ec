"""Our own .proto files for the gRPC services, and the stubs protoc makes of them.

The files are written from TorchServe 0.12's and KServe's field lists, so they match those
services on the wire (packages, service and method names, field numbers and types). The
stubs are committed, not made at build time: the engine then needs only grpcio and protobuf
at run time, and tests/test_grpc_stubs.py fails when a stub no longer matches its .proto
(regenerate with `python -m jupyter_torchserve.protos.generate`).
"""
