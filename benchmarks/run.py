"""Side-by-side benchmark: jupyter_torchserve vs TorchServe 0.12 on the same archives.

    python benchmarks/run.py --servers jts,torchserve --workloads tiny,mnist,resnet --duration 10

For every server and workload it builds one `.mar` (torch-model-archiver 0.12 layout, see
workloads.py) that both servers load, then:

* cold start: server start (process spawn) to the first 200 from a model named at start-up;
* for each workers/batch config: unregister, register (time to the first 200 = "register"),
  warm up, PSS of the server process tree, then `wrk` (closed loop, keep-alive, one thread,
  a Lua script that POSTs the body file) at 1, 8 and 32 connections: p50/p99 at c1, req/s at
  every c, server-tree CPU time per request and PSS during c32;
* the in-process limit: the same handler + `json.dumps` in plain processes (1 proc x 1 or 2
  torch threads, 2 procs x 1 thread) at batch 1/8/32, best items/s; and the batch-1
  p50 (1 torch thread, as the baseline notes define it; the faster of 1 and 2 threads is
  reported beside it);
* right after each c1 point, the in-process batch-1 p50 (1 thread) again, which that point's
  c1 overhead is measured against (the VM's speed drifts within minutes).

Results go to `benchmarks/results/<tag>.json` and `.md`. Every server is started in its own
session with private temp/state directories on free 127.0.0.1 ports, and stopped (then its
process group killed) before the next one starts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from jupyter_torchserve.launcher import start_engine, stop_engine
from jupyter_torchserve.ports import free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402

DEFAULT_CONFIGS = {
    "tiny": ["w1-b1", "w1-b8"],
    "mnist": ["w1-b1", "w1-b8", "w2-b8"],
    "resnet": ["w1-b1", "w1-b8", "w2-b8"],
}
# the venv that `make test` builds with scripts/torchserve-venv.sh (TorchServe 0.12, no jupyter_torchserve)
TS_VENV = Path(os.environ.get("TS_VENV", Path(__file__).resolve().parents[1] / ".torchserve-venv"))


# -- small helpers -----------------------------------------------------------------------------
def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average: {loadavg()}"


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    ctype: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_first_200(
    port: int, path: str, body: bytes, ctype: str, t0: float, deadline_s: float = 180.0
) -> float:
    """Seconds from `t0` (perf_counter) to the first 200 of POST `path`; polls every 10 ms."""
    last = ""
    while time.perf_counter() - t0 < deadline_s:
        try:
            status, data = http_call(port, "POST", path, body, ctype, timeout=10)
            if status == 200:
                return time.perf_counter() - t0
            last = f"{status} {data[:200]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.01)
    raise RuntimeError(f"no 200 from {path} within {deadline_s:.0f} s (last: {last})")


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory(pid: int) -> dict[str, float]:
    pss = rss = 0
    n = 0
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            m = p.memory_full_info()
            pss += m.pss
            rss += m.rss
            n += 1
    return {"pss_mb": round(pss / 2**20, 1), "rss_mb": round(rss / 2**20, 1), "processes": n}


def tree_cpu(pid: int) -> dict[int, float]:
    out = {}
    for p in tree(pid):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples by processes alive at the second one."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


# -- wrk -----------------------------------------------------------------------------------------
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{ctype}"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSONRESULT {{"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read,
    e.write, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def write_lua(workdir: Path, workload: str, payload: tuple[bytes, str] | None = None) -> Path:
    """wrk's script POSTing `payload` (body, Content-Type), by default the workload's own."""
    body, ctype = payload or workloads.make_payload(workload)
    tag = f"{workload}-{hashlib.sha1(body).hexdigest()[:8]}" if payload else workload
    body_path = workdir / f"{tag}.body"
    body_path.write_bytes(body)
    script = workdir / f"{tag}.lua"
    script.write_text(LUA.format(ctype=ctype, body=body_path))
    return script


def run_wrk(
    url: str, script: Path, connections: int, duration: float, server_pid: int | None = None
) -> dict[str, Any]:
    """One closed-loop wrk run; with `server_pid`, also server-tree CPU and mid-run PSS."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    load_before = loadavg()
    cpu0 = tree_cpu(server_pid) if server_pid else {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = None
    if server_pid:
        time.sleep(duration / 2)
        mem = tree_memory(server_pid)
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    cpu1 = tree_cpu(server_pid) if server_pid else {}
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    line = next((ln for ln in out.splitlines() if ln.startswith("JSONRESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()} {out[-500:]}")
    r = json.loads(line.split(" ", 1)[1])
    secs = r["duration_us"] / 1e6
    res: dict[str, Any] = {
        "connections": connections,
        "requests": r["requests"],
        "rps": round(r["requests"] / secs, 1),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "mean_ms": round(r["mean_us"] / 1000, 3),
        "max_ms": r["max_us"] / 1000,
        "errors": {
            k: r[k]
            for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
        },
        "wrk_cpu_cores": round((rusage.ru_utime + rusage.ru_stime) / wall, 3),
        "load_before": load_before,
    }
    if server_pid:
        cpu = cpu_delta(cpu0, cpu1)
        res["server_cpu_cores"] = round(cpu / wall, 3)
        res["server_cpu_ms_per_req"] = round(cpu * 1000 / max(1, r["requests"]), 3)
        res["memory"] = mem
    return res


# -- servers -------------------------------------------------------------------------------------
class Server:
    kind = ""

    def __init__(self, workdir: Path, store: Path) -> None:
        self.workdir = workdir
        self.store = store
        self.inf_port = free_port()
        self.mgmt_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None

    @property
    def root_pid(self) -> int:
        raise NotImplementedError

    def start(self, models: str | None) -> None:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def _launch(self, cmd: list[str], log_name: str) -> None:
        """In its own session, so `_killpg` takes the server and all it started."""
        self.log = open(self.workdir / log_name, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
            cwd=self.workdir,
        )
        self.pgid = self.proc.pid

    def stop(self) -> None:
        """The server's own stop command first, then its whole session killed (what it
        started and left behind), so the next server starts on a quiet machine."""
        if self.proc is None:
            return
        self._ask_to_stop()
        self._killpg()
        self.log.close()
        self.proc = None

    def _ask_to_stop(self) -> None:
        raise NotImplementedError

    def _killpg(self) -> None:
        if self.pgid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def register(self, name: str, workers: int, batch: int, delay_ms: int) -> tuple[int, bytes]:
        q = (
            f"url={name}.mar&model_name={name}&initial_workers={workers}"
            f"&batch_size={batch}&max_batch_delay={delay_ms}&synchronous=true"
        )
        return http_call(self.mgmt_port, "POST", f"/models?{q}", timeout=180)

    def unregister(self, name: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            status, data = http_call(self.mgmt_port, "DELETE", f"/models/{name}", timeout=60)
            # TorchServe refuses a DELETE while its workers are still busy from the last load
            if b"ConcurrentModificationException" not in data or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if status not in (200, 202, 404):
            raise RuntimeError(f"unregister {name}: {status} {data[:300]!r}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, _ = http_call(self.mgmt_port, "GET", f"/models/{name}")
            if status == 404:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} still registered 60 s after DELETE")

    def worker_env(self) -> dict[str, str]:
        return {}


class JtsServer(Server):
    kind = "jts"
    label = "jupyter_torchserve"
    extra_config: dict[str, Any] = {}  # EngineConfig values (--jts-config)
    source: Path | None = None  # another checkout to run the engine from (ab_trees.py)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
            "JUPYTER_DATA_DIR": str(self.workdir / "data"),
            "PYTHONUNBUFFERED": "1",
        }
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        return env

    @property
    def root_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, models: str | None) -> None:
        cmd = [
            sys.executable,
            "-m",
            "jupyter_torchserve",
            "start",
            "--foreground",
            f"--model-store={self.store}",
            f"--inference-address=http://127.0.0.1:{self.inf_port}",
            f"--management-address=http://127.0.0.1:{self.mgmt_port}",
            f"--metrics-address=http://127.0.0.1:{self.metrics_port}",
            f"--state-dir={self.workdir / 'state'}",
            "--disable-token-auth",
            "--ncs",
        ]
        if models:
            cmd.append(f"--models={models}")
        if self.extra_config:
            cmd.append("--config-json=" + json.dumps(self.extra_config))
        self._launch(cmd, "engine.out")

    def _ask_to_stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-m", "jupyter_torchserve", "stop"],
                env=self.env(),
                capture_output=True,
                timeout=40,
            )
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)


