"""Every bundle's files from a `.mar` (fast: no process), checked with the engines' own
schemas where they exist: KServe's SDK models for the InferenceService and ServingRuntime,
Ray Serve's own config schema for serve_config.yaml and the RayService's serveConfigV2, and
yaml.safe_load plus the required fields for T9k and KubeRay. One slow test exports from a
running engine: what is served (versions, default, batch settings, workers) is what leaves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _engine_helpers import linear_mar, running_engine
from _export_helpers import kserve_load

from jupyter_torchserve.archive.reader import read_manifest
from jupyter_torchserve.client import EngineError
from jupyter_torchserve.config import parse_model_snapshot, parse_properties
from jupyter_torchserve.export import Bundle, ExportError, export


@pytest.fixture()
def mar(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    return linear_mar(store, "Lin_1", "1.0")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc-v2"])
def test_kserve_yaml_loads_with_the_kserve_sdk(protocol: str, mar: Path, tmp_path: Path) -> None:
    b = export(
        mar,
        to="kserve",
        out=tmp_path / "b",
        protocol=protocol,
        gpu=2,
        min_replicas=1,
        max_replicas=4,
        storage_uri="s3://bucket/lin",
    )
    isvc = kserve_load(load(b.out / "inferenceservice.yaml"), "V1beta1InferenceService")
    assert isvc.metadata.name == "lin-1"  # a DNS-1035 label made from Lin_1
    predictor = isvc.spec.predictor
    assert (predictor.min_replicas, predictor.max_replicas) == (1, 4)
    model = predictor.model
    assert model.protocol_version == protocol and model.runtime == "jupyter-torchserve"
    assert model.model_format.name == "pytorch" and model.storage_uri == "s3://bucket/lin"
    assert model.resources.limits["nvidia.com/gpu"] == "2"
    runtime = kserve_load(load(b.out / "servingruntime.yaml"), "V1alpha1ServingRuntime")
    assert runtime.metadata.annotations["serving.kserve.io/server-type"] == "torchserve"
    assert runtime.spec.protocol_versions == ["v1", "v2", "grpc-v2"]
    assert runtime.spec.annotations["prometheus.kserve.io/port"] == "8082"
    (container,) = runtime.spec.containers
    assert container.args[:2] == ["torchserve", "--start"]
    assert "--ts-config=/mnt/models/config/config.properties" in container.args
    # the storage layout, with the model snapshot the engines load at start
    props = parse_properties((b.out / "config/config.properties").read_text())
    snap = parse_model_snapshot(props["model_snapshot"])
    assert snap["models"]["Lin_1"]["1.0"]["marName"] == "Lin_1.mar"
    assert (b.out / "model-store" / "Lin_1.mar").read_bytes() == mar.read_bytes()


def test_t9k_yaml_has_the_fields_t9k_requires(mar: Path, tmp_path: Path) -> None:
    b = export(mar, to="t9k", out=tmp_path / "b", storage_uri="s3://models/lin/", max_replicas=2)
    service = load(b.out / "mlservice.yaml")
    assert service["apiVersion"] == "tensorstack.dev/v1beta1" and service["kind"] == "MLService"
    names = [r["name"] for r in service["spec"]["releases"]]
    assert service["spec"]["default"] in names
    predictor = service["spec"]["releases"][0]["predictor"]
    assert predictor["minReplicas"] == 1 and predictor["maxReplicas"] == 2
    model = predictor["model"]
    assert model["modelUri"] == "s3://models/lin/" and model["runtime"] == "jupyter-torchserve"
    assert model["parameters"] == {"MODEL_PATH": "Lin_1=Lin_1.mar"}
    assert predictor["storage"]["s3Storage"]["secretName"]
    runtime = load(b.out / "mlserviceruntime.yaml")
    assert runtime["kind"] == "MLServiceRuntime" and runtime["spec"]["enabled"] is True
    (container,) = runtime["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "user-container"
    models_args = [a for a in container["args"] if a.startswith("--models")]
    assert models_args == ["--models={{if .MODEL_PATH}}{{.MODEL_PATH}}{{else}}all{{end}}"]
    readme = (b.out / "README.md").read_text()
    assert "Fields not checked against a T9k cluster" in readme and "`enable`" in readme


def test_ray_configs_load_with_ray_serves_schema(mar: Path, tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    b = export(mar, to="ray", out=tmp_path / "b", min_replicas=1, max_replicas=3, gpu=1)
    config = ServeDeploySchema.model_validate(load(b.out / "serve_config.yaml"))
    (app,) = config.applications
    assert app.import_path == "jupyter_torchserve.ray_serve:app"
    assert app.args["archive"] == str((b.out / "model-store" / "Lin_1.mar").resolve())
    assert (app.args["batch_size"], app.args["max_batch_delay"]) == (1, 100)
    (dep,) = app.deployments
    assert dep.autoscaling_config == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2,
    }
    assert dep.ray_actor_options.num_gpus == 1
    service = load(b.out / "rayservice.yaml")
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    cluster = service["spec"]["rayClusterConfig"]
    assert (
        cluster["rayVersion"] == "2.60.0"
        and cluster["headGroupSpec"]["template"]["spec"]["containers"]
    )
    assert (
        cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"][
            "nvidia.com/gpu"
        ]
        == "1"
    )
    v2 = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    assert v2.applications[0].args["archive"] == "/mnt/models/Lin_1.mar"
    # equal min and max: a fixed replica count
    b = export(mar, to="ray", out=tmp_path / "c", min_replicas=2, max_replicas=2)
    (dep,) = (
        ServeDeploySchema.model_validate(load(b.out / "serve_config.yaml"))
        .applications[0]
        .deployments
    )
    assert dep.num_replicas == 2


def test_ray_bundle_without_ray_says_how_to_install_it(
    mar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_torchserve.export import ray_cluster

    monkeypatch.setattr(ray_cluster, "ray_installed", lambda: False)
    b = export(mar, to="ray", out=tmp_path / "b", run=True)
    assert (b.out / "serve_config.yaml").exists() and b.url is None
    assert any("pip install 'jupyter_torchserve[ray]'" in n for n in b.notes)
    assert "pip install 'jupyter_torchserve[ray]'" in (b.out / "README.md").read_text()


@pytest.mark.slow  # runs Ray's `serve` command
def test_a_ray_address_nobody_answers_is_said_first(mar: Path, tmp_path: Path) -> None:
    from _ports import free_port

    from jupyter_torchserve.export.ray_cluster import SERVE_TAIL_LINES, RayError

    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RayError) as e:
        export(mar, to="ray", out=tmp_path / "b", run=True, ray_address=address)
    first, *rest = str(e.value).splitlines()
    assert first.endswith(f"ConnectionError: Failed to connect to Ray at address: {address}.")
    assert len(rest) <= SERVE_TAIL_LINES  # not serve's whole chained traceback
    assert (tmp_path / "b" / "serve_config.yaml").exists()  # the bundle stays, to run later


def test_the_result_lists_files_and_next_commands(mar: Path, tmp_path: Path) -> None:
    b = export(mar, to="torchserve", out=tmp_path / "b")
    assert isinstance(b, Bundle) and all(p.exists() for p in b.paths())
    text, html = str(b), b._repr_html_()
    for f in ("config.properties", "model-store/Lin_1.mar", "README.md"):
        assert f in text and f in html
    assert (
        "torchserve --start --ncs --model-store model-store --ts-config config.properties" in text
    )
    assert "<pre>" in html and "&lt;" not in text


def test_bad_exports_are_refused_clearly(mar: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="to must be one of kserve, t9k, ray, torchserve"):
        export(mar, to="sagemaker", out=tmp_path / "a")
    with pytest.raises(ExportError, match="protocol must be one of v1, v2"):
        export(mar, protocol="grpc", out=tmp_path / "a")
    with pytest.raises(ExportError, match=r"max_replicas \(1\) is less than min_replicas \(2\)"):
        export(mar, min_replicas=2, max_replicas=1, out=tmp_path / "a")
    with pytest.raises(ExportError, match="run=True deploys Ray bundles only"):
        export(mar, to="kserve", run=True, out=tmp_path / "a")
    with pytest.raises(ExportError, match="holds version 1.0 of Lin_1, not 2.0"):
        export(mar, version="2.0", out=tmp_path / "a")
    with pytest.raises(ExportError, match="serve_port must be a TCP port"):
        export(mar, to="ray", serve_port=70000, out=tmp_path / "a")
    for image in ("bad image name!", "Upper/Case:tag", "repo:tag:tag", "repo@sha256:abc"):
        with pytest.raises(ExportError, match=f"image {image!r} is not an image reference"):
            export(mar, image=image, out=tmp_path / "a")
    with pytest.raises(ExportError, match=r"Lin_1-1.0.mar is a file, not a folder for the bundle"):
        export(mar, out=mar)
    assert not (tmp_path / "a").exists()  # refused before anything was written
    digest = "sha256:" + "0" * 64
    for image in ("jts", "localhost:5000/team/jts:0.1.0", f"ghcr.io/a_b/c-d.e@{digest}"):
        export(mar, image=image, out=tmp_path / "ok", force=True)
    export(mar, out=tmp_path / "a")
    with pytest.raises(ExportError, match="is not empty; pass force=True"):
        export(mar, out=tmp_path / "a")
    export(mar, out=tmp_path / "a", force=True)
    not_mar = tmp_path / "x.mar"
    not_mar.write_text("no zip")
    with pytest.raises(Exception, match="x.mar"):
        export(not_mar, out=tmp_path / "b")
    with pytest.raises(ExportError, match="gone.mar does not exist"):
        export(tmp_path / "gone.mar", out=tmp_path / "b")


@pytest.mark.slow
def test_export_of_a_served_model_carries_what_is_served(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    linear_mar(store, "lin", "1.0", seed=1)
    linear_mar(store, "lin", "2.0", seed=2)
    with running_engine(tmp_path, model_store=str(store)) as (_, client):
        client.register("lin-1.0.mar", batch_size=4, max_batch_delay=30, initial_workers=1)
        client.register("lin-2.0.mar", initial_workers=1)
        client.set_default("lin", "2.0")
        client.scale("lin", 2, 3, version="2.0")
        b = export("lin", to="kserve", out=tmp_path / "k", client=client)
        t = export("lin", to="t9k", out=tmp_path / "t", client=client)
        one = export("lin", to="kserve", out=tmp_path / "one", client=client, version="1.0")
        # a canary on the engine does not travel, and the bundle says so, not quietly
        client.start_canary("lin", "1.0", 25)
        split = export("lin", to="ray", out=tmp_path / "split", client=client)
        alone = export("lin", to="ray", out=tmp_path / "alone", client=client, version="1.0")
        # the engine's own 404, which the CLI, the magic and the sidebar pass on as it is
        with pytest.raises(EngineError, match="404 ModelNotFoundException"):
            export("nope", to="kserve", out=tmp_path / "nope", client=client)
        assert not (tmp_path / "nope").exists()  # nothing written for it
    props = parse_properties((b.out / "config/config.properties").read_text())
    versions = parse_model_snapshot(props["model_snapshot"])["models"]["lin"]
    assert versions["1.0"] == {
        "defaultVersion": False,
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 4,
        "maxBatchDelay": 30,
        "responseTimeout": 120,
        "marName": "lin-1.0.mar",
    }
    assert versions["2.0"]["defaultVersion"] is True
    assert (versions["2.0"]["minWorkers"], versions["2.0"]["maxWorkers"]) == (2, 3)
    assert (b.out / "model-store/lin-1.0.mar").read_bytes() == (store / "lin-1.0.mar").read_bytes()
    service = load(t.out / "mlservice.yaml")
    assert service["spec"]["default"] == "v2-0"
    assert [r["name"] for r in service["spec"]["releases"]] == ["v2-0", "v1-0"]
    single = parse_model_snapshot(
        parse_properties((one.out / "config/config.properties").read_text())["model_snapshot"]
    )
    assert (
        list(single["models"]["lin"]) == ["1.0"]
        and single["models"]["lin"]["1.0"]["marName"] == "lin.mar"
    )
    assert json.loads(json.dumps(single))["models"]["lin"]["1.0"]["defaultVersion"] is True
    assert not [n for n in b.notes + t.notes if "served with handler" in n], b.notes + t.notes
    assert not [n for n in b.notes + t.notes + alone.notes if "canary" in n]
    said = "version 1.0 takes 25% of the default route as a canary on the engine"
    (note,) = [n for n in split.notes if said in n]
    assert "to 2.0, the default" in note and "canaryTrafficPercent: 25" in note
    assert said in (split.out / "README.md").read_text()


@pytest.mark.slow
def test_export_says_when_registration_named_a_handler_the_archive_does_not_run(
    tmp_path: Path,
) -> None:
    """TorchServe's model_snapshot (KServe, T9k) and the Ray app take the handler from the
    archive: a handler given at registration does not leave with it, and the bundle says so
    for that version alone (`tensor` is the archive's own `jts_tensor.py`: no note)."""
    store = tmp_path / "store"
    store.mkdir()
    linear_mar(store, "lin", "1.0", seed=1)
    linear_mar(store, "lin", "2.0", seed=2)
    with running_engine(tmp_path, model_store=str(store)) as (_, client):
        client.register("lin-1.0.mar", handler="image_classifier", initial_workers=0)
        client.register("lin-2.0.mar", handler="tensor", initial_workers=0)
        handlers = {d["modelVersion"]: d["handler"] for d in client.describe("lin", "all")}
        b = export("lin", to="kserve", out=tmp_path / "k", client=client)
        two = export("lin", to="kserve", out=tmp_path / "two", client=client, version="2.0")
    assert handlers == {"1.0": "image_classifier", "2.0": "tensor"}
    archived = read_manifest(store / "lin-1.0.mar")["model"]["handler"]
    want = (
        "version 1.0 is served with handler 'image_classifier', named when it was registered; "
        f"the exported archive runs its own handler {archived!r}. To export what is served, "
        "archive the model again with handler='image_classifier'."
    )
    assert [n for n in b.notes if "served with handler" in n] == [want]
    assert want in (b.out / "README.md").read_text()
    assert not [n for n in two.notes if "served with handler" in n], two.notes


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_torchserve_bundles_call_line_runs_as_printed(tmp_path: Path) -> None:
    """A tensor model's bundle README says `curl ... -d @predictions-request.json` and ships
    that file (the archive's own sample): run from the bundle folder on the engine its
    README starts, the line answers what the kernel model answers for that sample."""
    import shlex
    import subprocess

    import torch
    from _export_helpers import Runtime, port_env, wait_ready
    from _ports import free_port

    from jupyter_torchserve.archive import archive

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    example = torch.randn(2, 4)
    mar = archive(
        model, name="lin", example_inputs=example, export_path=tmp_path, format="torchscript"
    )
    out = tmp_path / "bundle"
    export(mar.path, to="torchserve", out=out)
    readme = (out / "README.md").read_text()
    (line,) = [x.strip() for x in readme.splitlines() if x.strip().startswith("curl ")]
    assert "-d @predictions-request.json" in line and (out / "predictions-request.json").exists()

    ports = [free_port() for _ in range(5)]
    args = shlex.split(
        "torchserve --start --ncs --model-store model-store --ts-config config.properties --foreground"
    )
    with Runtime("ours", args, out, port_env(ports)) as runtime:
        try:
            wait_ready(f"http://127.0.0.1:{ports[1]}", "lin")
            call = line.replace("127.0.0.1:8080", f"127.0.0.1:{ports[0]}")
            got = subprocess.run(
                call, shell=True, cwd=out, capture_output=True, text=True, timeout=60
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{runtime.log()}") from None
    assert got.returncode == 0, got.stderr
    with torch.no_grad():
        want = model(example).tolist()
    answer = json.loads(got.stdout)
    assert torch.allclose(torch.tensor(answer), torch.tensor(want), atol=1e-5), (answer, want)
