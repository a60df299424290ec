"""gRPC figures: TorchServe's Predictions (ours and TorchServe 0.12's) and KServe v2
ModelInfer (ours; TorchServe answers the standard `inference` package UNIMPLEMENTED), each
beside our REST path for the same call, from one Python load generator.

    python benchmarks/grpc_bench.py --workloads tiny,mnist --duration 5

Per workload and server: p50/p99 at 1 stream (one call at a time) and req/s at 32
concurrent streams (grpc.aio, one channel: HTTP/2 streams, as gRPC clients run), then the
same for REST over keep-alive HTTP/1.1 (1 connection; 32 connections for the c32 point).
The load generator runs in this process; its own CPU time per request is reported, since
on a 2-core machine it competes with the servers. Results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402
    JtsServer,
    TorchServeServer,
    free_port,
    http_call,
    loadavg,
    wait_first_200,
)
from workloads import build_archive, make_payload  # noqa: E402

from jupyter_torchserve.protos.kserve import predict_v2_pb2 as v2  # noqa: E402
from jupyter_torchserve.protos.kserve import predict_v2_pb2_grpc as v2_grpc  # noqa: E402
from jupyter_torchserve.protos.torchserve import inference_pb2 as ts  # noqa: E402
from jupyter_torchserve.protos.torchserve import inference_pb2_grpc as ts_grpc  # noqa: E402


def v2_request(workload: str, name: str) -> Any:
    """tritonclient's shape: raw_input_contents."""
    body, _ = make_payload(workload)
    request = v2.ModelInferRequest(model_name=name)
    if workload == "tiny":
        values = np.asarray(json.loads(body), dtype="<f4")
        request.inputs.add(name="input-0", datatype="FP32", shape=[len(values)])
        request.raw_input_contents.append(values.tobytes())
    else:  # an image: one BYTES element, length-prefixed
        request.inputs.add(name="input-0", datatype="BYTES", shape=[1])
        request.raw_input_contents.append(len(body).to_bytes(4, "little") + body)
    return request


def v2_json(workload: str) -> bytes:
    body, _ = make_payload(workload)
    if workload == "tiny":
        tensor = {"name": "input-0", "datatype": "FP32", "shape": [10], "data": json.loads(body)}
    else:
        import base64

        tensor = {
            "name": "input-0",
            "datatype": "BYTES",
            "shape": [1],
            "data": [base64.b64encode(body).decode()],
        }
    return json.dumps({"inputs": [tensor]}).encode()


async def grpc_point(call: Any, request: Any, streams: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    stop = time.perf_counter() + duration

    async def stream() -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            await call(request)
            latencies.append(time.perf_counter() - t)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(stream() for _ in range(streams)))
    return _summary(latencies, time.perf_counter() - wall, time.process_time() - cpu)


def rest_point(
    port: int, path: str, body: bytes, ctype: str, conns: int, duration: float
) -> dict[str, Any]:
    """Keep-alive HTTP/1.1 from threads (http.client), one connection each."""
    import threading

    latencies: list[float] = []
    stop = time.perf_counter() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: {r.status}")
            latencies.append(time.perf_counter() - t)
        conn.close()

    cpu, wall = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return _summary(latencies, time.perf_counter() - wall, time.process_time() - cpu)


def _summary(latencies: list[float], wall: float, cpu: float) -> dict[str, Any]:
    latencies.sort()
    n = len(latencies)
    return {
        "n": n,
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3),
        "rps": round(n / wall, 1),
        "client_cpu_us_per_req": round(cpu / n * 1e6, 1),
    }


async def bench_grpc(
    address: str, workload: str, name: str, v2_too: bool, duration: float
) -> dict[str, Any]:
    body, _ = make_payload(workload)
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)
        predictions = ts_grpc.InferenceAPIsServiceStub(channel).Predictions
        request = ts.PredictionsRequest(model_name=name, input={"data": body})
        await predictions(request)  # warm-up
        for _ in range(50):
            await predictions(request)
        out["grpc_predictions_c1"] = await grpc_point(predictions, request, 1, duration)
        out["grpc_predictions_c32"] = await grpc_point(predictions, request, 32, duration)
        if v2_too:
            infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            vreq = v2_request(workload, name)
            for _ in range(50):
                await infer(vreq)
            out["grpc_v2_c1"] = await grpc_point(infer, vreq, 1, duration)
            out["grpc_v2_c32"] = await grpc_point(infer, vreq, 32, duration)
    return out


def _wait_ping(port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_call(port, "GET", "/ping", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no /ping answer on {port} within {timeout:.0f} s")


def grpc_port_of(config: Path) -> int:
    return int(re.search(r"grpc_inference_port=(\d+)", config.read_text()).group(1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--servers", default="jts,torchserve")
    p.add_argument("--workloads", default="tiny,mnist")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    p.add_argument(
        "--rest-only",
        action="store_true",
        help="our engine without its gRPC server, REST points only: does serving gRPC on the "
        "same event loop cost the REST path anything?",
    )
    p.add_argument("--tag", default=time.strftime("grpc-%Y%m%d-%H%M%S"))
    args = p.parse_args(argv)
    workloads = args.workloads.split(",")
    result: dict[str, Any] = {
        "tag": args.tag,
        "rest_only": args.rest_only,
        "loadavg_before": loadavg(),
        "points": {},
    }
    with tempfile.TemporaryDirectory(prefix="jts-grpc-bench-") as tmp:
        store = Path(tmp) / "store"
        for w in workloads:
            build_archive(w, store)
        for kind in args.servers.split(","):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            if kind == "jts":
                server: Any = JtsServer(workdir, store)
                port = free_port()
                server.extra_config = {} if args.rest_only else {"grpc_inference_port": port}
            else:
                server = TorchServeServer(workdir, store)
                port = grpc_port_of(server.config)
            server.start(None)
            try:
                _wait_ping(server.inf_port)
                for w in workloads:
                    status, data = server.register(w, 1, 1, 0)
                    if status != 200:
                        raise RuntimeError(f"{kind} register {w}: {status} {data[:300]!r}")
                    body, ctype = make_payload(w)
                    wait_first_200(
                        server.inf_port, f"/predictions/{w}", body, ctype, time.perf_counter()
                    )
                    point = (
                        {}
                        if args.rest_only
                        else asyncio.run(
                            bench_grpc(f"127.0.0.1:{port}", w, w, kind == "jts", args.duration)
                        )
                    )
                    for c in (1, 32):
                        point[f"rest_predictions_c{c}"] = rest_point(
                            server.inf_port, f"/predictions/{w}", body, ctype, c, args.duration
                        )
                        if kind == "jts":
                            point[f"rest_v2_c{c}"] = rest_point(
                                server.inf_port,
                                f"/v2/models/{w}/infer",
                                v2_json(w),
                                "application/json",
                                c,
                                args.duration,
                            )
                    result["points"][f"{kind}/{w}"] = point
                    print(kind, w, json.dumps(point), flush=True)
            finally:
                server.stop()
    result["loadavg_after"] = loadavg()
    out = HERE / "results" / f"{args.tag}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"wrote {out}; load average before {result['loadavg_before']} after {result['loadavg_after']}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