class TorchServeServer(Server):
    kind = "torchserve"
    label = "TorchServe 0.12"
    extra_env: dict[str, str] = {}  # e.g. OMP_NUM_THREADS for its workers (--ts-env)

    def __init__(self, workdir: Path, store: Path) -> None:
        super().__init__(workdir, store)
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "config.properties"
        self.config.write_text(
            "\n".join(
                [
                    f"inference_address=http://127.0.0.1:{self.inf_port}",
                    f"management_address=http://127.0.0.1:{self.mgmt_port}",
                    f"metrics_address=http://127.0.0.1:{self.metrics_port}",
                    f"grpc_inference_port={free_port()}",
                    f"grpc_management_port={free_port()}",
                    f"model_store={store}",
                    "disable_token_authorization=true",
                    "enable_model_api=true",
                    "metrics_mode=prometheus",
                    "default_workers_per_model=1",
                    "install_py_dep_per_model=false",
                    "",
                ]
            )
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TMPDIR": str(self.tmp),
            "TEMP": str(self.tmp),
            "PATH": f"{TS_VENV / 'bin'}:{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(TS_VENV),
            **self.extra_env,
        }

    @property
    def root_pid(self) -> int:
        pid_file = self.tmp / ".model_server.pid"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                return int(pid_file.read_text().strip())
            time.sleep(0.02)
        raise RuntimeError(f"TorchServe wrote no pid file at {pid_file}")

    def start(self, models: str | None) -> None:
        cmd = [
            str(TS_VENV / "bin" / "torchserve"),
            "--start",
            "--ncs",
            f"--model-store={self.store}",
            f"--ts-config={self.config}",
        ]
        if models:
            cmd += ["--models", models]
        # the launcher execs java and exits; java keeps this session's process group
        self._launch(cmd, "torchserve.out")

    def _ask_to_stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [str(TS_VENV / "bin" / "torchserve"), "--stop"],
                env=self.env(),
                cwd=self.workdir,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                timeout=60,
            )
        time.sleep(0.5)

    def worker_env(self) -> dict[str, str]:
        """OMP/MKL thread settings TorchServe gave its Python workers."""
        out = {}
        for p in tree(self.root_pid)[1:]:
            with contextlib.suppress(psutil.Error):
                env = p.environ()
                for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                    if k in env:
                        out[k] = env[k]
        return out


