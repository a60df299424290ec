"""How fast a model runs in-process when its calls are not back to back.

    python benchmarks/inproc_gap.py --workload mnist --gaps 0,300,600,1000 --rounds 5

The c1 overhead (`run.py`) compares a server's p50 at one connection with the same pipeline
run back to back in one process. A served model is never called back to back: between two
requests at c=1 there is the round trip through the server and the client, 0.4-1 ms on this
VM. This script runs the in-process pipeline (`workloads.load_local`, one torch thread)
with a busy-wait of `gap` µs after each call (no sleep, no I/O, no other process) and
reports the median per-call time of each block, gaps taken in turn per round so that the
VM's drift lands on all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (the markdown table)
import torch  # noqa: E402
import workloads  # noqa: E402


def block(
    pipeline: workloads.LocalPipeline, body: bytes, workload: str, gap_us: int, n: int
) -> float:
    """Median seconds of one call, over `n` calls each followed by a `gap_us` busy-wait."""
    times = []
    for _ in range(n):
        rows = workloads.request_rows(workload, 1, body)
        start = time.perf_counter()
        pipeline.run(rows)
        end = time.perf_counter()
        times.append(end - start)
        until = end + gap_us / 1e6
        while time.perf_counter() < until:
            pass
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workload", default="mnist")
    p.add_argument("--gaps", default="0,300,600,1000", help="µs of busy-wait after each call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=800, help="calls per block")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="inproc-gap-"))
    archive = workloads.build_archive(a.workload, root / "store")
    pipeline = workloads.load_local(archive, root / "unpacked")
    body, _ = workloads.make_payload(a.workload)
    gaps = [int(g) for g in a.gaps.split(",")]
    block(pipeline, body, a.workload, 0, 300)  # warm-up
    results: dict[int, list[float]] = {g: [] for g in gaps}
    for r in range(a.rounds):
        for gap in gaps if r % 2 == 0 else gaps[::-1]:
            results[gap].append(block(pipeline, body, a.workload, gap, a.calls) * 1000)
    print(f"{a.workload}, 1 torch thread, {a.calls} calls per block, {a.rounds} rounds")
    rows = [
        [gap, f"{statistics.median(values):.3f}", ", ".join(f"{v:.3f}" for v in values)]
        for gap, values in results.items()
    ]
    columns = ["gap after each call µs", "median call ms", "per round ms"]
    print("\n".join(bench.table(columns, rows)))


if __name__ == "__main__":
    main()
