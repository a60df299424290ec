"""Routes of the dashboard and of the sidebar's load test, beside handlers.py's.

`GET {base}/torchserve/dashboard?minutes=5|15|60`: the history the sampler keeps (history.py).
`POST {base}/torchserve/models/{name}/loadtest` with `{"concurrency": [1, 8], "duration": 3}`:
the same load test as `%torchserve bench` (loadtest.run), on the archive's sample input, run
as a process of its own (`python -m jupyter_torchserve.loadtest_job`) awaited without
blocking the Jupyter server's loop; one at a time, since two would measure each other.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_server.utils import url_path_join
from tornado import web

from jupyter_torchserve.contract import EngineError

from . import store
from .handlers import TorchServeHandler
from .history import RANGES, History

#: Bounds of a load test from the sidebar: short, so a click cannot tie the engine up for long.
MAX_LEVELS = 6
MAX_CONCURRENCY = 256
MAX_DURATION_S = 30.0

_LOADTEST_LOCK = asyncio.Lock()


class DashboardHandler(TorchServeHandler):
    """The last 5, 15 or 60 minutes of the history, as long-form rows per chart."""

    @web.authenticated
    async def get(self) -> None:
        raw = self.get_query_argument("minutes", "15")
        try:
            minutes = int(raw)
        except ValueError:
            minutes = -1
        if minutes not in RANGES:
            raise web.HTTPError(
                400, f"`minutes` must be one of {', '.join(map(str, RANGES))}, not {raw!r}"
            )
        history: History = self.settings["jupyter_torchserve_history"]
        self.finish(json.dumps(history.view(minutes, time.time())))


def _levels(value: Any) -> list[int]:
    """`[1, 8]`, `"1,8"` or `8` -> `[1, 8]`; anything else is a 400 that says why."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [v for v in str(value).replace(" ", "").split(",") if v]
    if not isinstance(value, list) or not value:
        raise web.HTTPError(400, "`concurrency` must be a list of positive integers, e.g. [1, 8]")
    try:
        levels = [int(v) for v in value]
    except (TypeError, ValueError):
        raise web.HTTPError(400, f"`concurrency` must be integers, not {value!r}") from None
    if len(levels) > MAX_LEVELS or any(not 1 <= c <= MAX_CONCURRENCY for c in levels):
        raise web.HTTPError(
            400,
            f"`concurrency`: at most {MAX_LEVELS} levels, each from 1 to {MAX_CONCURRENCY}",
        )
    return levels


def _duration(value: Any) -> float:
    try:
        duration = float(value)
    except (TypeError, ValueError):
        raise web.HTTPError(400, f"`duration` must be a number of seconds, not {value!r}") from None
    if not 0.5 <= duration <= MAX_DURATION_S:
        raise web.HTTPError(400, f"`duration` must be from 0.5 to {MAX_DURATION_S:g} seconds")
    return duration


class LoadTestHandler(TorchServeHandler):
    """A short load test on the model's sample input; answers the bench's rows and notes."""

    @web.authenticated
    async def post(self, name: str) -> None:
        body = self.json_body()
        levels = _levels(body.get("concurrency", [1, 8]))
        duration = _duration(body.get("duration", 3))
        version = body.get("version") or None
        versions = await self.gateway.describe_all(name)  # unknown model -> the engine's 404
        chosen = [
            v
            for v in versions
            if (v.get("modelVersion") == version if version else v.get("isDefault"))
        ] or versions
        url = (chosen[0].get("modelUrl") if chosen else None) or ""
        info = self.gateway.info()
        sample = await asyncio.to_thread(store.sample_input, info.get("model_store"), url)
        if sample is None:
            raise EngineError(
                404,
                "SampleNotFound",
                f"the archive of {name!r} stores no sample input to load-test with; "
                f"use `%torchserve bench {name} --data ...` in a notebook",
            )
        data, ctype, protocol = sample
        if _LOADTEST_LOCK.locked():
            raise EngineError(409, "Conflict", "a load test is already running; wait for it")
        async with _LOADTEST_LOCK:
            out = await _run_job(
                {
                    "info": dict(info),
                    "name": name,
                    "content_type": ctype,
                    "protocol": "v2" if protocol == "v2" else "torchserve",
                    "concurrency": levels,
                    "duration": duration,
                    "version": version,
                    "timeout": self.gateway.request_timeout,
                },
                data,
                limit=len(levels) * (duration + 30) + 60,
            )
        self.finish(json.dumps({"model": name, "version": version, "duration": duration, **out}))


async def _run_job(plan: dict[str, Any], data: bytes, limit: float) -> dict[str, Any]:
    """Run loadtest_job with `plan` on stdin; its one JSON line, or an EngineError."""
    with tempfile.TemporaryDirectory(prefix="jts-loadtest-") as tmp:
        data_file = Path(tmp) / "body"
        data_file.write_bytes(data)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jupyter_torchserve.loadtest_job",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdin = json.dumps({**plan, "data_file": str(data_file)}).encode()
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), limit)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            message = f"the load test ran past {limit:.0f} s"
            raise EngineError(504, "LoadTestTimeout", message) from None
        except asyncio.CancelledError:  # the server is shutting down: leave no generator behind
            proc.kill()
            raise
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else {}
    except ValueError:
        out = {}
    if proc.returncode != 0 or "rows" not in out:
        why = out.get("error") or stderr.decode("utf-8", "replace")[-2000:] or "no answer"
        raise EngineError(500, "LoadTestFailed", f"the load test failed: {why}")
    return out


def dashboard_routes(base_url: str) -> list[tuple[str, type[TorchServeHandler]]]:
    root = url_path_join(base_url, "torchserve")
    return [
        (root + r"/dashboard/?", DashboardHandler),
        (root + r"/models/([^/]+)/loadtest/?", LoadTestHandler),
    ]