SERVERS = {"jts": JtsServer, "torchserve": TorchServeServer}


# -- in-process limit ------------------------------------------------------------------------
def inproc_main(argv: list[str]) -> None:
    """Child process: time the local pipeline at each batch size in fixed wall-clock slots."""
    p = argparse.ArgumentParser()
    p.add_argument("--archive", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--workload", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--phase", type=float, default=2.0)
    p.add_argument("--start-at", type=float, required=True)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    pipe = workloads.load_local(Path(a.archive), Path(a.workdir))
    body, _ = workloads.make_payload(a.workload)
    out: dict[str, Any] = {"threads": a.threads, "items_per_s": {}}
    slot = a.phase + 0.3
    for i, b in enumerate(int(x) for x in a.batches.split(",")):
        rows = workloads.request_rows(a.workload, b, body)
        for _ in range(3):
            pipe.run(rows)  # warm
        begin = a.start_at + i * slot
        while time.time() < begin:
            time.sleep(0.001)
        end = begin + a.phase
        lat = []
        items = 0
        t0 = time.perf_counter()
        while time.time() < end:
            t = time.perf_counter()
            pipe.run(rows)
            lat.append(time.perf_counter() - t)
            items += b
        secs = time.perf_counter() - t0
        out["items_per_s"][str(b)] = round(items / secs, 1)
        if b == 1:
            out["p50_b1_ms"] = round(statistics.median(lat) * 1000, 4)
    print("JSONRESULT " + json.dumps(out), flush=True)


