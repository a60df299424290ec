"""The c=1 serving overhead, measured in turns with the model run in-process beside it.

    python benchmarks/c1_overhead.py --workloads tiny,mnist,resnet --rounds 7

"c1 overhead" (the baseline notes' definition) is a server's p50 at one connection minus the
p50 of the same handler called in a plain process, batch 1, one torch thread. On this VM the
speed of the same work drifts by up to 2x within minutes, so two figures taken minutes apart
can differ by more than the overhead itself. Here one engine (one worker, batch 1, default
settings) and one in-process pipeline stay loaded, and every round measures the engine at
c=1 and then the pipeline, each for a few seconds; the overhead is the median of the
per-round differences. Results go to `benchmarks/results/<tag>.json` and `.md`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (benchmarks/run.py: servers, wrk)
import workloads  # noqa: E402

# The in-process side: load once, then time `seconds` of batch-1 calls on each request line.
PIPELINE = """
import json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, {bench_dir!r})
import torch
torch.set_num_threads(1)
import workloads
pipe = workloads.load_local(Path({archive!r}), Path({workdir!r}))
body, _ = workloads.make_payload({workload!r})
rows = workloads.request_rows({workload!r}, 1, body)
for _ in range(20):
    pipe.run(rows)
print("ready", flush=True)
for line in sys.stdin:
    end = time.perf_counter() + float(line)
    lat = []
    while time.perf_counter() < end:
        t = time.perf_counter()
        pipe.run(rows)
        lat.append(time.perf_counter() - t)
    print(json.dumps({{"p50_ms": statistics.median(lat) * 1000, "calls": len(lat)}}), flush=True)
"""


def measure(workload: str, rounds: int, seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"c1-{workload}-"))
    store = root / "store"
    store.mkdir()
    archive = workloads.build_archive(workload, store)
    body, ctype = workloads.make_payload(workload)
    script = bench.write_lua(root, workload)
    path = f"/predictions/{workload}"
    server = bench.JtsServer(root / "engine", store)
    (root / "engine").mkdir()
    pipeline = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PIPELINE.format(
                bench_dir=str(Path(__file__).resolve().parent),
                archive=str(archive),
                workdir=str(root / "inproc"),
                workload=workload,
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rows: list[dict[str, float]] = []
    try:
        assert pipeline.stdout is not None and pipeline.stdin is not None
        if pipeline.stdout.readline().strip() != "ready":
            raise RuntimeError("the in-process pipeline did not load")
        t0 = time.perf_counter()
        server.start(f"{workload}={workload}.mar")
        bench.wait_first_200(server.inf_port, path, body, ctype, t0)
        url = f"http://127.0.0.1:{server.inf_port}{path}"
        bench.run_wrk(url, script, 1, 2)  # warm-up
        for r in range(rounds):
            served = bench.run_wrk(url, script, 1, seconds)["p50_ms"]
            pipeline.stdin.write(f"{seconds}\n")
            pipeline.stdin.flush()
            local = json.loads(pipeline.stdout.readline())["p50_ms"]
            rows.append({"served_p50_ms": served, "inproc_p50_ms": round(local, 4)})
            bench.log(
                f"  {workload} round {r}: served {served:.3f} ms, in-process {local:.3f} ms, "
                f"overhead {served - local:.3f} ms"
            )
    finally:
        server.stop()
        pipeline.kill()
    return {"rounds": rows}


def markdown(result: dict[str, Any]) -> str:
    intro = (
        f"Run `{result['tag']}`: one engine (1 worker, batch 1) and the in-process pipeline "
        f"(batch 1, 1 torch thread) measured in turns, {result['rounds']} rounds of "
        f"{result['seconds']} s each; {result['machine']}."
    )
    columns = [
        "workload",
        "served p50@c1 ms (median)",
        "in-process p50 ms (median)",
        "overhead ms (median of per-round differences)",
        "per-round overheads ms",
    ]
    table = []
    for wl, res in result["workloads"].items():
        rows = res["rounds"]
        diffs = sorted(r["served_p50_ms"] - r["inproc_p50_ms"] for r in rows)
        served = statistics.median(r["served_p50_ms"] for r in rows)
        local = statistics.median(r["inproc_p50_ms"] for r in rows)
        each = ", ".join(f"{d:.2f}" for d in diffs)
        table.append([wl, f"{served:.3f}", f"{local:.3f}", f"{statistics.median(diffs):.3f}", each])
    return bench.study_markdown(result, intro, columns, table)


def main(argv: list[str] | None = None) -> None:
    p = bench.study_parser(__doc__, "c1-overhead", workloads="tiny,mnist,resnet", rounds=7)
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    a = p.parse_args(argv)
    bench.run_side_study(
        a, lambda wl: measure(wl, a.rounds, a.seconds), markdown, seconds=a.seconds
    )


if __name__ == "__main__":
    main()
