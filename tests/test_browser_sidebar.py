"""The sidebar in headless Chromium against a real `jupyter lab` (base URL + token) and engine.

Walks a user's path through every action of the sidebar, one lab, one engine and one browser
page for the module (the tests run in file order and build on each other):

1. see the deployed model; + worker and − worker change the count;
2. Copy curl: the clipboard holds curl commands that get a 200 (through Jupyter with the token,
   and straight to the engine);
3. Export: the KServe bundle written into the Jupyter root and listed; a second export into
   the same folder is refused in place; Ray's "run" offered only where the server has Ray;
4. Test tab: Send sample input and an uploaded PNG both predict the 7; an oversize file is
   refused before upload;
5. register a second version from the model store, make it the default: the badge moves and
   `/predictions/mnist` answers from it;
6. logs follow, metrics chart, engine details;
7. unregister a version, then the model, through the confirmation dialog;
8. stop the engine from the panel (it says not running and offers Start), start it again;
9. the dark theme.

Screenshots go to `test-artifacts/browser/sidebar/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _browser_helpers import (  # noqa: F401 - fixtures used by name
    BROWSER_MARKS,
    browser_engine,
    jp_asyncio_loop,
    jp_server_cleanup,
    jupyter_get,
    open_page,
    open_tab,
    shot,
    start_lab,
)
from _serverext_helpers import RealEngine, free_port

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def v2_archive(engine: RealEngine) -> str:
    """A version 2.0 of `mnist` in the model store, not registered, labelling digits in words."""
    from jupyter_torchserve.archive import archive
    from jupyter_torchserve.examples import mnist

    labels = engine.root / "words.json"
    labels.write_text(json.dumps({str(i): w for i, w in enumerate(WORDS)}))
    with tempfile.TemporaryDirectory() as tmp:
        result = archive(
            engine.model,
            "mnist",
            version="2.0",
            handler="image_classifier",
            example_inputs=_zeros(),
            extra_files={"index_to_name.json": str(labels)},
            handler_config={"mean": list(mnist.MEAN), "std": list(mnist.STD)},
            export_path=tmp,
            preflight=False,
        )
        name = "mnist-2.0.mar"
        shutil.move(str(getattr(result, "path", result)), Path(engine.info["model_store"]) / name)
    return name


def _zeros() -> Any:
    import torch

    return torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def lab(
    engine: RealEngine, v2_archive: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """`jupyter lab` on a free loopback port, under a base URL, with a token."""
    # where the panel's Start button starts an engine: free loopback ports, the same store
    start_options = {
        "inference_address": f"http://127.0.0.1:{free_port()}",
        "management_address": f"http://127.0.0.1:{free_port()}",
        "metrics_address": f"http://127.0.0.1:{free_port()}",
        "model_store": engine.info["model_store"],
        "state_dir": str(engine.root / "state-restarted"),
    }
    root = tmp_path_factory.mktemp("lab")
    settings = {"start_options": start_options}
    with start_lab(engine, root, base="/jts-base/", settings=settings) as lab:
        yield {**lab, "start_options": start_options}


@pytest.fixture(scope="module")
def page(lab: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    """One Chromium page on the lab for the whole module, the TorchServe panel open."""
    with open_page(lab, request.module, height=900, timeout_ms=30000, clipboard=True) as pg:
        yield pg


def version_row(page: Any, version: str) -> Any:
    return page.locator(f'.jp-TorchServe-model[data-model="mnist"] [data-version="{version}"]')


def test_settings_schema_is_served(lab: dict[str, Any]) -> None:
    """The labextension ships its settings schema: refresh interval, 2 s by default."""
    settings = jupyter_get(lab, "lab/api/settings/jupyter-torchserve:plugin")
    prop = settings["schema"]["properties"]["refreshInterval"]
    assert prop["default"] == 2
    assert prop["type"] == "number"


def test_model_and_workers(page: Any, lab: dict[str, Any]) -> None:
    # the model deployed from Python is there, with one ready worker, default version
    card = page.locator('.jp-TorchServe-model[data-model="mnist"]')
    card.wait_for()
    page.locator(".jp-TorchServe-status.jp-mod-running").wait_for()
    assert (
        version_row(page, "1.0").locator(".jp-TorchServe-worker-count").get_attribute("data-count")
        == "1"
    )
    assert card.locator(".jp-TorchServe-badge").inner_text() == "default"
    shot(page, "01-models")

    # + worker: the count changes to 2 (and two ready dots)
    page.get_by_label("Add a worker to mnist version 1.0").click()
    page.wait_for_selector('.jp-TorchServe-worker-count[data-count="2"]')
    page.locator(".jp-TorchServe-dot.jp-mod-ready >> nth=1").wait_for()
    shot(page, "02-added-worker")

    # − worker: back to 1, in the panel and at the engine
    page.get_by_label("Remove a worker from mnist version 1.0").click()
    page.wait_for_selector('.jp-TorchServe-worker-count[data-count="1"]')
    assert page.locator(".jp-TorchServe-dot").count() == 1
    (described,) = jupyter_get(lab, "torchserve/models/mnist")
    assert len(described["workers"]) == 1
    shot(page, "03-removed-worker")


def test_copy_curl(page: Any, engine: RealEngine, lab: dict[str, Any], tmp_path: Path) -> None:
    page.get_by_label("Copy a curl command for mnist").click()
    page.wait_for_function("async () => (await navigator.clipboard.readText()).includes('curl')")
    text = page.evaluate("() => navigator.clipboard.readText()")
    commands = [line for line in text.splitlines() if line.startswith("curl ")]
    # through Jupyter (base URL, token header) and straight to the engine
    assert len(commands) == 2, text
    assert f"{lab['url']}torchserve/predictions/mnist" in commands[0]
    assert f"{engine.info['inference_address']}/predictions/mnist" in commands[1]
    (tmp_path / "input.png").write_bytes(engine.png)
    for i, command in enumerate(commands):
        # the copied command as is, plus where to write the body and the status code
        run = subprocess.run(
            ["bash", "-c", f"{command} -sS -o out{i}.json -w '%{{http_code}}'"],
            cwd=tmp_path,
            env={**os.environ, "JUPYTER_TOKEN": lab["token"]},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.stdout == "200", (command, run.stdout, run.stderr)
        scores = json.loads((tmp_path / f"out{i}.json").read_text())
        assert max(scores, key=scores.get) == "7", scores
    # without the Jupyter token the forwarder refuses
    run = subprocess.run(
        ["bash", "-c", f"{commands[0]} -sS -o /dev/null -w '%{{http_code}}'"],
        cwd=tmp_path,
        env={**os.environ, "JUPYTER_TOKEN": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout == "403", run.stdout


def test_export_a_bundle_into_the_jupyter_root(
    page: Any, engine: RealEngine, lab: dict[str, Any]
) -> None:
    card = page.locator('.jp-TorchServe-model[data-model="mnist"]')
    card.get_by_label("Export mnist for KServe, T9k or Ray").click()
    form = page.get_by_label("Export mnist form")
    target = form.get_by_label("Target to export mnist for")
    page.wait_for_function(  # the targets come from the server
        "() => document.querySelectorAll('.jp-TorchServe-export select option').length > 2"
    )
    # Ray's "run" only for Ray, and only where the Jupyter server has Ray
    offer = jupyter_get(lab, "torchserve/models/mnist/export")
    target.select_option("ray")
    assert form.get_by_label("Run mnist on Ray").count() == (1 if offer["ray_run"] else 0)
    target.select_option("t9k")
    assert form.get_by_label("KServe protocol for mnist").count() == 0
    target.select_option("kserve")
    form.get_by_label("KServe protocol for mnist").select_option("v2")
    folder = form.get_by_label("Folder to export mnist into")
    assert folder.get_attribute("placeholder") == "mnist-kserve"
    form.get_by_label("Write the kserve bundle of mnist").click()

    files = page.get_by_label("Files written for mnist")
    files.wait_for(timeout=120000)
    listed = [t.strip() for t in files.locator("li").all_inner_texts()]
    out = Path(lab["root"]) / "mnist-kserve"
    assert "mnist-kserve/inferenceservice.yaml" in listed, listed
    for name in listed:
        assert (Path(lab["root"]) / name).is_file(), name
    assert "protocolVersion: v2" in (out / "inferenceservice.yaml").read_text()
    # the served archive, byte for byte, and the commands that apply the bundle
    (described,) = jupyter_get(lab, "torchserve/models/mnist")
    (mar,) = (out / "model-store").glob("*.mar")
    store = Path(engine.info["model_store"])
    assert mar.read_bytes() == (store / described["modelUrl"]).read_bytes()
    steps = "\n".join(form.locator(".jp-TorchServe-export-step pre").all_inner_texts())
    assert "kubectl apply -f servingruntime.yaml -f inferenceservice.yaml" in steps, steps
    shot(page, "03b-exported")

    # the same folder again: the server's refusal shown in place, nothing overwritten
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    form.get_by_label("Write the kserve bundle of mnist").click()
    alert = form.get_by_role("alert")
    alert.wait_for()
    assert "is not empty" in alert.inner_text()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # a folder outside the Jupyter root is refused before any request
    folder.fill("../outside")
    assert "inside the Jupyter root" in alert.inner_text()
    assert form.get_by_label("Write the kserve bundle of mnist").is_disabled()
    card.get_by_label("Export mnist for KServe, T9k or Ray").click()  # close the form
    form.wait_for(state="detached")


def test_predict_sample_and_file(page: Any, engine: RealEngine) -> None:
    open_tab(page, "Test")
    page.get_by_label("Model to test").select_option("mnist")

    # Send sample input: the example deploy() stored (the PNG of a 7) is predicted
    page.get_by_label("Send the archive's sample input").click()
    prediction = page.get_by_label("Top prediction")
    prediction.wait_for()
    assert "Predicted: 7" in prediction.inner_text()
    assert "HTTP 200" in page.get_by_label("Prediction result").inner_text()
    shot(page, "04-test-sample-input")

    # upload the PNG of a 7, see the preview, the predicted digit and the top-k bars
    page.get_by_label("Choose an input file").set_input_files(str(engine.root / "seven.png"))
    page.get_by_alt_text("Input preview").wait_for()
    assert page.get_by_label("Prediction result").count() == 0  # a new file clears the result
    page.get_by_label("Send the file for prediction").click()
    prediction.wait_for()
    assert "Predicted: 7" in prediction.inner_text()
    assert page.locator(".jp-TorchServe-topk li").count() == 5
    shot(page, "05-test-prediction")

    # a file over max_request_size is refused before upload, naming the limit
    page.get_by_label("Choose an input file").set_input_files(
        {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"0" * 7_000_000}
    )
    alert = page.locator(".jp-TorchServe-error[role=alert]")
    alert.wait_for()
    assert "max_request_size of 6553500 bytes" in alert.inner_text()
    assert page.get_by_label("Send the file for prediction").is_disabled()
    shot(page, "06-test-too-large")


def test_register_from_store_and_set_default(
    page: Any, engine: RealEngine, v2_archive: str
) -> None:
    open_tab(page, "Models")
    store = page.get_by_label("Archive in the model store to register")
    store.focus()  # the list reloads on focus
    page.wait_for_selector(f'option[value="{v2_archive}"]', state="attached")
    store.select_option(v2_archive)
    page.get_by_label("Register the chosen archive").click()
    version_row(page, "2.0").wait_for(timeout=120000)
    # the synchronous register returns once its worker is up: the form clears, the dot is ready
    page.wait_for_function(
        "() => document.querySelector('[aria-label=\"Archive in the model store to register\"]')"
        ".value === ''",
        timeout=120000,
    )
    version_row(page, "2.0").locator(".jp-TorchServe-dot.jp-mod-ready").wait_for()
    assert version_row(page, "1.0").locator(".jp-TorchServe-badge").count() == 1
    assert version_row(page, "2.0").locator(".jp-TorchServe-badge").count() == 0
    shot(page, "07-two-versions")

    page.get_by_label("Make mnist version 2.0 the default").click()
    version_row(page, "2.0").locator(".jp-TorchServe-badge").wait_for()
    version_row(page, "1.0").locator(".jp-TorchServe-badge").wait_for(state="detached")
    assert page.get_by_label("Make mnist version 1.0 the default").is_visible()
    shot(page, "08-default-moved")

    # the model's name now answers from 2.0 (its labels are words); 1.0 still by its version
    inference = engine.info["inference_address"]
    scores = requests.post(f"{inference}/predictions/mnist", data=engine.png, timeout=60).json()
    assert max(scores, key=scores.get) == "seven", scores
    scores = requests.post(f"{inference}/predictions/mnist/1.0", data=engine.png, timeout=60).json()
    assert max(scores, key=scores.get) == "7", scores


def test_sample_input_of_a_store_archive_goes_to_v2(page: Any) -> None:
    """2.0 came from the store without deploy()'s example: Send sample input sends the
    archive's own sample (a KServe v2 document) to the v2 endpoint, and shows the answer."""
    open_tab(page, "Test")
    page.get_by_label("Model to test").select_option("mnist")
    page.get_by_label("Send the archive's sample input").click()
    page.get_by_label("Prediction result").wait_for()
    result = page.get_by_label("Prediction result").inner_text()
    shot(page, "08b-test-v2-sample")
    assert "HTTP 200" in result, result
    assert '"model_version": "2.0"' in result, result