def inprocess_limit(archive: Path, workload: str, workdir: Path, phase: float) -> dict[str, Any]:
    """Best items/s of the local pipeline over {1p x 1t, 1p x 2t, 2p x 1t} x batch {1,8,32}."""
    layouts = {"1proc-1thread": (1, 1), "1proc-2threads": (1, 2), "2procs-1thread": (2, 1)}
    results: dict[str, Any] = {"layouts": {}, "load_before": loadavg()}
    for label, (procs, threads) in layouts.items():
        start_at = time.time() + 8.0  # after every child has imported torch and loaded
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_inproc",
                    f"--archive={archive}",
                    f"--workdir={workdir / f'{label}-{i}'}",
                    f"--workload={workload}",
                    f"--threads={threads}",
                    f"--phase={phase}",
                    f"--start-at={start_at}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(procs)
        ]
        outs = []
        for c in children:
            stdout, _ = c.communicate(timeout=120)
            line = next(ln for ln in stdout.splitlines() if ln.startswith("JSONRESULT "))
            outs.append(json.loads(line.split(" ", 1)[1]))
        batches = outs[0]["items_per_s"].keys()
        results["layouts"][label] = {
            "items_per_s": {b: round(sum(o["items_per_s"][b] for o in outs), 1) for b in batches},
            "p50_b1_ms": outs[0].get("p50_b1_ms"),
        }
    best = max(
        ((lab, b, v) for lab, r in results["layouts"].items() for b, v in r["items_per_s"].items()),
        key=lambda t: t[2],
    )
    results["limit_items_per_s"] = best[2]
    results["limit_from"] = f"{best[0]} batch {best[1]}"
    results["p50_b1_1thread_ms"] = results["layouts"]["1proc-1thread"]["p50_b1_ms"]
    results["p50_b1_2threads_ms"] = results["layouts"]["1proc-2threads"]["p50_b1_ms"]
    return results


def adjacent_inproc_p50(archive: Path, workload: str, workdir: Path, phase: float = 3.0) -> float:
    """The in-process batch-1 p50 (1 torch thread) measured right now, beside a server's c1
    point: this VM's speed drifts by 2x within minutes, so an overhead taken against the
    limit phase's figure (minutes earlier) can be off by more than the overhead itself."""
    child = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "_inproc",
            f"--archive={archive}",
            f"--workdir={workdir}",
            f"--workload={workload}",
            "--threads=1",
            "--batches=1",
            f"--phase={phase}",
            f"--start-at={time.time()}",  # as soon as it has loaded
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    line = next(ln for ln in child.stdout.splitlines() if ln.startswith("JSONRESULT "))
    return json.loads(line.split(" ", 1)[1])["p50_b1_ms"]


# -- one server x one workload ---------------------------------------------------------------
def parse_config(text: str) -> tuple[int, int]:
    w, b = text.lower().split("-")
    return int(w.lstrip("w")), int(b.lstrip("b"))


def bench_server_workload(
    kind: str,
    workload: str,
    configs: list[str],
    args: argparse.Namespace,
    root: Path,
    store: Path,
) -> dict[str, Any]:
    body, ctype = workloads.make_payload(workload)
    workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-{workload}-", dir=root))
    script = write_lua(workdir, workload)
    server = SERVERS[kind](workdir, store)
    out: dict[str, Any] = {"server": kind, "workload": workload, "configs": {}}
    path = f"/predictions/{workload}"
    url = f"http://127.0.0.1:{server.inf_port}{path}"
    try:
        out["cold_start_load_before"] = loadavg()
        t0 = time.perf_counter()
        server.start(f"{workload}={workload}.mar")
        out["cold_start_s"] = round(wait_first_200(server.inf_port, path, body, ctype, t0), 3)
        log(f"  {kind} {workload}: cold start {out['cold_start_s']:.2f} s")
        pid = server.root_pid
        for cfg in configs:
            workers, batch = parse_config(cfg)
            delay = args.batch_delay if batch > 1 else 0
            server.unregister(workload)
            time.sleep(0.5)
            t0 = time.perf_counter()
            status, data = server.register(workload, workers, batch, delay)
            if status not in (200, 202):
                raise RuntimeError(f"register {cfg}: {status} {data[:300]!r}")
            reg = wait_first_200(server.inf_port, path, body, ctype, t0)
            res: dict[str, Any] = {
                "workers": workers,
                "batch_size": batch,
                "max_batch_delay_ms": delay,
                "register_to_first_200_s": round(reg, 3),
            }
            run_wrk(url, script, 8, args.warmup)  # warm-up, not recorded
            time.sleep(0.3)
            res["memory_idle"] = tree_memory(pid)
            res["worker_env"] = server.worker_env()
            for c in args.connections:
                r = run_wrk(
                    url, script, c, args.duration, pid if c == max(args.connections) else None
                )
                res[f"c{c}"] = r
                if c == 1 and not args.no_limit:
                    res["c1_inproc_p50_ms"] = adjacent_inproc_p50(
                        store / f"{workload}.mar", workload, workdir / f"inproc-{cfg}"
                    )
                bad = sum(r["errors"].values())
                if bad:
                    res.setdefault("warnings", []).append(f"c{c}: {r['errors']}")
            out["configs"][cfg] = res
            c1, cmax = res[f"c{args.connections[0]}"], res[f"c{max(args.connections)}"]
            log(
                f"  {kind} {workload} {cfg}: register {reg:.2f} s, p50@c1 {c1['p50_ms']:.2f} ms "
                f"(in-process beside it {res.get('c1_inproc_p50_ms')} ms), "
                + ", ".join(f"c{c} {res[f'c{c}']['rps']:.0f}/s" for c in args.connections)
                + f", {cmax.get('server_cpu_ms_per_req')} CPU ms/req, "
                f"PSS idle {res['memory_idle']['pss_mb']:.0f} MB, load {loadavg()}"
            )
    finally:
        server.stop()
    out["load_after"] = loadavg()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


