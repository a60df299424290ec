"""Two source trees of the engine side by side: is a change faster, and by how much?

    git clone -q . /tmp/base && git -C /tmp/base checkout -q <commit>
    python benchmarks/ab_trees.py c1 --base /tmp/base --workloads mnist --rounds 30 --duration 1
    python benchmarks/ab_trees.py c1 --route v2 --base /tmp/base --workloads tiny,mnist
    python benchmarks/ab_trees.py cold --base /tmp/base --workloads mnist --rounds 8

"new" is the engine this interpreter imports (the working tree, installed editable); "base"
is the same engine run from another checkout (PYTHONPATH, with the engine's working
directory outside both, so nothing else shadows it). The two trees share the environment,
so they must need the same packages.

This VM drifts by up to 2x within minutes (in-process mnist batch-1 p50 0.8-1.7 ms in one
hour), so two runs minutes apart cannot show a 0.1 ms change. Here the samples are
interleaved instead:
- `c1`: `/predictions`, or with `--route v2` the same request as a KServe v2 `/infer` body
  (`workloads.make_v2_payload`). Both engines run at once (an idle engine sleeps), and
  each round measures each for `--duration` s at one connection, the order flipped every
  round. Reported: the medians, the median of the paired differences (new - base), and in
  how many rounds new was faster.
- `cold`: engine start to the first 200 of a model named at start, base and new in ABBA
  order, one engine at a time.
Raw samples go to `benchmarks/results/<tag>.json`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # noqa: E402  (benchmarks/run.py: servers, wrk, CPU accounting)
import workloads  # noqa: E402

TREES = ("base", "new")


def engine(root: Path, store: Path, tree: str, base: Path) -> bench.JtsServer:
    workdir = Path(tempfile.mkdtemp(prefix=f"{tree}-", dir=root))
    server = bench.JtsServer(workdir, store)
    if tree == "base":
        server.source = base
    return server


def route(workload: str, name: str) -> tuple[str, bytes, str]:
    """(path, body, Content-Type) of one request on `--route`: TorchServe's or KServe v2's."""
    if name == "v2":
        return (f"/v2/models/{workload}/infer", *workloads.make_v2_payload(workload))
    return (f"/predictions/{workload}", *workloads.make_payload(workload))


def measure_c1(workload: str, a: argparse.Namespace, root: Path) -> dict[str, Any]:
    store = root / "store"
    path, body, ctype = route(workload, a.route)
    script = bench.write_lua(root, workload, (body, ctype))
    servers = {tree: engine(root, store, tree, a.base) for tree in TREES}
    samples: dict[str, dict[str, list[float]]] = {t: {"p50_ms": [], "cpu_ms": []} for t in TREES}
    try:
        for server in servers.values():
            t0 = time.perf_counter()
            server.start(f"{workload}={workload}.mar")
            bench.wait_first_200(server.inf_port, path, body, ctype, t0)
            bench.run_wrk(f"http://127.0.0.1:{server.inf_port}{path}", script, 1, 2)  # warm-up
        for r in range(a.rounds):
            for tree in TREES if r % 2 == 0 else TREES[::-1]:
                server = servers[tree]
                url = f"http://127.0.0.1:{server.inf_port}{path}"
                res = bench.run_wrk(url, script, 1, a.duration, server.root_pid)
                samples[tree]["p50_ms"].append(res["p50_ms"])
                samples[tree]["cpu_ms"].append(res["server_cpu_ms_per_req"])
    finally:
        for server in servers.values():
            server.stop()
    return samples


def measure_cold(workload: str, a: argparse.Namespace, root: Path) -> dict[str, Any]:
    store = root / "store"
    body, ctype = workloads.make_payload(workload)
    path = f"/predictions/{workload}"
    samples: dict[str, dict[str, list[float]]] = {t: {"cold_s": []} for t in TREES}
    for i in range(2 * a.rounds):
        tree = TREES[(i + i // 2) % 2]  # base new new base base new ...
        server = engine(root, store, tree, a.base)
        try:
            t0 = time.perf_counter()
            server.start(f"{workload}={workload}.mar")
            samples[tree]["cold_s"].append(
                bench.wait_first_200(server.inf_port, path, body, ctype, t0)
            )
        finally:
            server.stop()
        time.sleep(0.5)
    return samples


def summary(samples: dict[str, dict[str, list[float]]], key: str) -> dict[str, Any]:
    base, new = samples["base"][key], samples["new"][key]
    diffs = [n - b for b, n in zip(base, new, strict=True)]
    return {
        "base_median": statistics.median(base),
        "new_median": statistics.median(new),
        "paired_median": statistics.median(diffs),
        "new_lower": sum(d < 0 for d in diffs),
        "pairs": len(diffs),
    }


def markdown(result: dict[str, Any]) -> str:
    unit = {"p50_ms": "ms", "cpu_ms": "ms", "cold_s": "s"}
    intro = (
        f"Run `{result['tag']}` ({result['mode']}, {result.get('route', 'predictions')}): "
        f"base `{result['base']}` "
        f"({result['base_commit']}) against new ({result['new_commit']}), {result['rounds']} "
        f"rounds, {result['machine']}."
    )
    columns = ["workload", "measure", "base median", "new median"]
    columns += ["paired median (new - base)", "new lower in"]
    rows = []
    for wl, samples in result["workloads"].items():
        for key in samples["base"]:
            s = summary(samples, key)
            u = unit[key]
            rows.append(
                [
                    wl,
                    key,
                    f"{s['base_median']:.3f} {u}",
                    f"{s['new_median']:.3f} {u}",
                    f"{s['paired_median']:+.3f} {u}",
                    f"{s['new_lower']}/{s['pairs']}",
                ]
            )
    return bench.study_markdown(result, intro, columns, rows)


def commit_of(tree: Path) -> str:
    head = tree / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (tree / ".git" / ref[5:]).read_text().strip()
        return ref[:7]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> None:
    p = bench.study_parser(__doc__, "ab", workloads="mnist", rounds=20)
    p.add_argument("mode", choices=["c1", "cold"])
    p.add_argument("--base", type=Path, required=True, help="the other checkout (its root)")
    p.add_argument("--duration", type=float, default=1.0, help="seconds per wrk point (c1)")
    p.add_argument(
        "--route", choices=["predictions", "v2"], default="predictions", help="what c1 calls"
    )
    a = p.parse_args(argv)
    a.base = a.base.resolve()
    if not (a.base / "jupyter_torchserve" / "__main__.py").is_file():
        p.error(f"{a.base} is not a checkout of this repository")
    measure = measure_c1 if a.mode == "c1" else measure_cold

    def one(wl: str) -> dict[str, Any]:
        root = Path(tempfile.mkdtemp(prefix=f"ab-{wl}-"))
        workloads.build_archive(wl, root / "store")
        return measure(wl, a, root)

    bench.run_side_study(
        a,
        one,
        markdown,
        mode=a.mode,
        route=a.route,
        base=str(a.base),
        base_commit=commit_of(a.base),
        new_commit=commit_of(Path(__file__).resolve().parent.parent),
    )


if __name__ == "__main__":
    main()
