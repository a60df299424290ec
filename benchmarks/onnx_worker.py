"""ONNX worker (ONNX Runtime, no torch) beside a TorchScript worker: memory and c=1 latency.

The same model of benchmarks/workloads.py (mnist, resnet), archived twice, served by one
engine with one worker each; the same JSON tensor request (a random input of the workload's
shape) sent sequentially to each. Memory is read from the worker's /proc: RSS counts the
torch pages a forked worker shares with the forkserver, PSS splits shared pages among the
processes mapping them, so both are printed.

    .venv/bin/python benchmarks/onnx_worker.py [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from workloads import build_model, example_input

from jupyter_torchserve import api
from jupyter_torchserve.deployment import deploy
from jupyter_torchserve.ports import free_port


def _memory_mib(pid: int) -> dict[str, float]:
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    pss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        if line.startswith("Pss:")
    )
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="jts-onnx-bench-")
    os.environ["JUPYTER_RUNTIME_DIR"] = root + "/runtime"
    engine = {
        k: f"http://127.0.0.1:{free_port()}"
        for k in ("inference_address", "management_address", "metrics_address")
    }
    engine["model_store"] = root + "/store"
    results = []
    try:
        for workload in ("mnist", "resnet"):
            model = build_model(workload)
            x = example_input(workload)
            body = json.dumps(torch.randn_like(x).tolist()).encode()
            for fmt in ("torchscript", "onnx"):
                name = f"{workload}_{fmt}"
                deploy(model, name, example=x, format=fmt, progress="none", engine=engine)
                c = api.client()
                for _ in range(10):  # warm-up
                    c.predict(name, body, content_type="application/json")
                took = []
                for _ in range(args.requests):
                    t = time.perf_counter()
                    c.predict(name, body, content_type="application/json")
                    took.append((time.perf_counter() - t) * 1000)
                (worker,) = c.describe(name)[0]["workers"]
                took.sort()
                row = {
                    "workload": workload,
                    "format": fmt,
                    **_memory_mib(int(worker["pid"])),
                    "p50_ms": round(statistics.median(took), 2),
                    "p99_ms": round(took[int(0.99 * (len(took) - 1))], 2),
                    "torch_in_worker": any(
                        "torch" in line
                        for line in Path(f"/proc/{worker['pid']}/maps").read_text().splitlines()
                    ),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
                api.unregister(name)
    finally:
        api.stop()


if __name__ == "__main__":
    main()
