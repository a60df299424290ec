"""`python -m jupyter_torchserve.loadtest_job`: one `bench` run as a process of its own, for the
sidebar's Load test (serverext/dashboard_handlers.py starts it).

Why a process: the Jupyter server stays below the notebook side (tests/test_notebook_layout.py)
and does not import `loadtest`'s view stack (matplotlib, ipywidgets) into its own process, and
a test that outlives its browser request can be ended by killing one process.

Reads one JSON object on stdin: `{"info": <the engine's discovery info>, "name", "data_file",
"content_type", "protocol", "concurrency", "duration", "version", "timeout"}`; writes one JSON
line to stdout, `{"rows": [...], "notes": [...], "protocol"}`, or `{"error": "..."}` (exit 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import loadtest
from .client import Client


def run(plan: dict[str, Any]) -> dict[str, Any]:
    client = Client.from_info(plan["info"], timeout=float(plan.get("timeout", 120.0)))
    body = Path(plan["data_file"]).read_bytes()
    protocol = plan.get("protocol", "torchserve")
    data: Any = json.loads(body) if protocol == "v2" else body
    options = loadtest.BenchOptions(
        concurrency=[int(c) for c in plan["concurrency"]],
        duration=float(plan["duration"]),
        protocol=protocol,
        version=plan.get("version"),
        content_type=None if protocol == "v2" else plan.get("content_type"),
    )
    result = loadtest.run(client, plan["name"], data, options)
    return {"protocol": result.protocol, "rows": result.rows, "notes": result.notes()}


def main() -> int:
    try:
        out = run(json.loads(sys.stdin.read()))
    except Exception as exc:  # noqa: BLE001 - told to the caller as one line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