def test_logs_metrics_engine(page: Any, engine: RealEngine) -> None:
    # logs: the tail shows the worker lines and follows
    open_tab(page, "Logs")
    page.get_by_label("Model whose log to show").select_option("mnist")
    log = page.get_by_label("Model log")
    page.wait_for_function(
        "() => document.querySelector('.jp-TorchServe-log').textContent.includes('worker')"
    )
    assert "mnist" in log.inner_text()
    shot(page, "09-logs")

    # metrics: charts drawn from a few polls while some traffic flows
    open_tab(page, "Metrics")
    page.wait_for_selector(".jp-TorchServe-chart svg")
    # a latency point needs two polls with requests answered between them; two make a line
    latency = page.get_by_role("img", name="Mean latency over the last 5 minutes")
    points = latency.locator(".jp-TorchServe-point")
    deadline = time.monotonic() + 30
    while points.count() < 2:
        assert time.monotonic() < deadline, "fewer than two latency points after 30 s of traffic"
        requests.post(engine.info["inference_address"] + "/predictions/mnist", data=engine.png)
        page.wait_for_timeout(200)
    shot(page, "10-metrics")

    # engine: addresses, no GPU message on this machine
    open_tab(page, "Engine")
    page.get_by_label("Engine details").wait_for()
    assert engine.info["inference_address"] in page.get_by_label("Engine details").inner_text()
    shot(page, "11-engine")


