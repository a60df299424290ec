"""The Models tab shows a model's lifecycle, in headless Chromium against a real lab and engine.

A digits classifier is deployed with held-out data (its evaluation report goes into the
archive), a second version is deployed and takes a 20 % canary of the default route. The
tab shows each version's report (kernel beside served, the very figures the deploy
computed) and the split with each version's share; after a promote the canary is gone.
One lab, one engine and one page for the module, reusing test_browser_sidebar's fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _browser_helpers import BROWSER_MARKS, jupyter_get, shot
from _digits_helpers import digits, digits_mlp
from _serverext_helpers import RealEngine, _env
from test_browser_sidebar import (  # noqa: F401 - fixtures used by name
    jp_asyncio_loop,
    jp_server_cleanup,
    lab,
    page,
)

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealEngine]:
    """An engine serving `digits` 1.0 (evaluated on held-out rows) and 2.0 (a 20 % canary)."""
    import jupyter_torchserve as jts
    from jupyter_torchserve import traffic
    from jupyter_torchserve.client import Client

    eng = RealEngine(tmp_path_factory.mktemp("lifecycle-engine")).start(deploy=False)
    x_train, y_train, x_test, y_test = digits()
    with _env(JUPYTER_RUNTIME_DIR=str(eng.runtime_dir)):
        first = jts.deploy(
            digits_mlp(x_train, y_train, 60, 0),
            "digits",
            x_test=x_test,
            y_test=y_test,
            progress="none",
        )
        second = jts.deploy(
            digits_mlp(x_train, y_train, 5, 1),
            "digits",
            version="2.0",
            x_test=x_test,
            y_test=y_test,
            progress="none",
        )
        c = Client.from_info(eng.info)
        traffic.canary("digits", "2.0", 20, c=c)
        for row in x_test[:100]:  # the default route, split per request
            c.predict("digits", json.dumps(row[None].tolist()), content_type="application/json")
    eng.reports = {"1.0": first.evaluation, "2.0": second.evaluation}  # type: ignore[attr-defined]
    yield eng
    eng.stop()


@pytest.fixture(scope="module")
def v2_archive() -> str:
    """test_browser_sidebar's lab asks for it; here both versions are deployed already."""
    return ""


def row(pg: Any, version: str) -> Any:
    return pg.locator(f'.jp-TorchServe-model[data-model="digits"] [data-version="{version}"]')


def test_each_version_shows_its_held_out_report(page: Any, engine: RealEngine) -> None:  # noqa: F811
    reports = engine.reports  # type: ignore[attr-defined]
    for version in ("1.0", "2.0"):
        details = row(page, version).get_by_label(f"Evaluation of digits version {version}")
        details.wait_for()
        served = reports[version].served["accuracy"]
        assert f"served accuracy {served:.4f}" in details.locator("summary").inner_text()
        assert "597 rows" in details.locator("summary").inner_text()
        details.locator("summary").click()
        cells = details.locator('tr[data-metric="accuracy"] td').all_inner_texts()
        assert cells == ["accuracy", f"{reports[version].kernel['accuracy']:.4f}", f"{served:.4f}"]
        agreement = details.locator('tr[data-metric="agreement"] td').all_inner_texts()[2]
        assert agreement == f"{100 * reports[version].agreement:.2f} %"
    assert reports["1.0"].served["accuracy"] > reports["2.0"].served["accuracy"]
    shot(page, "lifecycle-01-evaluation")


def test_the_canary_split_and_each_versions_share(page: Any, lab: dict[str, Any]) -> None:  # noqa: F811
    canary = row(page, "2.0")
    canary.locator(".jp-TorchServe-badge.jp-mod-canary").wait_for()
    share = canary.get_by_label("Traffic of digits version 2.0")
    assert share.get_attribute("data-percent") == "20"
    default = row(page, "1.0").get_by_label("Traffic of digits version 1.0")
    assert default.get_attribute("data-percent") == "80"
    # the shares seen are the engine's own counts of the 100 default-route requests
    described = {v["modelVersion"]: v for v in jupyter_get(lab, "torchserve/models/digits")}
    for version, locator in (("1.0", default), ("2.0", share)):
        t = described[version]["traffic"]
        assert f"{t['requests']} req, {t['observedPercent']:.1f} % seen" in locator.inner_text()
    assert described["1.0"]["traffic"]["requests"] + described["2.0"]["traffic"]["requests"] == 100
    assert "canary 20 % of the default route" in share.inner_text()
    shot(page, "lifecycle-02-canary")


def test_promote_ends_the_canary_in_the_tab(page: Any, engine: RealEngine) -> None:  # noqa: F811
    from jupyter_torchserve import traffic
    from jupyter_torchserve.client import Client

    traffic.promote("digits", "2.0", c=Client.from_info(engine.info))
    promoted = row(page, "2.0")
    promoted.locator(".jp-TorchServe-badge:text-is('default')").wait_for()
    page.wait_for_selector(".jp-TorchServe-badge.jp-mod-canary", state="detached")
    assert page.locator(".jp-TorchServe-traffic").count() == 0
    # the reports stay with their versions
    assert promoted.get_by_label("Evaluation of digits version 2.0").count() == 1
    shot(page, "lifecycle-03-promoted")