# -- report --------------------------------------------------------------------------------------
def fmt(x: float | None, nd: int = 2) -> str:
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def markdown(result: dict[str, Any]) -> str:
    conns = result["args"]["connections"]
    cmax = max(conns)
    lines = [
        f"Run `{result['tag']}` on {result['machine']['cpu']} ({result['machine']['cores']} cores), "
        f"{result['args']['duration']} s per point, wrk -t1; batch delay {result['args']['batch_delay']} ms "
        "where batch > 1.",
        uptime_span(result),
        "",
        "### In-process limit (same handler + `json.dumps`, no server)",
        "",
    ]
    lines += table(
        [
            "workload",
            "limit items/s",
            "from",
            "p50 batch-1 1 thread ms",
            "p50 batch-1 2 threads ms",
        ],
        (
            [
                wl,
                fmt(lim["limit_items_per_s"], 0),
                lim["limit_from"],
                fmt(lim["p50_b1_1thread_ms"], 3),
                fmt(lim["p50_b1_2threads_ms"], 3),
            ]
            for wl, lim in result["limits"].items()
        ),
    )
    lines += ["", "### Servers", ""]
    servers = [
        "workload",
        "server",
        "config",
        "p50 / p99 @c1 ms",
        "c1 overhead ms (vs in-process b1, 1 thread, measured beside it)",
        *(f"rps@c{c}" for c in conns[1:]),
        f"ratio c{cmax}",
        "register→200 s",
        "PSS idle (RSS) MB",
        f"PSS @c{cmax} MB",
        f"CPU ms/req @c{cmax}",
        "load (1 min)",
    ]
    rows: list[list[str]] = []
    for run in result["runs"]:
        wl = run["workload"]
        lim = result["limits"].get(wl, {})
        for cfg, r in run["configs"].items():
            base = r.get("c1_inproc_p50_ms", inproc_p50(lim))
            c1 = r[f"c{conns[0]}"]
            top = r[f"c{cmax}"]
            ratio = top["rps"] / lim["limit_items_per_s"] if lim else None
            delay = f" ({r['max_batch_delay_ms']} ms)" if r["batch_size"] > 1 else ""
            warn = " ⚠" if r.get("warnings") else ""
            rows.append(
                [
                    wl,
                    SERVERS[run["server"]].label,
                    f"{cfg}{delay}{warn}",
                    f"{fmt(c1['p50_ms'])} / {fmt(c1['p99_ms'])}",
                    fmt(c1["p50_ms"] - base) if base is not None else "–",
                    *(fmt(r[f"c{c}"]["rps"], 0) for c in conns[1:]),
                    fmt(ratio),
                    fmt(r["register_to_first_200_s"]),
                    f"{fmt(r['memory_idle']['pss_mb'], 0)} ({fmt(r['memory_idle']['rss_mb'], 0)})",
                    fmt(top["memory"]["pss_mb"], 0),
                    fmt(top["server_cpu_ms_per_req"], 3),
                    top["load_before"][0],
                ]
            )
    lines += table(servers, rows)
    lines += ["", "### Cold start (server start to first 200, model named at start, 1 worker)", ""]
    cold = []
    for wl in result["args"]["workloads"]:
        cells = [wl]
        for s in result["args"]["servers"]:
            run = next(
                (r for r in result["runs"] if r["server"] == s and r["workload"] == wl), None
            )
            cells.append(f"{fmt(run['cold_start_s'])} s" if run else "–")
        cold.append(cells)
    lines += table(["workload", *(SERVERS[s].label for s in result["args"]["servers"])], cold)
    if result.get("targets"):
        lines += ["", "### Targets (issue 2)", ""]
        lines += table(
            ["target", "measured", "met?"],
            (
                [t["target"], t["measured"], "met" if t["met"] else "NOT met"]
                for t in result["targets"]
            ),
        )
    return "\n".join(lines) + "\n"


