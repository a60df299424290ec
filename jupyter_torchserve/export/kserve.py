"""`to="kserve"`: the storage layout of KServe's TorchServe integration, plus a ServingRuntime
that runs our engine's image the way KServe runs a TorchServe image.

Storage (what `storageUri` points at; KServe mounts it at /mnt/models):
`config/config.properties` (with the `model_snapshot` of the served settings) and
`model-store/NAME.mar`. The runtime carries `serving.kserve.io/server-type: torchserve`,
so KServe's controller gives it TorchServe's defaults (protocol, `TS_SERVICE_ENVELOPE`).

KServe's documented sample config fails on TorchServe 0.12 as written (token auth is on by
default there: `:predict` answers 400 InvalidKeyException), so the config turns it off:
the bundle serves as written on TorchServe 0.12 and on our engine.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from .. import protos
from .bundle import Bundle
from .image import DEFAULT_IMAGE, SERVING_KEYS, build_steps, write_image
from .layout import BundleWriter, archive_file_name, k8s_name
from .options import ExportOptions
from .properties import model_snapshot, properties_text
from .samples import sample_requests
from .snapshot import ModelSnapshot

MOUNT = "/mnt/models"
#: What the runtime declares: the engine serves KServe v2 over gRPC itself (OIP under its
#: standard name), where KServe's TorchServe image needs its kserve_wrapper for grpc-v2.
PROTOCOLS = ["v1", "v2", "grpc-v2"]
#: The gRPC listeners of a grpc-v2 bundle: TorchServe's default ports; inference on every
#: interface (the ISVC's h2c port), management on the pod's loopback like the REST one.
GRPC_KEYS: dict[str, object] = {
    "grpc_inference_address": "0.0.0.0",
    "grpc_inference_port": 7070,
    "grpc_management_address": "127.0.0.1",
    "grpc_management_port": 7071,
}
GRPC_PROTO = "grpc_predict_v2.proto"
RUNTIME_NAME = "jupyter-torchserve"
#: KServe's TorchServe runtime command line, run in the foreground (the container's process)
RUNTIME_ARGS = [
    "torchserve",
    "--start",
    "--foreground",
    f"--model-store={MOUNT}/model-store",
    f"--ts-config={MOUNT}/config/config.properties",
]


def config_properties(
    model: ModelSnapshot, model_store: str = f"{MOUNT}/model-store", grpc: bool = False
) -> str:
    keys: dict[str, object] = {
        **SERVING_KEYS,
        **(GRPC_KEYS if grpc else {}),
        "install_py_dep_per_model": any(v.requirements for v in model.versions),
        "job_queue_size": 100,
        "model_store": model_store,
        "model_snapshot": model_snapshot(model),
    }
    return properties_text(
        keys,
        f"KServe storage config for {model.name}, exported by jupyter_torchserve from\n"
        f"{model.source}. Served as written by TorchServe 0.12 and by jupyter_torchserve.",
    )


def inference_service(model: ModelSnapshot, opts: ExportOptions) -> dict[str, Any]:
    limits: dict[str, str] = {"cpu": "1", "memory": "2Gi"}
    if opts.gpu:
        limits["nvidia.com/gpu"] = str(opts.gpu)
    predictor: dict[str, Any] = {}
    if opts.min_replicas is not None:
        predictor["minReplicas"] = opts.min_replicas
    if opts.max_replicas is not None:
        predictor["maxReplicas"] = opts.max_replicas
    predictor["model"] = {
        "modelFormat": {"name": "pytorch"},
        "runtime": RUNTIME_NAME,
        "protocolVersion": opts.protocol,
        "storageUri": opts.storage_uri or f"pvc://models/{k8s_name(model.name)}",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": limits},
    }
    if opts.protocol == "grpc-v2":  # KServe routes gRPC to the container port named h2c
        port = GRPC_KEYS["grpc_inference_port"]
        predictor["model"]["ports"] = [{"containerPort": port, "name": "h2c", "protocol": "TCP"}]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": k8s_name(model.name)},
        "spec": {"predictor": predictor},
    }


def serving_runtime(opts: ExportOptions) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {
            "name": RUNTIME_NAME,
            "annotations": {"serving.kserve.io/server-type": "torchserve"},
        },
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": "8082",
                "prometheus.kserve.io/path": "/metrics",
            },
            "supportedModelFormats": [
                {"name": "pytorch", "version": "1", "autoSelect": True, "priority": 1}
            ],
            "protocolVersions": list(PROTOCOLS),
            "containers": [
                {
                    "name": "kserve-container",
                    "image": opts.image or DEFAULT_IMAGE,
                    "args": list(RUNTIME_ARGS),
                    # read by TorchServe (enable_envvars_config); our engine serves both
                    # envelopes on their own routes and says it ignores this
                    "env": [
                        {"name": "TS_SERVICE_ENVELOPE", "value": "{{.Labels.serviceEnvelope}}"}
                    ],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ping", "port": 8080},
                        "periodSeconds": 5,
                    },
                    "securityContext": {
                        "runAsUser": 1000,
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi"},
                        "limits": {"cpu": "1", "memory": "2Gi"},
                    },
                }
            ],
        },
    }


def standard_proto() -> str:
    """KServe's v2 proto under its standard package, `inference`: ours is compiled under
    TorchServe's package (the engine serves both names), but grpcurl resolves the method
    the README calls, `inference.GRPCInferenceService/ModelInfer`, from this file."""
    text = (resources.files(protos) / "kserve" / "predict_v2.proto").read_text()
    ours = "package org.pytorch.serve.grpc.openinference;"
    if ours not in text:
        raise AssertionError("protos/kserve/predict_v2.proto changed its package line")
    return text.replace(ours, "package inference;", 1)


def write(model: ModelSnapshot, writer: BundleWriter, opts: ExportOptions) -> Bundle:
    for v in model.versions:
        writer.copy(v.archive, f"model-store/{archive_file_name(model, v)}")
    grpc = opts.protocol == "grpc-v2"
    writer.text("config/config.properties", config_properties(model, grpc=grpc))
    isvc = inference_service(model, opts)
    writer.yaml(
        "inferenceservice.yaml",
        isvc,
        header=f"KServe InferenceService for {model.name} (protocol {opts.protocol}).\n"
        "storageUri must point at a copy of this bundle's config/ and model-store/.",
    )
    writer.yaml(
        "servingruntime.yaml",
        serving_runtime(opts),
        header="Runs jupyter_torchserve's image with KServe's TorchServe command line.\n"
        "For every namespace: change kind to ClusterServingRuntime.",
    )
    write_image(writer)
    samples = sample_requests(model, grpc=grpc)
    for file_name, body in samples.items():
        writer.text(file_name, json.dumps(body) + "\n")
    if grpc:  # what grpcurl needs to call ModelInfer (the cluster has no reflection)
        writer.text(GRPC_PROTO, standard_proto())
    image = opts.image or DEFAULT_IMAGE
    name = isvc["metadata"]["name"]
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    steps = [
        build_steps(image),
        (
            f"copy config/ and model-store/ to the storage at {uri}",
            "# e.g. for s3://BUCKET/PATH: aws s3 cp --recursive config s3://BUCKET/PATH/config"
            " && aws s3 cp --recursive model-store s3://BUCKET/PATH/model-store",
        ),
        (
            "apply the runtime and the InferenceService",
            "kubectl apply -f servingruntime.yaml -f inferenceservice.yaml\n"
            f"kubectl wait --for=condition=Ready inferenceservice/{name} --timeout=300s",
        ),
        ("call it", _curl(model.name, name, opts.protocol, bool(samples))),
    ]
    notes = [
        "the config turns token authorization off (TorchServe 0.12 would refuse :predict "
        "with InvalidKeyException otherwise); management listens on the pod's loopback only",
    ]
    if grpc:
        notes.append(
            "grpc-v2 is served by this runtime's engine (standard inference.GRPCInferenceService"
            " on 7070); TorchServe 0.12 on its own serves OIP only under its own package name"
        )
    if image == DEFAULT_IMAGE:
        notes.append(f"servingruntime.yaml names the image {image}: set your registry's")
    return writer.bundle("kserve", model, steps, notes)


def _curl(model_name: str, isvc: str, protocol: str, samples: bool) -> str:
    """KServe's documented call: through the ingress, with the service's Host header."""
    host = f"$(kubectl get inferenceservice {isvc} -o jsonpath='{{.status.url}}' | cut -d/ -f3)"
    # with the JSON content type: TorchServe 0.12 answers curl's default form type with 503
    head = (
        f"SERVICE_HOSTNAME={host}\n"
        'curl -H "Host: $SERVICE_HOSTNAME" -H "Content-Type: application/json" '
        "http://$INGRESS_HOST:$INGRESS_PORT"
    )
    body = f"{protocol}-request.json" if samples else "your-request.json"
    if protocol == "grpc-v2":
        return (
            f"SERVICE_HOSTNAME={host}\n"
            f"grpcurl -plaintext -proto {GRPC_PROTO} -authority $SERVICE_HOSTNAME -d @ "
            "$INGRESS_HOST:$INGRESS_PORT inference.GRPCInferenceService/ModelInfer "
            f"< {body}"
        )
    if protocol == "v2":
        return head + f"/v2/models/{model_name}/infer -d @{body}"
    return head + f"/v1/models/{model_name}:predict -d @{body}"
