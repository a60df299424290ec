"""`to="ray"`: a Ray Serve application for the archive, for `serve run` / `serve deploy`
(`serve_config.yaml`) and KubeRay (`rayservice.yaml`), and `run=True` to deploy it.

The application is `jupyter_torchserve.ray_serve:app` (this package, installed where Ray
runs) with the archive's absolute path as its argument. One exported version is served: the
default one, or the one asked for. Replicas follow the served workers: `num_replicas` when
min == max, else `autoscaling_config`; `--min-replicas/--max-replicas` override them.
"""

from __future__ import annotations

from typing import Any

from .._version import __version__
from .bundle import Bundle
from .layout import BundleWriter, archive_file_name, k8s_name
from .options import ExportOptions
from .samples import predictions_call
from .snapshot import ModelSnapshot, VersionSnapshot

RAY_VERSION = "2.60.0"
IMPORT_PATH = "jupyter_torchserve.ray_serve:app"
KUBERAY_MOUNT = "/mnt/models"
INSTALL_HINT = "pip install 'jupyter_torchserve[ray]'"


def replicas(version: VersionSnapshot, opts: ExportOptions) -> tuple[int, int]:
    """(min, max) replicas: the served workers, unless the export asks for others."""
    lo = version.min_workers if opts.min_replicas is None else opts.min_replicas
    hi = max(lo, version.max_workers if opts.max_replicas is None else opts.max_replicas)
    if hi == lo:
        return max(1, lo), max(1, lo)
    return lo, hi


def application(
    model: ModelSnapshot, version: VersionSnapshot, archive: str, opts: ExportOptions
) -> dict[str, Any]:
    lo, hi = replicas(version, opts)
    deployment: dict[str, Any] = {"name": "TorchServeModel"}
    if lo == hi:
        deployment["num_replicas"] = lo
    else:
        deployment["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "target_ongoing_requests": max(2, version.batch_size),
        }
    deployment["max_ongoing_requests"] = max(8, 2 * version.batch_size)
    deployment["ray_actor_options"] = (
        {"num_cpus": 1, "num_gpus": opts.gpu} if opts.gpu else {"num_cpus": 1}
    )
    return {
        "name": k8s_name(model.name),
        "route_prefix": "/",
        "import_path": IMPORT_PATH,
        "args": {
            "archive": archive,
            "name": model.name,
            "batch_size": version.batch_size,
            "max_batch_delay": version.max_batch_delay,
        },
        "deployments": [deployment],
    }


def serve_config(app: dict[str, Any], port: int) -> dict[str, Any]:
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [app],
    }


def ray_service(
    model: ModelSnapshot, app: dict[str, Any], opts: ExportOptions, image: str
) -> dict[str, Any]:
    import yaml

    serve_v2 = {"applications": [app]}
    mounts = [{"name": "models", "mountPath": KUBERAY_MOUNT}]
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]
    worker_limits: dict[str, str] = {"cpu": "2", "memory": "4Gi"}
    if opts.gpu:
        worker_limits["nvidia.com/gpu"] = str(opts.gpu)
    lo, hi = replicas(next(v for v in model.versions), opts)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": k8s_name(model.name)},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_v2, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    "image": image,
                                    "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
                                    "volumeMounts": mounts,
                                }
                            ],
                            "volumes": volumes,
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu" if opts.gpu else "cpu",
                        "replicas": max(1, lo),
                        "minReplicas": max(1, lo),
                        "maxReplicas": max(1, hi),
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "ray-worker",
                                        "image": image,
                                        "resources": {"limits": worker_limits},
                                        "volumeMounts": mounts,
                                    }
                                ],
                                "volumes": volumes,
                            }
                        },
                    }
                ],
            },
        },
    }


