"""How the autoscaler answers a load step: time to the added worker's first answer, and p99
during the step, autoscaling (min 1 / max 3) against a fixed min worker count (1).

    .venv/bin/python benchmarks/autoscale_step.py [--step 32] [--duration 15] [--sleep 0.02]

The model is the tests' probe handler sleeping `--sleep` seconds per request: a worker bound
by something other than this machine's two cores (a GPU kernel, I/O), the case where more
workers help. Load: 2 connections, then a step to `--step` connections for `--duration`
seconds (bench's load generator). Beside the load, one client sends the same request in a
loop and notes the worker pid of each answer: the first answer from a new pid is the added
worker's first answer as a client sees it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402
from _engine_helpers import probe_mar  # noqa: E402

from jupyter_torchserve import loadtest  # noqa: E402
from jupyter_torchserve.client import Client  # noqa: E402
from jupyter_torchserve.config import port_of  # noqa: E402


def watch_pids(port: int, body: bytes, stop: threading.Event, seen: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        conn.request("POST", "/predictions/step", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200:
            seen.append((time.perf_counter(), json.loads(data)["pid"]))


def one_run(work: Path, max_workers: int, args: argparse.Namespace) -> dict:
    with bench.scratch_engine(work, f"state-{max_workers}") as info:
        c = Client.from_info(info, timeout=60)
        c.register("step-1.0.mar", initial_workers=1)
        c.scale("step", 1, max_workers)
        body = json.dumps({"sleep": args.sleep}).encode()
        request = loadtest.BenchRequest("/predictions/step", body, "application/json")
        base = loadtest.run_level(c.inference_address, request, 2, 3.0)
        first_pid = c.describe("step")[0]["workers"][0]["pid"]
        stop, seen = threading.Event(), []
        watcher = threading.Thread(
            target=watch_pids, args=(port_of(c.inference_address), body, stop, seen)
        )
        t_step = time.perf_counter()
        watcher.start()
        step = loadtest.run_level(c.inference_address, request, args.step, args.duration)
        stop.set()
        watcher.join()
        d = c.describe("step")[0]
        new = [t for t, pid in seen if pid != first_pid]
        ups = [e for e in d["autoscale"]["events"] if e["action"] == "up"]
        return {
            "max_workers": max_workers,
            "base_p99_ms": base["p99_ms"],
            "step_rps": step["rps"],
            "step_p50_ms": step["p50_ms"],
            "step_p99_ms": step["p99_ms"],
            "errors": step["errors"],
            "answered": step["answered"],
            "sent": step["sent"],
            "first_new_worker_answer_s": round(new[0] - t_step, 2) if new else None,
            "up_events": [e["reason"] for e in ups],
            "workers_at_end": len(d["workers"]),
            "gen_cpu_cores": step["cpu_cores"],
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--step", type=int, default=32)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--sleep", type=float, default=0.02)
    args = ap.parse_args()
    with bench.scratch_dir("jts-as-") as work:
        probe_mar(work / "store", "step")
        runs = [one_run(work, 1, args), one_run(work, 3, args)]
    print(json.dumps(runs, indent=1))
    columns = ["workers", "step req/s", "p50 ms", "p99 ms", "errors", "answered/sent"]
    columns += ["first answer of an added worker", "workers at end"]
    rows = []
    for r in runs:
        first = r["first_new_worker_answer_s"]
        rows.append(
            [
                "fixed 1" if r["max_workers"] == 1 else "autoscale 1..3",
                f"{r['step_rps']:,.0f}",
                f"{r['step_p50_ms']:.1f}",
                f"{r['step_p99_ms']:.1f}",
                r["errors"],
                f"{r['answered']}/{r['sent']}",
                "–" if first is None else f"{first} s",
                r["workers_at_end"],
            ]
        )
    print("\n" + "\n".join(bench.table(columns, rows)))


if __name__ == "__main__":
    main()
