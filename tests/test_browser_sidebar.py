"""The sidebar in headless Chromium against a real `jupyter lab` (base URL + token) and engine.

Walks a user's path: open the sidebar, see the deployed model, add a worker, upload a PNG and
read the predicted digit, refuse an oversize file, follow the logs, look at the metrics,
unregister through the dialog. Screenshots go to `test-artifacts/browser/`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _serverext_helpers import RealEngine, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
PANEL = "jupyter-torchserve-panel"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is absent: `apt-get install -y chromium` to run the browser tests",
    ),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealEngine]:
    eng = RealEngine(tmp_path_factory.mktemp("browser-engine")).start()
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def lab(engine: RealEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`jupyter lab` on a free loopback port, under a base URL, with a token."""
    root = tmp_path_factory.mktemp("lab")
    port = free_port()
    token = secrets.token_hex(16)
    base = "/jts-base/"
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(engine.runtime_dir),
        # a fresh workspace and settings: no panel or theme remembered from an earlier run
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.base_url={base}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = open(root / "lab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}{base}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "api/status", params={"token": token}, timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            raise RuntimeError((root / "lab.log").read_text())
        time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("jupyter lab did not start:\n" + (root / "lab.log").read_text())
    yield {"url": url, "token": token, "proc": proc}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def page(lab: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        pg = context.new_page()
        pg.set_default_timeout(30000)
        pg.goto(f"{lab['url']}lab?token={lab['token']}")
        pg.wait_for_selector(f'.jp-SideBar.jp-mod-left [data-id="{PANEL}"]', timeout=60000)
        yield pg
        browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def open_tab(page: Any, tab: str) -> None:
    page.get_by_role("tab", name=f"{tab} tab").click()


def test_sidebar_user_path(page: Any, engine: RealEngine) -> None:
    # open the sidebar: the model deployed from Python is there, with one ready worker
    if not page.locator(f"#{PANEL}").is_visible():
        page.click(f'.jp-SideBar.jp-mod-left [data-id="{PANEL}"]')
    card = page.locator('.jp-TorchServe-model[data-model="mnist"]')
    card.wait_for()
    page.locator(".jp-TorchServe-status.jp-mod-running").wait_for()
    count = card.locator(".jp-TorchServe-worker-count")
    assert count.get_attribute("data-count") == "1"
    assert card.locator(".jp-TorchServe-badge").inner_text() == "default"
    shot(page, "01-models")

    # add a worker: the count changes to 2 (and two dots)
    page.get_by_label("Add a worker to mnist version 1.0").click()
    page.wait_for_selector('.jp-TorchServe-worker-count[data-count="2"]')
    page.locator(".jp-TorchServe-dot.jp-mod-ready >> nth=1").wait_for()
    shot(page, "02-added-worker")

    # test: upload the PNG of a 7, see the preview, the predicted digit and the top-k bars
    open_tab(page, "Test")
    page.get_by_label("Model to test").select_option("mnist")
    page.get_by_label("Choose an input file").set_input_files(str(engine.root / "seven.png"))
    page.get_by_alt_text("Input preview").wait_for()
    page.get_by_label("Send the file for prediction").click()
    prediction = page.get_by_label("Top prediction")
    prediction.wait_for()
    assert "Predicted: 7" in prediction.inner_text()
    assert page.locator(".jp-TorchServe-topk li").count() == 5
    shot(page, "03-test-prediction")

    # a file over max_request_size is refused before upload, naming the limit
    page.get_by_label("Choose an input file").set_input_files(
        {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"0" * 7_000_000}
    )
    alert = page.locator(".jp-TorchServe-error[role=alert]")
    alert.wait_for()
    assert "max_request_size of 6553500 bytes" in alert.inner_text()
    assert page.get_by_label("Send the file for prediction").is_disabled()
    shot(page, "04-test-too-large")

    # logs: the tail shows the worker lines and follows
    open_tab(page, "Logs")
    page.get_by_label("Model whose log to show").select_option("mnist")
    log = page.get_by_label("Model log")
    page.wait_for_function(
        "() => document.querySelector('.jp-TorchServe-log').textContent.includes('worker')"
    )
    assert "mnist" in log.inner_text()
    shot(page, "05-logs")

    # metrics: charts drawn from a few polls while some traffic flows
    open_tab(page, "Metrics")
    page.wait_for_selector(".jp-TorchServe-chart svg")
    for _ in range(12):
        requests.post(engine.info["inference_address"] + "/predictions/mnist", data=engine.png)
        page.wait_for_timeout(400)
    page.wait_for_timeout(2500)
    assert page.locator(".jp-TorchServe-point").count() > 0
    shot(page, "06-metrics")

    # engine: addresses, no GPU message on this machine
    open_tab(page, "Engine")
    page.get_by_label("Engine details").wait_for()
    assert engine.info["inference_address"] in page.get_by_label("Engine details").inner_text()
    shot(page, "07-engine")

    # unregister through the confirmation dialog
    open_tab(page, "Models")
    page.get_by_label("Unregister mnist version 1.0").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "Unregister mnist?" in dialog.inner_text()
    shot(page, "08-unregister-dialog")
    dialog.locator("button.jp-mod-warn").click()
    page.locator('.jp-TorchServe-model[data-model="mnist"]').wait_for(state="detached")
    shot(page, "09-unregistered")

    # the dark theme through JupyterLab's own menu: the panel follows the CSS variables
    page.get_by_text("Settings", exact=True).click()
    page.get_by_text("Theme", exact=True).hover()
    page.get_by_text("JupyterLab Dark", exact=True).click()
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
    open_tab(page, "Engine")
    page.wait_for_timeout(500)
    shot(page, "10-dark-engine")
