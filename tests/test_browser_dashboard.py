"""The Test tab's load test and the dashboard, in headless Chromium against a real `jupyter lab`
and engine (one lab, one engine, one page for the module; the tests run in file order):

1. the Test tab's load test on the sample input: a row per concurrency level in the table;
2. "Open dashboard" (Metrics tab) opens a main-area panel whose Vega-Lite charts are drawn
   with the load test's requests: line marks, axis titles with units, legends naming the
   model version and the percentiles; the range picker switches to the last 60 minutes.

Screenshots go to `test-artifacts/browser/dashboard-*.png`.
"""

from __future__ import annotations

import json
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
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is absent: `apt-get install -y chromium` to run the browser tests",
    ),
]


# pytest-jupyter's autouse fixtures close a per-test event loop; the module's sync Playwright
# keeps its own loop running across tests, and nothing here uses an in-process Jupyter server.
@pytest.fixture
def jp_asyncio_loop() -> None:
    return None


@pytest.fixture
def jp_server_cleanup() -> None:
    return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealEngine]:
    eng = RealEngine(tmp_path_factory.mktemp("dashboard-engine")).start()
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def lab(engine: RealEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`jupyter lab` on a free loopback port, under a base URL, with a token, sampling the
    engine every second for the dashboard."""
    root = tmp_path_factory.mktemp("lab")
    port = free_port()
    token = secrets.token_hex(16)
    base = "/jts-dash/"
    config_dir = root / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"JupyterTorchServe": {"dashboard_interval": 1.0}})
    )
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(engine.runtime_dir),
        "JUPYTER_CONFIG_PATH": os.pathsep.join(
            p for p in (str(config_dir), os.environ.get("JUPYTER_CONFIG_PATH", "")) if p
        ),
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
    yield {"url": url, "token": token, "log": root / "lab.log"}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(lab: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(60000)
        pg.goto(f"{lab['url']}lab?token={lab['token']}")
        pg.wait_for_selector(f'.jp-SideBar.jp-mod-left [data-id="{PANEL}"]', timeout=60000)
        if not pg.locator(f"#{PANEL}").is_visible():
            pg.click(f'.jp-SideBar.jp-mod-left [data-id="{PANEL}"]')
        yield pg
        browser.close()


def open_tab(page: Any, tab: str) -> None:
    page.get_by_role("tab", name=f"{tab} tab").click()


def test_load_test_from_the_test_tab(page: Any, lab: dict[str, Any]) -> None:
    open_tab(page, "Test")
    page.get_by_label("Model to test").select_option("mnist")
    levels = page.get_by_label("Concurrency levels")
    levels.fill("0,2")  # refused in the form, before any request
    assert "from 1 to 256" in page.get_by_role("group", name="Load test").inner_text()
    assert page.get_by_label("Run the load test").is_disabled()
    levels.fill("1,2")
    page.get_by_label("Seconds per level").fill("1.5")
    page.get_by_label("Run the load test").click()
    box = page.get_by_role("group", name="Load test")
    box.locator("table, [role=alert]").first.wait_for(timeout=120000)
    page.locator(f"#{PANEL}").screenshot(path=str(ARTIFACTS / "dashboard-01-load-test.png"))
    assert box.locator("[role=alert]").count() == 0, (
        box.inner_text() + lab["log"].read_text()[-4000:]
    )
    table = page.get_by_label("Load test results")
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    for i, level in enumerate(("1", "2")):
        cells = rows.nth(i).locator("td").all_text_contents()
        assert cells[0] == level
        assert float(cells[1]) > 0  # req/s
        p50, p90, p99 = (float(c) for c in cells[2:5])
        assert 0 < p50 <= p90 <= p99
        assert cells[5] == "0"  # errors


def test_dashboard_draws_charts_with_data(page: Any) -> None:
    open_tab(page, "Metrics")
    page.get_by_label("Open dashboard").click()
    dash = page.locator("#jp-TorchServe-dashboard")
    dash.wait_for()
    throughput = dash.locator('[data-chart="throughput"]')
    # the load test's requests are in the history: the line is drawn, with a legend
    throughput.locator("svg .mark-line path").first.wait_for()
    assert int(throughput.get_attribute("data-rows") or 0) > 0
    titles = throughput.locator(".role-axis-title").all_text_contents()
    assert "requests / s" in titles and "time" in titles
    assert "mnist 1.0" in " ".join(throughput.locator(".role-legend").all_text_contents())
    latency = dash.locator('[data-chart="latency"]')
    latency.locator("svg .mark-line path").first.wait_for()
    legend = " ".join(latency.locator(".role-legend").all_text_contents())
    assert "p50" in legend and "p99" in legend and "mnist 1.0" in legend
    assert "latency (ms)" in latency.locator(".role-axis-title").all_text_contents()
    for chart in ("workers", "worker_memory", "worker_cpu", "batch"):
        box = dash.locator(f'[data-chart="{chart}"]')
        box.locator("svg .role-axis-title").first.wait_for()
        assert int(box.get_attribute("data-rows") or 0) > 0, chart
    # the range picker: an hour
    page.get_by_label("Time range").select_option("60")
    page.wait_for_function(
        "() => document.querySelector('#jp-TorchServe-dashboard [role=status]')"
        ".textContent.startsWith('last 60 min')"
    )
    throughput.locator("svg .mark-line path").first.wait_for()
    dash.screenshot(path=str(ARTIFACTS / "dashboard-02-charts.png"))
