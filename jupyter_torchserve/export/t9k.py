"""`to="t9k"`: a T9k MLService with one release per exported version, and the runtime that
starts our engine's image with T9k's TorchServe command line.

T9k mounts `modelUri` at /var/lib/t9k/model and fills the runtime's Go template from the
release's `parameters`; `--models={{...}}` is ONE argument (`--models {{...}}`, as the
manual writes it, arrives as one argument that TorchServe's parser does not read).
Field names follow T9k's public API reference (t9k/user-manuals, MLService API reference and
the MLService module page); the bundle's README lists the ones that could not be checked.
"""

from __future__ import annotations

from typing import Any

from .bundle import Bundle
from .image import DEFAULT_IMAGE, build_steps, write_image
from .layout import BundleWriter, archive_file_name, k8s_name
from .options import ExportOptions
from .samples import predictions_call
from .snapshot import ModelSnapshot, VersionSnapshot

MOUNT = "/var/lib/t9k/model"
RUNTIME_NAME = "jupyter-torchserve"
MODELS_ARG = "--models={{if .MODEL_PATH}}{{.MODEL_PATH}}{{else}}all{{end}}"
RUNTIME_ARGS = ["torchserve", "--start", "--foreground", f"--model-store={MOUNT}", MODELS_ARG]

#: What the manuals do not settle, said in the README (field, what was written, why unsure).
UNCHECKED = [
    (
        "MLServiceRuntime spec.enabled",
        "enabled: true",
        "the API reference says `enabled`; the MLService page's example writes `enable`",
    ),
    (
        "release predictor minReplicas/maxReplicas",
        "on predictor",
        "the API reference inlines DeploymentSpec into PredictorSpec; one example of the "
        "MLService page puts them on the release instead",
    ),
    (
        "model.modelFormat",
        "modelFormat: {name: pytorch}",
        "in the newer API reference and the examples, missing from the older reference",
    ),
    (
        "predictor.resources with nvidia.com/gpu",
        "resources.limits",
        "documented for cpu and memory; a GPU limit is the Kubernetes resource name",
    ),
]


def release_name(version: VersionSnapshot) -> str:
    return k8s_name("v" + version.version)


def render_args(model_path: str | None) -> list[str]:
    """The runtime's args as T9k renders them for a release (the Go template, filled in)."""
    value = model_path if model_path else "all"
    return [arg if arg != MODELS_ARG else f"--models={value}" for arg in RUNTIME_ARGS]


def model_path(model: ModelSnapshot, version: VersionSnapshot) -> str:
    """A release's `MODEL_PATH` parameter: `name=file` in the mounted model folder."""
    return f"{model.name}={archive_file_name(model, version)}"


def ml_service(model: ModelSnapshot, opts: ExportOptions) -> dict[str, Any]:
    uri = opts.storage_uri or f"pvc://models/{k8s_name(model.name)}/"
    releases = []
    for v in model.versions:
        predictor: dict[str, Any] = {
            "minReplicas": 1 if opts.min_replicas is None else opts.min_replicas,
        }
        if opts.max_replicas is not None:
            predictor["maxReplicas"] = opts.max_replicas
        predictor["model"] = {
            "runtime": RUNTIME_NAME,
            "modelFormat": {"name": "pytorch"},
            "modelUri": uri,
            "parameters": {"MODEL_PATH": model_path(model, v)},
        }
        if uri.startswith("s3://"):
            predictor["storage"] = {"s3Storage": {"secretName": "s3-model-secret"}}
        limits: dict[str, str] = {"cpu": "1", "memory": "2Gi"}
        if opts.gpu:
            limits["nvidia.com/gpu"] = str(opts.gpu)
        predictor["resources"] = {"limits": limits}
        releases.append({"name": release_name(v), "predictor": predictor})
    return {
        "apiVersion": "tensorstack.dev/v1beta1",
        "kind": "MLService",
        "metadata": {"name": k8s_name(model.name)},
        "spec": {"default": release_name(model.default), "releases": releases},
    }


def ml_service_runtime(opts: ExportOptions) -> dict[str, Any]:
    return {
        "apiVersion": "tensorstack.dev/v1beta1",
        "kind": "MLServiceRuntime",
        "metadata": {"name": RUNTIME_NAME},
        "spec": {
            "enabled": True,
            "supportedModelFormats": [{"name": "pytorch", "priority": 1}],
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "user-container",
                            "image": opts.image or DEFAULT_IMAGE,
                            "args": list(RUNTIME_ARGS),
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
                        }
                    ]
                }
            },
        },
    }


def write(model: ModelSnapshot, writer: BundleWriter, opts: ExportOptions) -> Bundle:
    for v in model.versions:
        writer.copy(v.archive, f"model/{archive_file_name(model, v)}")
    service = ml_service(model, opts)
    writer.yaml(
        "mlservice.yaml",
        service,
        header=f"T9k MLService for {model.name}: one release per exported version.\n"
        "modelUri must point at a copy of this bundle's model/ folder.",
    )
    writer.yaml(
        "mlserviceruntime.yaml",
        ml_service_runtime(opts),
        header="Starts jupyter_torchserve's image with T9k's TorchServe command line;\n"
        "--models=... is one argument. For every project: kind ClusterMLServiceRuntime.",
    )
    write_image(writer)
    image = opts.image or DEFAULT_IMAGE
    name = service["metadata"]["name"]
    uri = service["spec"]["releases"][0]["predictor"]["model"]["modelUri"]
    steps = [
        build_steps(image),
        (f"copy model/ to {uri}", "# e.g. kubectl cp model/. <a pod mounting the PVC>:<path>/"),
        (
            "apply the runtime and the MLService",
            "kubectl apply -f mlserviceruntime.yaml -f mlservice.yaml",
        ),
        (
            "call it",
            f"URL=$(kubectl get mlservice {name} -o jsonpath='{{.status.address.url}}')\n"
            + predictions_call(model, writer, f"$URL/predictions/{model.name}"),
        ),
    ]
    notes = ["no T9k cluster was available: README.md lists the fields the manuals leave open"]
    return writer.bundle("t9k", model, steps, notes)
