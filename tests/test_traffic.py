"""The notebook's canary verbs (traffic.py, ``%torchserve canary`` / ``promote``).

Fast: the parser and the split's rendering. Slow: the verbs against a real engine whose two
versions answer with their own version number, so each answer says where it went.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest
from _engine_helpers import manifest, running_engine, write_mar
from IPython.core.error import UsageError

from jupyter_torchserve import api, traffic
from jupyter_torchserve.magics import build_parser

SPLIT = {
    "modelName": "m",
    "defaultVersion": "1.0",
    "canary": {
        "defaultVersion": "1.0",
        "canaryVersion": "2.0",
        "percent": 20,
        "started": "2026-12-01T20:00:00Z",
        "requests": {"1.0": 75, "2.0": 25},
        "observedPercent": 25.0,
    },
}


def test_canary_and_promote_parse_as_documented():
    p = build_parser()
    args = p.parse_args(["canary", "mnist", "2.0", "--percent", "20"])
    assert (args.name, args.version, args.percent, args.off) == ("mnist", "2.0", 20.0, False)
    assert p.parse_args(["canary", "mnist", "--off"]).off
    assert p.parse_args(["promote", "mnist", "2.0"]).version == "2.0"
    with pytest.raises(UsageError, match="not allowed with"):
        p.parse_args(["canary", "mnist", "2.0", "--percent", "20", "--off"])


def test_the_split_shows_asked_and_seen_shares():
    shown = traffic.CanarySplit("m", SPLIT)
    head, rows = shown.table()
    assert rows == [["1.0", "default", "80%", 75, "75.0%"], ["2.0", "canary", "20%", 25, "25.0%"]]
    assert "version 2.0 takes 20% of the default route" in repr(shown)
    assert "<table" in shown._repr_html_()
    none = traffic.CanarySplit("m", {"modelName": "m", "defaultVersion": "1.0", "canary": None})
    assert "no canary" in repr(none)


WHICH_HANDLER = textwrap.dedent("""
    def handle(data, context):
        if data is None:
            return None
        return [float(context.manifest["model"]["modelVersion"]) for _ in data]
""")


@pytest.mark.slow
def test_canary_then_promote_from_the_notebook(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    for version in ("1.0", "2.0"):
        write_mar(
            store / f"which-{version}.mar",
            {"which.py": WHICH_HANDLER, "dummy.txt": "x"},
            manifest("which", version, "dummy.txt", "which.py"),
        )
    with running_engine(tmp_path, model_store=store) as (info, c):
        for version in ("1.0", "2.0"):
            c.register(f"which-{version}.mar", initial_workers=1, synchronous=True)
        started = traffic.canary("which", "2.0", 30, c=c)
        assert started.canary["percent"] == 30 and "takes 30%" in started.status
        seen = Counter(str(api.predict("which", [0], c=c)) for _ in range(200))
        assert 0.2 <= seen["2.0"] / 200 <= 0.4, seen
        split = traffic.split("which", c=c)
        assert split.canary["requests"] == {"1.0": seen["1.0"], "2.0": seen["2.0"]}
        described = api.describe("which", "all", c=c)
        assert "canary: 30% asked" in repr(described)

        promoted = traffic.promote("which", "2.0", c=c)
        assert promoted.canary is None and promoted.data["defaultVersion"] == "2.0"
        assert {str(api.predict("which", [0], c=c)) for _ in range(20)} == {"2.0"}

        traffic.canary("which", "1.0", 50, c=c)
        assert traffic.end_canary("which", c=c).canary is None
        with pytest.raises(api.TorchServeError, match="404 CanaryNotFoundException"):
            traffic.end_canary("which", c=c)
        with pytest.raises(api.TorchServeError, match="400"):
            traffic.canary("which", "1.0", 100, c=c)