def test_unregister_version_then_model(page: Any) -> None:
    open_tab(page, "Models")
    dialog = page.locator(".jp-Dialog")
    # with two versions, a version goes
    page.get_by_label("Unregister mnist version 1.0").click()
    dialog.wait_for()
    assert "Unregister version 1.0 of mnist?" in dialog.inner_text()
    shot(page, "12-unregister-version-dialog", full=True)
    dialog.locator("button.jp-mod-warn").click()
    version_row(page, "1.0").wait_for(state="detached")
    # with one left, the model goes
    page.get_by_label("Unregister mnist version 2.0").click()
    dialog.wait_for()
    assert "Unregister mnist?" in dialog.inner_text()
    dialog.locator("button.jp-mod-warn").click()
    page.locator('.jp-TorchServe-model[data-model="mnist"]').wait_for(state="detached")
    page.get_by_text("No model registered").wait_for()
    shot(page, "13-unregistered")


def test_engine_stop_and_start(page: Any, engine: RealEngine, lab: dict[str, Any]) -> None:
    open_tab(page, "Engine")
    page.get_by_label("Stop the TorchServe engine").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "Stop the TorchServe engine?" in dialog.inner_text()
    dialog.locator("button.jp-mod-warn").click()

    # the panel says so and offers Start, on every tab
    page.locator(".jp-TorchServe-status.jp-mod-stopped").wait_for(timeout=60000)
    open_tab(page, "Models")
    message = page.locator('[data-engine="stopped"] [role="status"]')
    message.wait_for()
    assert "not running" in message.inner_text()
    start = page.get_by_label("Start the TorchServe engine")
    assert start.is_enabled()
    with pytest.raises(requests.RequestException):
        requests.get(engine.info["inference_address"] + "/ping", timeout=2)
    shot(page, "14-engine-stopped")

    start.click()
    page.locator(".jp-TorchServe-status.jp-mod-running").wait_for(timeout=120000)
    open_tab(page, "Engine")
    details = page.get_by_label("Engine details")
    details.wait_for()
    address = lab["start_options"]["inference_address"]
    assert address in details.inner_text()
    assert requests.get(address + "/ping", timeout=10).ok
    shot(page, "15-engine-restarted")


def test_dark_theme(page: Any) -> None:
    """The dark theme through JupyterLab's own menu: the panel follows the CSS variables."""
    page.get_by_text("Settings", exact=True).click()
    page.get_by_text("Theme", exact=True).hover()
    page.get_by_text("JupyterLab Dark", exact=True).click()
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
    open_tab(page, "Models")
    # dark ground, light text: the panel's own colours, once the theme's variables apply
    page.wait_for_function(
        """() => {
            const panel = document.querySelector('.jp-TorchServe-panel');
            const luma = (css) => {  // transparent (an unset colour) compares false
                const [r, g, b, a = 1] = css.match(/[\\d.]+/g).map(Number);
                return a > 0 ? 0.2126 * r + 0.7152 * g + 0.0722 * b : NaN;
            };
            const style = panel && getComputedStyle(panel);
            return style && luma(style.backgroundColor) < 80 && luma(style.color) > 160;
        }""",
        timeout=30000,
    )
    shot(page, "16-dark-models", full=True)
