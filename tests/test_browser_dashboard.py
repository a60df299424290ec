"""The Test tab's load test and the dashboard, in headless Chromium against a real `jupyter lab`
and engine (one page for the module, on the lab and engine it shares with test_browser_explain,
see `shared_lab`; the tests run in file order):

1. the Test tab's load test on the sample input: a row per concurrency level in the table;
2. "Open dashboard" (Metrics tab) opens a main-area panel whose Vega-Lite charts are drawn
   with the load test's requests: line marks, axis titles with units, legends naming the
   model version and the percentiles; the range picker switches to the last 60 minutes.

Screenshots go to `test-artifacts/browser/dashboard/`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _browser_helpers import (  # noqa: F401 - fixtures used by name
    BROWSER_MARKS,
    PANEL,
    jp_asyncio_loop,
    jp_server_cleanup,
    open_page,
    open_tab,
    screenshots,
    shared_lab,
)

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def lab(shared_lab: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """`jupyter lab` on a free loopback port, under a base URL, with a token, sampling the
    engine every second for the dashboard (the shared one)."""
    return shared_lab


@pytest.fixture(scope="module")
def page(lab: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    with open_page(lab, request.module, height=1000, timeout_ms=60000) as pg:
        yield pg


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
    page.locator(f"#{PANEL}").screenshot(path=str(screenshots(page) / "01-load-test.png"))
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
    dash.screenshot(path=str(screenshots(page) / "02-charts.png"))