def dockerfile() -> str:
    from importlib.metadata import version

    torch_version = version("torch").split("+")[0]
    return f"""\
# Ray image with jupyter_torchserve: KubeRay's head and workers import
# {IMPORT_PATH} from it. CPU build; for GPUs start FROM rayproject/ray:{RAY_VERSION}-py311-gpu
# and install torch from the matching CUDA index.
FROM rayproject/ray:{RAY_VERSION}-py311-cpu
ARG TORCH_SPEC="torch=={torch_version}"
ARG JTS_SPEC="jupyter_torchserve[ray]=={__version__}"
COPY wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "$TORCH_SPEC" \\
    && pip install --no-cache-dir --find-links /tmp/wheels "$JTS_SPEC"
"""


def write(
    model: ModelSnapshot, writer: BundleWriter, opts: ExportOptions, port: int = 8000
) -> tuple[Bundle, dict[str, Any]]:
    version = model.default
    name = archive_file_name(_one(model, version), version)
    local = writer.copy(version.archive, f"model-store/{name}")
    app = application(model, version, str(local.resolve()), opts)
    writer.yaml(
        "serve_config.yaml",
        serve_config(app, port),
        header=f"Ray Serve config for {model.name} {version.version}: serve run / serve deploy.\n"
        "The archive path is this machine's; on a cluster use a path every node mounts.",
    )
    image = opts.image or f"jupyter-torchserve-ray:{__version__}"
    cluster_app = application(model, version, f"{KUBERAY_MOUNT}/{name}", opts)
    writer.yaml(
        "rayservice.yaml",
        ray_service(model, cluster_app, opts, image),
        header=f"KubeRay RayService for {model.name}: a sketch of the cluster; the PVC\n"
        f"'models' must hold {name} at its root.",
    )
    writer.text("image/Dockerfile", dockerfile())
    writer.text(
        "image/wheels/README.md",
        "Put a jupyter_torchserve wheel here if it is not on your package index.\n",
    )
    steps = [
        ("run it on this machine (Ray installed)", "serve run serve_config.yaml"),
        (
            "or deploy it to a running Ray cluster",
            "serve deploy serve_config.yaml --address http://127.0.0.1:8265",
        ),
        ("see the replicas", "serve status"),
        (
            "call it",
            predictions_call(model, writer, f"http://127.0.0.1:{port}/predictions/{model.name}"),
        ),
        (
            "on Kubernetes with KubeRay",
            f"docker build -t {image} image/ && docker push {image}\nkubectl apply -f rayservice.yaml",
        ),
    ]
    notes = []
    if len(model.versions) > 1:
        notes.append(f"Ray serves one version: {version.version} (pass version= for another)")
    bundle = writer.bundle("ray", model, steps, notes, versions=[version])
    return bundle, app


def _one(model: ModelSnapshot, version: VersionSnapshot) -> ModelSnapshot:
    return ModelSnapshot(model.name, [version], model.source, model.metadata)


def run(
    bundle: Bundle, app: dict[str, Any], cluster: Any, address: str | None, timeout: float = 300.0
) -> Bundle:
    """Deploy the bundle's serve_config.yaml with `serve deploy` on the cluster whose
    dashboard is at `address`, or on `cluster` (a LocalRayCluster, started here and kept
    running: `bundle.ray_cluster.stop()` ends it). Waits until every replica is RUNNING."""
    from .ray_cluster import serve_cli, wait_running

    if cluster is not None:
        cluster.start()
        address = cluster.dashboard_url
    assert address is not None
    try:
        serve_cli("deploy", str(bundle.out / "serve_config.yaml"), address=address)
        dep = app["deployments"][0]
        want = dep.get("num_replicas") or dep["autoscaling_config"]["min_replicas"]
        wait_running(address, app["name"], dep["name"], want, timeout)
    except BaseException:
        if cluster is not None:
            cluster.stop()
        raise
    port = _port(bundle)
    bundle.url = f"http://127.0.0.1:{port}/predictions/{bundle.model}"
    bundle.ray_cluster = cluster
    bundle.ray_address = address
    if cluster is not None:
        bundle.notes.append(
            f"the local Ray cluster (dashboard {address}) runs until bundle.ray_cluster.stop() "
            "or until this process exits"
        )
    return bundle


def _port(bundle: Bundle) -> int:
    import yaml

    return int(
        yaml.safe_load((bundle.out / "serve_config.yaml").read_text())["http_options"]["port"]
    )
