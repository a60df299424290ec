"""What busy-polling (`busy_poll_us`) buys and costs: engines side by side, measured in turns.

    python benchmarks/busy_poll.py --workloads tiny,mnist --values 0,300 --rounds 6 [--config w2-b8]

One engine per `busy_poll_us` value runs at the same time (an idle engine sleeps, so they do
not disturb each other); each round measures every engine in turn, so a noisy neighbour on
the VM lands on all of them alike. Per engine and round: p50@c1 and the server tree's CPU
per request at c1 (what polling costs), then req/s and CPU per request at c8 and c32 (that
it does not get in the way under load). Medians over the rounds are reported; every value is
kept in `benchmarks/results/<tag>.json`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (benchmarks/run.py: servers, wrk, CPU accounting)
import workloads  # noqa: E402


def measure(
    workload: str, values: list[int], rounds: int, duration: float, config: str, delay_ms: int
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"busypoll-{workload}-"))
    store = root / "store"
    store.mkdir()
    workloads.build_archive(workload, store)
    body, ctype = workloads.make_payload(workload)
    script = bench.write_lua(root, workload)
    path = f"/predictions/{workload}"
    servers: dict[int, bench.JtsServer] = {}
    samples: dict[int, list[dict[str, Any]]] = {v: [] for v in values}
    try:
        for v in values:
            workdir = root / f"poll-{v}"
            workdir.mkdir()
            server = bench.JtsServer(workdir, store)
            server.extra_config = {"busy_poll_us": v}
            t0 = time.perf_counter()
            server.start(f"{workload}={workload}.mar")
            bench.wait_first_200(server.inf_port, path, body, ctype, t0)
            workers, batch = bench.parse_config(config)
            if (workers, batch) != (1, 1):
                server.unregister(workload)
                status, data = server.register(
                    workload, workers, batch, delay_ms if batch > 1 else 0
                )
                if status not in (200, 202):
                    raise RuntimeError(f"register {config}: {status} {data[:300]!r}")
                bench.wait_first_200(server.inf_port, path, body, ctype, time.perf_counter())
            servers[v] = server
            url = f"http://127.0.0.1:{server.inf_port}{path}"
            bench.run_wrk(url, script, 8, 2)  # warm-up
        for r in range(rounds):
            for v, server in servers.items():
                url = f"http://127.0.0.1:{server.inf_port}{path}"
                pid = server.root_pid
                row = {"round": r}
                for c in (1, 8, 32):
                    res = bench.run_wrk(url, script, c, duration, pid)
                    row[f"c{c}"] = {
                        k: res[k] for k in ("p50_ms", "p99_ms", "rps", "server_cpu_ms_per_req")
                    }
                samples[v].append(row)
                c1 = row["c1"]
                bench.log(
                    f"  {workload} {config} busy_poll_us={v} round {r}: p50@c1 {c1['p50_ms']:.3f} ms, "
                    f"CPU/req@c1 {c1['server_cpu_ms_per_req']:.3f} ms, "
                    f"c32 {row['c32']['rps']:.0f}/s"
                )
    finally:
        for server in servers.values():
            server.stop()
    return {str(v): samples[v] for v in values}


def median(rows: list[dict[str, Any]], c: str, key: str) -> float:
    return statistics.median(row[c][key] for row in rows)


def markdown(result: dict[str, Any]) -> str:
    intro = (
        f"Run `{result['tag']}`: {result['config']}, {result['rounds']} rounds, "
        f"{result['duration']} s per point, "
        f"{result['machine']}; medians over the rounds."
    )
    columns = ["workload", "busy_poll_us", "p50@c1 ms", "CPU ms/req @c1", "rps@c8"]
    columns += ["CPU ms/req @c8", "rps@c32", "CPU ms/req @c32"]
    table = []
    for wl, by_value in result["workloads"].items():
        for v, rows in by_value.items():
            cells = [wl, v, f"{median(rows, 'c1', 'p50_ms'):.3f}"]
            cells.append(f"{median(rows, 'c1', 'server_cpu_ms_per_req'):.3f}")
            for c in ("c8", "c32"):  # throughput, and its CPU cost
                cells.append(f"{median(rows, c, 'rps'):,.0f}")
                cells.append(f"{median(rows, c, 'server_cpu_ms_per_req'):.3f}")
            table.append(cells)
    return bench.study_markdown(result, intro, columns, table)


def main(argv: list[str] | None = None) -> None:
    p = bench.study_parser(__doc__, "busypoll", workloads="tiny,mnist", rounds=6)
    p.add_argument("--values", default="0,300", help="busy_poll_us values, one engine each")
    p.add_argument("--config", default="w1-b1", help="workers and batch size, as in run.py")
    p.add_argument("--batch-delay", type=int, default=5, help="max_batch_delay (ms) if batch > 1")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk point")
    a = p.parse_args(argv)
    values = [int(v) for v in a.values.split(",")]
    bench.run_side_study(
        a,
        lambda wl: measure(wl, values, a.rounds, a.duration, a.config, a.batch_delay),
        markdown,
        duration=a.duration,
        config=a.config,
    )


if __name__ == "__main__":
    main()
