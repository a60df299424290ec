"""`export()`: a served model (or a `.mar`) -> the files a cluster engine needs to serve it
unchanged, with the next commands. The magic, the CLI verb and the sidebar call this."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .bundle import Bundle
from .layout import BundleWriter
from .options import TARGETS, ExportOptions
from .readme import readme
from .snapshot import EngineChoice, ExportError, take_snapshot


def export(
    source: str | os.PathLike[str],
    to: str = "kserve",
    version: str | None = None,
    out: str | os.PathLike[str] | None = None,
    protocol: str = "v1",
    gpu: int = 0,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    *,
    image: str | None = None,
    storage_uri: str | None = None,
    run: bool = False,
    ray_address: str | None = None,
    serve_port: int | None = None,
    client: EngineChoice = None,
    force: bool = False,
) -> Bundle:
    """Write the bundle for `to` into `out` (default `./NAME-TO`) and return what was written.

    `source` is a model the engine serves now (its versions, batch settings, workers and
    default version are read through the management API; `client` picks the engine, the
    newest running one by default; `client=api.client` is the one this kernel uses) or the
    path of a `.mar`. `version` limits the export to one version. `run=True` (Ray only)
    deploys it: on the cluster whose dashboard is at `ray_address`, or on a local loopback
    cluster started for it; `serve_port` is the port of Serve's HTTP proxy (8000, or a free
    one on a cluster started here).
    """
    if to not in TARGETS:
        raise ExportError(f"to must be one of {', '.join(TARGETS)}, not {to!r}")
    if run and to != "ray":
        raise ExportError("run=True deploys Ray bundles only; apply the YAML with kubectl")
    if serve_port is not None and not 0 < serve_port < 65536:
        raise ExportError(f"serve_port must be a TCP port (1-65535), not {serve_port}")
    opts = ExportOptions(protocol, gpu, min_replicas, max_replicas, image, storage_uri).check()
    model = take_snapshot(source, version, client)
    writer = BundleWriter(Path(out or f"{model.name}-{to}").expanduser().resolve(), force)
    if to == "ray":
        return _ray(model, writer, opts, run, ray_address, serve_port)
    from . import kserve, t9k, torchserve

    module = {"kserve": kserve, "t9k": t9k, "torchserve": torchserve}[to]
    bundle = module.write(model, writer, opts)
    writer.text("README.md", readme(bundle, _INTRO[to].format(source=model.source), _extra(to)))
    return bundle


def _ray(
    model: Any,
    writer: BundleWriter,
    opts: ExportOptions,
    run: bool,
    address: str | None,
    port: int | None,
) -> Bundle:
    from . import ray
    from .ray_cluster import LocalRayCluster, ray_installed

    installed = ray_installed()
    cluster = LocalRayCluster() if run and installed and address is None else None
    if port is None:
        port = cluster.ports.serve_http if cluster else 8000
    bundle, app = ray.write(model, writer, opts, port)
    if not installed:
        bundle.notes.append(f"Ray is not installed here; to run this bundle: {ray.INSTALL_HINT}")
    writer.text("README.md", readme(bundle, _INTRO["ray"].format(source=model.source)))
    if run and installed:
        ray.run(bundle, app, cluster, address)
    return bundle


_INTRO = {
    "kserve": (
        "Exported from {source}. KServe's TorchServe storage layout (`config/`, "
        "`model-store/`), an InferenceService, and a ServingRuntime that runs "
        "jupyter_torchserve's engine with KServe's TorchServe command line. The same "
        "storage also serves as written on TorchServe 0.12."
    ),
    "t9k": (
        "Exported from {source}. A T9k MLService (one release per version) and an "
        "MLServiceRuntime that starts jupyter_torchserve's engine with T9k's TorchServe "
        "command line (`--models=...` as one argument)."
    ),
    "ray": (
        "Exported from {source}. A Ray Serve application (`jupyter_torchserve.ray_serve:app`, "
        "which loads the archive with jupyter_torchserve's handler runtime) answering "
        "TorchServe's `/predictions/NAME`, KServe v1 `:predict` and v2 `/infer`."
    ),
    "torchserve": (
        "Exported from {source}. The archive and a config.properties whose model_snapshot "
        "keeps the served settings, for TorchServe's own command line on one machine."
    ),
}


def _extra(to: str) -> str:
    if to != "t9k":
        return ""
    from .t9k import UNCHECKED

    rows = "\n".join(f"| `{f}` | `{w}` | {why} |" for f, w, why in UNCHECKED)
    return (
        "## Fields not checked against a T9k cluster\n\n"
        "No T9k cluster was available; the YAML follows T9k's public manuals "
        "(t9k/user-manuals: the MLService API reference and the MLService module page). "
        "Where they disagree or say nothing:\n\n"
        "| field | written | why it is unsure |\n|---|---|---|\n" + rows
    )
