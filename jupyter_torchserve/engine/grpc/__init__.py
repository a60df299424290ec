"""The engine's gRPC front: TorchServe's inference and management services and KServe v2 /
the Open Inference Protocol, the third caller of inference/ beside the two HTTP paths."""
