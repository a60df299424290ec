"""bench's load generator against wrk: the same engine, model and body, alternated.

    .venv/bin/python benchmarks/loadgen_vs_wrk.py [--connections 32] [--duration 8] [--rounds 3]

The `tiny` workload (Linear(10, 10), benchmarks/workloads.py), one worker, closed loop at
one connection count. Alternating the two tools round by round spreads the neighbours'
load on this shared machine over both. Prints a markdown table (req/s, p50, p99, the
tool's own CPU in cores, the engine's) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as wrkbench  # noqa: E402
import workloads  # noqa: E402

from jupyter_torchserve import loadtest  # noqa: E402
from jupyter_torchserve.client import Client  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with wrkbench.scratch_dir("jts-lg-") as work:
        workloads.build_archive("tiny", work / "store", "tiny")
        with wrkbench.scratch_engine(work) as info:
            c = Client.from_info(info, timeout=60)
            c.register("tiny.mar", initial_workers=1)
            body, ctype = workloads.make_payload("tiny")
            script = wrkbench.write_lua(work, "tiny")
            url = f"{c.inference_address}/predictions/tiny"
            request = loadtest.BenchRequest("/predictions/tiny", body, ctype)
            loadtest.run_level(c.inference_address, request, args.connections, 2.0)  # warm-up
            rows = []
            for i in range(args.rounds):
                w = wrkbench.run_wrk(url, script, args.connections, args.duration, info["pid"])
                rows.append(
                    (
                        "wrk",
                        i,
                        w["rps"],
                        w["p50_ms"],
                        w["p99_ms"],
                        w["wrk_cpu_cores"],
                        w["server_cpu_cores"],
                    )
                )
                probe = loadtest.EngineProbe(c, "tiny", None)
                before = probe.sample()
                g = loadtest.run_level(
                    c.inference_address, request, args.connections, args.duration
                )
                seen = loadtest.EngineProbe.delta(before, probe.sample())
                server = (seen["server_cpu_seconds"] or 0) / g["wall_seconds"]
                assert g["errors"] == 0 and seen["engine_requests"] == g["answered"], (g, seen)
                rows.append(
                    (
                        "loadgen",
                        i,
                        g["rps"],
                        g["p50_ms"],
                        g["p99_ms"],
                        g["cpu_cores"],
                        round(server, 3),
                    )
                )
    columns = ["tool", "round", "req/s", "p50 ms", "p99 ms", "tool CPU (cores)"]
    cells = [
        [tool, i, f"{rps:,.0f}", f"{p50:.2f}", f"{p99:.2f}", f"{cpu:.2f}", f"{srv:.2f}"]
        for tool, i, rps, p50, p99, cpu, srv in rows
    ]
    print("\n".join(wrkbench.table([*columns, "engine CPU (cores)"], cells)))
    med = {t: statistics.median(r[2] for r in rows if r[0] == t) for t in ("wrk", "loadgen")}
    print(
        f"\nmedian req/s: wrk {med['wrk']:,.0f}, loadgen {med['loadgen']:,.0f} "
        f"(loadgen/wrk = {med['loadgen'] / med['wrk']:.3f}) at {args.connections} connections"
    )


if __name__ == "__main__":
    main()