def inproc_p50(lim: dict[str, Any], strict: bool = False) -> float | None:
    """The in-process batch-1 p50 a server's c1 latency is compared with.

    By default the single-thread pipeline's, as the baseline notes define "c1 overhead"
    (and jupyter_torchserve's one worker runs one torch thread on 2 cores). `strict` takes
    the faster of 1 and 2 threads instead, which also charges a worker for the thread it
    leaves to the HTTP side; both are reported."""
    if not strict:
        return lim.get("p50_b1_1thread_ms")
    vals = [lim.get("p50_b1_1thread_ms"), lim.get("p50_b1_2threads_ms")]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    conns = result["args"]["connections"]
    c1k, cmk = f"c{conns[0]}", f"c{max(conns)}"
    runs = {(r["server"], r["workload"]): r for r in result["runs"]}
    limits = result["limits"]
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool) -> None:
        out.append({"target": target, "measured": measured, "met": bool(met)})

    def best(server: str, wl: str, key: str) -> tuple[str, float] | None:
        run = runs.get((server, wl))
        if not run:
            return None
        if key == "p50":
            cfg = min(run["configs"], key=lambda c: run["configs"][c][c1k]["p50_ms"])
            return cfg, run["configs"][cfg][c1k]["p50_ms"]
        cfg = max(run["configs"], key=lambda c: run["configs"][c][cmk]["rps"])
        return cfg, run["configs"][cfg][cmk]["rps"]

    if ("jts", "tiny") in runs:
        cfg, p50 = best("jts", "tiny", "p50")  # type: ignore[misc]
        add("tiny p50@c1 ≤ 0.35 ms", f"{p50:.3f} ms ({cfg})", p50 <= 0.35)
    for wl in result["args"]["workloads"]:
        if ("jts", wl) in runs and wl in limits:
            cfg, p50 = best("jts", wl, "p50")  # type: ignore[misc]
            beside = runs[("jts", wl)]["configs"][cfg].get("c1_inproc_p50_ms")
            base = beside if beside is not None else inproc_p50(limits[wl])
            over = p50 - base
            strict = p50 - inproc_p50(limits[wl], strict=True)
            add(
                f"{wl} c1 overhead (p50@c1 − in-process 1 thread) ≤ 0.3 ms",
                f"{over:.3f} ms ({cfg}; in-process {base:.3f} ms "
                + ("measured beside it" if beside is not None else "from the limit phase")
                + f"; {strict:.3f} against the limit phase's faster of 1 and 2 threads)",
                over <= 0.3,
            )
    if ("jts", "tiny") in runs and ("torchserve", "tiny") in runs:
        cj, rj = best("jts", "tiny", "rps")  # type: ignore[misc]
        ct, rt = best("torchserve", "tiny", "rps")  # type: ignore[misc]
        add(
            f"tiny rps@{cmk} ≥ 1.5× TorchServe",
            f"{rj:,.0f} ({cj}) vs {rt:,.0f} ({ct}) = {rj / rt:.2f}×",
            rj >= 1.5 * rt,
        )
    for wl, goal in (("mnist", 0.60), ("resnet", 0.90)):
        if ("jts", wl) in runs and wl in limits:
            cfg, rps = best("jts", wl, "rps")  # type: ignore[misc]
            ratio = rps / limits[wl]["limit_items_per_s"]
            add(
                f"{wl} rps@{cmk} ≥ {goal:.2f} of in-process limit",
                f"{ratio:.2f} ({rps:,.0f} / {limits[wl]['limit_items_per_s']:,.0f}, {cfg})",
                ratio >= goal,
            )
    for wl in result["args"]["workloads"]:
        run = runs.get(("jts", wl))
        if run and "w1-b1" in run["configs"] and "w1-b8" in run["configs"]:
            a = run["configs"]["w1-b1"][c1k]["p50_ms"]
            b = run["configs"]["w1-b8"][c1k]["p50_ms"]
            add(
                f"{wl}: no batch-delay penalty at c1 (w1-b8 p50 within max(10 %, 0.05 ms) of w1-b1)",
                f"{b:.3f} vs {a:.3f} ms",
                b - a <= max(0.1 * a, 0.05),
            )
    if ("jts", "mnist") in runs:
        run = runs[("jts", "mnist")]
        add(
            "engine start to first 200 (preloaded mnist) ≤ 2.0 s",
            f"{run['cold_start_s']:.2f} s",
            run["cold_start_s"] <= 2.0,
        )
        if "w1-b1" in run["configs"]:
            r = run["configs"]["w1-b1"]
            add(
                "register on a running engine to first 200 (mnist, 1 worker) ≤ 0.3 s",
                f"{r['register_to_first_200_s']:.3f} s",
                r["register_to_first_200_s"] <= 0.3,
            )
            add(
                "engine + one mnist worker ≤ 300 MB PSS",
                f"{r['memory_idle']['pss_mb']:.0f} MB idle, {r[cmk]['memory']['pss_mb']:.0f} MB @{cmk}",
                max(r["memory_idle"]["pss_mb"], r[cmk]["memory"]["pss_mb"]) <= 300,
            )
    return out


