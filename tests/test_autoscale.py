"""Autoscaling on a real engine: min 1 / max 3 under 48 concurrent clients for 20 s reaches
3 workers with no request lost, goes back to 1 after the cool-down, and every decision is in
describe, the metrics and the model's log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _engine_helpers import model_store, running_engine

from jupyter_torchserve import loadtest, prometheus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

COOLDOWN = 3.0


def autoscale_counts(c) -> dict[str, float]:
    text = c.metrics(["jts_autoscale_events_total"])
    return {
        labels["action"]: v
        for n, labels, v in prometheus.samples(text)
        if n == "jts_autoscale_events_total" and labels.get("model_name") == "busy"
    }


def test_workers_follow_the_load_and_nothing_is_lost(tmp_path: Path) -> None:
    store = model_store(tmp_path, "busy")
    with running_engine(
        tmp_path,
        model_store=store,
        autoscale_up_window=0.5,
        autoscale_cooldown=COOLDOWN,
    ) as (info, c):
        c.register("busy-1.0.mar", initial_workers=1)
        assert c.scale("busy", 1, 3)["status"].startswith("Workers scaled to 1")
        d = c.describe("busy")[0]
        assert d["autoscale"]["enabled"] and len(d["workers"]) == 1
        assert d["autoscale"]["policy"]["cooldown"] == COOLDOWN

        request = loadtest.build_request("busy", {"sleep": 0.02})
        result = loadtest.run_level(c.inference_address, request, 48, 20.0)
        assert result["errors"] == 0, (result["statuses"], result["failures"])
        assert result["answered"] == result["sent"] > 100  # nothing lost

        d = c.describe("busy")[0]
        ups = [e for e in d["autoscale"]["events"] if e["action"] == "up"]
        assert [(e["workers_before"], e["workers_after"]) for e in ups] == [(1, 2), (2, 3)]
        assert not [e for e in d["autoscale"]["events"] if e["action"] == "failed"]
        deadline = time.monotonic() + 4 * COOLDOWN + 30
        while len(c.describe("busy")[0]["workers"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        d = c.describe("busy")[0]
        assert len(d["workers"]) == 1
        downs = [e for e in d["autoscale"]["events"] if e["action"] == "down"]
        assert [(e["workers_before"], e["workers_after"]) for e in downs] == [(3, 2), (2, 1)]
        assert autoscale_counts(c) == {"up": 2.0, "down": 2.0}
        log = c.logs("busy")
        assert log.count("[autoscale] up") == 2 and log.count("[autoscale] down") == 2
        # the one left still answers
        assert c.predict("busy", b'{"echo": 1}').status == 200
