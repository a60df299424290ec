"""Issue 15: the T9k bundle boots with its runtime's args as T9k renders them for a release
(`--models=mnist=mnist.mar`, one argument; the mount /var/lib/t9k/model remapped to a
temporary folder), on our engine and on TorchServe 0.12, and answers with the kernel's
answers. The image's defaults come from its working directory's config.properties, where
TorchServe looks when no --ts-config is given.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests
import yaml
from _export_helpers import (
    NotebookModel,
    Runtime,
    assert_top5,
    notebook_model,
    port_env,
    remap,
    wait_ready,
)
from _ports import free_port
from _torchserve_helpers import skip_reason

from jupyter_torchserve.export import export, t9k
from jupyter_torchserve.export.snapshot import from_archive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
TS_SKIP = skip_reason()


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> NotebookModel:
    return notebook_model(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def bundle(notebook: NotebookModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "mnist-t9k"
    export(notebook.archive, to="t9k", out=out)
    return out


def rendered_args(bundle: Path, mount: Path) -> list[str]:
    """The runtime container's args with the release's MODEL_PATH filled in, as T9k does."""
    runtime = yaml.safe_load((bundle / "mlserviceruntime.yaml").read_text())
    service = yaml.safe_load((bundle / "mlservice.yaml").read_text())
    (container,) = runtime["spec"]["template"]["spec"]["containers"]
    assert container["args"] == t9k.RUNTIME_ARGS
    (release,) = service["spec"]["releases"]
    model_path = release["predictor"]["model"]["parameters"]["MODEL_PATH"]
    assert model_path == "mnist=mnist.mar"
    args = t9k.render_args(model_path)
    assert "--models=mnist=mnist.mar" in args  # one token, which TorchServe's parser reads
    return remap(args, t9k.MOUNT, mount)


def boot(which: str, bundle: Path, root: Path) -> tuple[Runtime, list[int]]:
    mount = root / "var" / "lib" / "t9k" / "model"
    shutil.copytree(bundle / "model", mount)
    work = root / "work"
    work.mkdir()
    shutil.copy(bundle / "image" / "config.properties", work / "config.properties")
    ports = [free_port() for _ in range(5)]
    return Runtime(which, rendered_args(bundle, mount), work, port_env(ports)), ports


def ask(ports: list[int], notebook: NotebookModel, what: str) -> None:
    for digit in (1, 4):
        r = requests.put(
            f"http://127.0.0.1:{ports[0]}/predictions/mnist", data=notebook.png(digit), timeout=120
        )
        assert r.status_code == 200, f"{what}: {r.status_code} {r.text[:500]}"
        assert_top5(r.json(), notebook.top5(digit), f"{what}, digit {digit}")


def test_our_engine_boots_with_the_rendered_args(
    bundle: Path, notebook: NotebookModel, tmp_path: Path
) -> None:
    runtime, ports = boot("ours", bundle, tmp_path)
    with runtime:
        try:
            wait_ready(f"http://127.0.0.1:{ports[1]}", "mnist")
            ask(ports, notebook, "ours")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{runtime.log()}") from None


@pytest.mark.torchserve
@pytest.mark.skipif(TS_SKIP is not None, reason=TS_SKIP or "")
def test_torchserve_0_12_boots_with_the_rendered_args(
    bundle: Path, notebook: NotebookModel, tmp_path: Path
) -> None:
    runtime, ports = boot("torchserve", bundle, tmp_path)
    with runtime:
        try:
            wait_ready(f"http://127.0.0.1:{ports[1]}", "mnist")
            ask(ports, notebook, "TorchServe 0.12")
            # T9k's tutorial call: a raw PNG PUT to the v1 route, no envelope configured
            r = requests.put(
                f"http://127.0.0.1:{ports[0]}/v1/models/mnist:predict",
                data=notebook.png(4),
                timeout=120,
            )
            assert r.status_code == 200, r.text[:500]
            assert_top5(r.json(), notebook.top5(4), "TorchServe, T9k's curl -T call")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{runtime.log()}") from None


def test_each_version_is_a_release_and_the_default_is_default(notebook: NotebookModel) -> None:
    from dataclasses import replace

    from jupyter_torchserve.export.options import ExportOptions

    one = from_archive(notebook.archive)
    v1 = one.versions[0]
    v2 = replace(v1, version="2.0", default=False)
    two = replace(one, versions=[v1, v2])
    service = t9k.ml_service(two, ExportOptions(gpu=1, min_replicas=0, max_replicas=3))
    releases = {r["name"]: r for r in service["spec"]["releases"]}
    assert service["spec"]["default"] == "v1-0" and set(releases) == {"v1-0", "v2-0"}
    paths = {n: r["predictor"]["model"]["parameters"]["MODEL_PATH"] for n, r in releases.items()}
    assert paths == {"v1-0": "mnist=mnist-1.0.mar", "v2-0": "mnist=mnist-2.0.mar"}
    predictor = releases["v2-0"]["predictor"]
    assert predictor["minReplicas"] == 0 and predictor["maxReplicas"] == 3
    assert predictor["resources"]["limits"]["nvidia.com/gpu"] == "1"