def study_parser(doc: str | None, tag: str, workloads: str, rounds: int) -> argparse.ArgumentParser:
    """The options every side study has: --workloads, --rounds, and --tag (its result files,
    ``results/<tag>.json`` and ``.md``; by default ``<tag>-<date>-<time>``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workloads", default=workloads)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--tag", default=time.strftime(f"{tag}-%Y%m%d-%H%M%S"))
    return p


def run_side_study(
    a: argparse.Namespace,
    measure: Callable[[str], Any],
    markdown_of: Callable[[dict[str, Any]], str],
    **fields: Any,
) -> None:
    """A side study from start to saved files: ``measure`` each of ``a.workloads`` in turn."""
    result = side_study(a.tag, rounds=a.rounds, **fields)
    for wl in a.workloads.split(","):
        result["workloads"][wl] = measure(wl)
        log(f"  {wl}: done")
    save_side_study(result, markdown_of)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A markdown table's lines: the header, its rule (one `---` a column, so the two cannot
    disagree) and a line a row, each cell as `str` gives it."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def study_markdown(
    result: dict[str, Any], intro: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
) -> str:
    """A side study's markdown file: what was run, how loaded the machine was, one table."""
    return "\n".join([intro, uptime_span(result), "", *table(columns, rows)]) + "\n"


def uptime_span(result: dict[str, Any]) -> str:
    """The markdown line that says how loaded the machine was, at the start and the end."""
    return f"`uptime` at start: `{result['uptime_start']}`; at end: `{result['uptime_end']}`."


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder with an empty ``store/`` (the model store), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        (Path(tmp) / "store").mkdir()
        yield Path(tmp)


@contextlib.contextmanager
def scratch_engine(work: Path, state: str = "state") -> Iterator[dict[str, Any]]:
    """Our engine in this process's way (``start_engine``) on three free loopback ports,
    serving ``work/store``, its state in ``work/<state>``, no snapshot; stopped afterwards."""
    inference, management, metrics = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
    info = start_engine(
        inference_address=inference,
        management_address=management,
        metrics_address=metrics,
        model_store=str(work / "store"),
        state_dir=str(work / state),
        snapshot=False,
    )
    try:
        yield info
    finally:
        stop_engine(info)


def side_study(tag: str, **fields: Any) -> dict[str, Any]:
    """The header of a smaller study's result (busy_poll.py, c1_overhead.py, ab_trees.py)."""
    return {
        "tag": tag,
        **fields,
        "machine": "{cpu}, {cores} cores".format(**machine_info()),
        "uptime_start": uptime_line(),
        "workloads": {},
    }


