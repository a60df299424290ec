"""The sidebar's Test tab explains an uploaded image: headless Chromium, real lab and engine.

On the engine (the digits CNN as `mnist`) and `jupyter lab` (base URL, token) it shares with
test_browser_dashboard (see `shared_lab`), one Chromium page: the request goes through
Jupyter's forwarder to `/explanations/mnist`, and the tab draws the answer.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _browser_helpers import (  # noqa: F401 - fixtures used by name
    BROWSER_MARKS,
    jp_asyncio_loop,
    jp_server_cleanup,
    open_page,
    open_tab,
    screenshots,
    shared_lab,
)
from PIL import Image

pytestmark = [*BROWSER_MARKS, pytest.mark.timeout(1200)]  # the fixtures train a CNN


@pytest.fixture(scope="module")
def engine(shared_lab: dict[str, Any]) -> Any:  # noqa: F811
    return shared_lab["engine"]


@pytest.fixture(scope="module")
def page(shared_lab: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Any]:  # noqa: F811
    """One Chromium page on the shared lab for the module, the TorchServe panel open."""
    with open_page(shared_lab, request.module, height=900, timeout_ms=30000) as pg:
        yield pg


def _decoded(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,"), data_url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    return np.asarray(image.convert("RGBA"), dtype=np.int16)


def test_explain_shows_the_input_its_heatmap_and_the_overlay(page: Any, engine: Any) -> None:
    open_tab(page, "Test")
    page.get_by_label("Model to test").select_option("mnist")
    page.get_by_label("Choose an input file").set_input_files(str(engine.root / "seven.png"))
    page.get_by_alt_text("Input preview").wait_for()
    page.get_by_label("Explain the prediction for the file").click()
    heat = page.get_by_alt_text("Attribution heatmap")
    heat.wait_for(timeout=120000)
    assert "HTTP 200" in page.get_by_label("Prediction result").inner_text()
    # the facts come from the x-explanation header, relayed by the server extension
    facts = page.get_by_label("Explanation facts").inner_text()
    assert "predicted 7" in facts and "explained toward 7" in facts
    assert "IntegratedGradients, 15 steps" in facts
    # a 28x28 heatmap, shown, with opaque red and blue (signed) and clear pixels
    assert heat.evaluate("img => img.complete && img.naturalWidth") == 28
    pixels = _decoded(heat.get_attribute("src"))
    assert pixels.shape == (28, 28, 4)
    red = (pixels[..., 0] > pixels[..., 2]) & (pixels[..., 3] > 128)
    blue = (pixels[..., 2] > pixels[..., 0]) & (pixels[..., 3] > 128)
    assert red.any() and blue.any() and (pixels[..., 3] == 0).any()
    assert page.get_by_alt_text("Explained input").is_visible()
    assert page.get_by_alt_text("Heatmap over the input").is_visible()
    # the huge nested list is not dumped under the drawing
    assert page.locator(".jp-TorchServe-result .jp-TorchServe-pre").count() == 0
    page.locator(".jp-TorchServe-result").screenshot(path=str(screenshots(page) / "test-tab.png"))

    # Predict afterwards shows the top-k again, not a drawing
    page.get_by_label("Send the file for prediction").click()
    page.get_by_label("Top prediction").wait_for()
    assert page.get_by_alt_text("Attribution heatmap").count() == 0