def save_side_study(result: dict[str, Any], markdown_of: Callable[[dict[str, Any]], str]) -> None:
    """Close a side study: note the end time, write `results/<tag>.json` and `.md`, print."""
    result["uptime_end"] = uptime_line()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{result['tag']}.json").write_text(json.dumps(result, indent=2))
    md = markdown_of(result)
    (out / f"{result['tag']}.md").write_text(md)
    print(md)


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    with contextlib.suppress(Exception):
        from jupyter_torchserve import __version__

        info["jupyter_torchserve"] = __version__
    with contextlib.suppress(OSError):
        info["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(
            "\n"
        )[0]
    with contextlib.suppress(OSError):
        info["torchserve"] = (
            (TS_VENV / "lib")
            .glob("python*/site-packages/ts/version.txt")
            .__next__()
            .read_text()
            .strip()
        )
    return info


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_inproc"]:
        inproc_main(argv[1:])
        return
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--servers", default="jts,torchserve")
    p.add_argument("--workloads", default="tiny,mnist,resnet")
    p.add_argument(
        "--configs",
        default="",
        help="e.g. 'w1-b1,w2-b8' for every workload "
        "(default: tiny w1-b1,w1-b8; mnist and resnet w1-b1,w1-b8,w2-b8)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk point")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", default="1,8,32")
    p.add_argument(
        "--batch-delay", type=int, default=5, help="max_batch_delay (ms) where batch > 1"
    )
    p.add_argument("--limit-phase", type=float, default=2.0, help="seconds per in-process point")
    p.add_argument("--no-limit", action="store_true", help="skip the in-process limit")
    p.add_argument(
        "--limits-from", default="", help="reuse the in-process limits of an earlier result JSON"
    )
    p.add_argument("--tag", default=time.strftime("%Y%m%d-%H%M%S"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--keep", action="store_true", help="keep server temp dirs (logs)")
    p.add_argument(
        "--jts-config", default="", help="extra EngineConfig values as JSON for our engine"
    )
    p.add_argument("--ts-env", default="", help="KEY=VALUE,... added to TorchServe's environment")
    p.add_argument(
        "--report", default="", help="only rewrite the .md (and targets) of a result JSON"
    )
    args = p.parse_args(argv)
    if args.report:
        path = Path(args.report)
        result = json.loads(path.read_text())
        result["targets"] = evaluate_targets(result) if result["limits"] else []
        path.write_text(json.dumps(result, indent=1))
        path.with_suffix(".md").write_text(markdown(result))
        print(path.with_suffix(".md").read_text())
        return
    args.servers = [s for s in args.servers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.connections = [int(c) for c in args.connections.split(",")]
    JtsServer.extra_config = json.loads(args.jts_config) if args.jts_config else {}
    TorchServeServer.extra_env = dict(kv.split("=", 1) for kv in args.ts_env.split(",") if kv)
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s!r}")
    if "torchserve" in args.servers and not (TS_VENV / "bin" / "torchserve").exists():
        p.error(f"TorchServe is not installed in {TS_VENV} (set TS_VENV)")
    if not shutil.which("wrk"):
        p.error("wrk is not installed (apt-get install -y wrk)")

    root = Path(tempfile.mkdtemp(prefix="jts-bench-"))
    store = root / "store"
    result: dict[str, Any] = {
        "tag": args.tag,
        "machine": machine_info(),
        "args": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "uptime_start": uptime_line(),
        "limits": {},
        "runs": [],
    }
    log(f"start: {result['uptime_start']}")
    try:
        for wl in args.workloads:
            archive = workloads.build_archive(wl, store)
            if args.limits_from:
                prior = json.loads(Path(args.limits_from).read_text())["limits"]
                if wl in prior:
                    result["limits"][wl] = {**prior[wl], "reused_from": args.limits_from}
            elif not args.no_limit:
                lim = inprocess_limit(archive, wl, root / "inproc", args.limit_phase)
                result["limits"][wl] = lim
                log(
                    f"  in-process {wl}: limit {lim['limit_items_per_s']:.0f}/s ({lim['limit_from']}), "
                    f"p50 b1 1t {lim['p50_b1_1thread_ms']} ms, load {loadavg()}"
                )
            configs = args.configs.split(",") if args.configs else DEFAULT_CONFIGS[wl]
            for s in args.servers:
                result["runs"].append(bench_server_workload(s, wl, configs, args, root, store))
    finally:
        result["uptime_end"] = uptime_line()
        log(f"end: {result['uptime_end']}")
        if result["runs"]:
            result["targets"] = evaluate_targets(result) if result["limits"] else []
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
            (out / f"{args.tag}.md").write_text(markdown(result))
            log(f"wrote {out / args.tag}.json and .md")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
