"""The reliability soak: load with worker SIGKILLs, malformed requests, handler faults,
slowloris connections, an engine SIGKILL.

Too long for CI; its figures go into docs/reliability.md. Run from the repository root:

    .venv/bin/python scripts/reliability_soak.py --requests 20000 --concurrency 64 --kills 3

(`--slow-connections 500` is the default; smaller numbers and `--skip` make a shorter run.)

Each part prints one JSON line. Everything runs on loopback against a private engine on
free ports, with a throwaway model store and state dir.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _engine_helpers import probe_mar  # noqa: E402
from _ports import free_port  # noqa: E402

from jupyter_torchserve.launcher import start_engine, stop_engine  # noqa: E402


def _start(tmp: Path, store: Path) -> dict:
    return start_engine(
        inference_address=f"http://127.0.0.1:{free_port()}",
        management_address=f"http://127.0.0.1:{free_port()}",
        metrics_address=f"http://127.0.0.1:{free_port()}",
        model_store=str(store),
        state_dir=str(tmp / "state"),
        timeout=180,
    )


def _key(info: dict) -> str:
    return json.loads(Path(info["key_file"]).read_text())["management"]["key"]


def load_with_kills(info: dict, n: int, concurrency: int, kills: int) -> dict:
    """`n` predictions at `concurrency`; `kills` worker SIGKILLs spread over the run."""
    url = info["inference_address"] + "/predictions/probe"
    head = {"Authorization": "Bearer " + _key(info)}
    codes: dict[int, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        try:
            code = s.post(url, json={"echo": i}, timeout=120).status_code
        except requests.RequestException:
            code = 0
        with lock:
            codes[code] = codes.get(code, 0) + 1

    killed = []

    def killer() -> None:
        for k in range(kills):
            time.sleep(1.0 + k)
            desc = requests.get(
                info["management_address"] + "/models/probe", headers=head, timeout=30
            ).json()
            pids = [w["pid"] for w in desc[0]["workers"] if w.get("pid")]
            if pids:
                pid = random.choice(pids)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    t0 = time.monotonic()
    threading.Thread(target=killer, daemon=True).start()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    took = time.monotonic() - t0
    lost = n - codes.get(200, 0)
    return {
        "part": "load+kills",
        "requests": n,
        "concurrency": concurrency,
        "worker_kills": len(killed),
        "codes": codes,
        "lost": lost,
        "seconds": round(took, 1),
    }


def _raw(port: int, data: bytes, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
                if b"\r\n\r\n" in got and _complete(got):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return got


def _complete(got: bytes) -> bool:
    head, _, body = got.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def _req(
    method: str, path: str, headers: dict[str, str], body: bytes = b"", version: bytes = b"HTTP/1.1"
) -> bytes:
    lines = [f"{method} {path} ".encode() + version]
    for k, v in headers.items():
        lines.append(k.encode("latin-1") + b": " + v.encode("latin-1", "replace"))
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _post_json(path: str, body: bytes) -> bytes:
    return _req("POST", path, {"Host": "x", "Content-Type": "application/json"}, body)


def malformed_cases(key: str) -> list[tuple[str, bytes]]:
    """(port, request) pairs: the issue's list, then seeded random damage to good ones."""
    auth = {"Host": "x", "Authorization": "Bearer " + key}
    deep = b"[" * 2000 + b"]" * 2000
    v2 = lambda dt, data: json.dumps(  # noqa: E731
        {"inputs": [{"name": "x", "shape": [1], "datatype": dt, "data": data}]}
    ).encode()
    cases = [
        (
            "inference",
            _req(
                "POST", "/predictions/probe", {"Host": "x", "Authorization": "Bearer \xe9"}, b"{}"
            ),
        ),
        ("management", _req("GET", "/models", {"Host": "x", "Authorization": "Bearer \xff\xfe"})),
        ("management", b"GET /models\r\n\r\n"),  # HTTP/0.9
        ("management", _req("GET", "/models", {"Authorization": "Bearer " + key})),  # no Host
        ("inference", b"GET /ping\r\n\r\n"),
        (
            "inference",
            _post_json("/v2/models/probe/infer", v2([], [1])),
        ),
        (
            "inference",
            _post_json("/v2/models/probe/infer", v2({}, [1])),
        ),
        (
            "inference",
            _post_json("/v2/models/probe/infer", v2("INT8", [1000])),
        ),
        (
            "inference",
            _post_json("/v2/models/probe/infer", v2("UINT8", [-1])),
        ),
        (
            "inference",
            _post_json(
                "/v2/models/probe/infer",
                b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1e400]}]}',
            ),
        ),
        (
            "inference",
            _post_json("/v2/models/probe/infer", deep),
        ),
        (
            "inference",
            _post_json("/v1/models/probe:predict", deep),
        ),
        ("management", _req("POST", "/models", {**auth, "Content-Type": "application/json"}, deep)),
        (
            "inference",
            _req(
                "POST",
                "/predictions/probe",
                {"Host": "x", "Content-Type": "multipart/form-data"},
                b"--x\r\nabc",
            ),
        ),
        (
            "inference",
            _req(
                "POST",
                "/predictions/probe",
                {"Host": "x", "Content-Type": "multipart/form-data; boundary=x"},
                b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nabc",
            ),
        ),
        ("metrics", _req("GET", "/metrics?name[]=%ff", {"Host": "x"})),
        ("management", _req("POST", "/models?url=" + "a" * 300 + ".mar", auth)),
        ("management", _req("PUT", "/models/probe?min_worker=nan", auth)),
        ("management", _req("PUT", "/models/probe?min_worker=99999999999999999999", auth)),
        ("management", _req("POST", "/models?url=probe-1.0.mar&response_timeout=inf", auth)),
        ("management", _req("GET", "/models?limit=%ff", auth)),
    ]
    rng = random.Random(14)
    good = [
        (
            "inference",
            _post_json("/predictions/probe", b'{"echo": 1}'),
        ),
        ("management", _req("GET", "/models/probe", auth)),
        ("management", _req("PUT", "/models/probe?min_worker=1", auth)),
        ("metrics", _req("GET", "/metrics?name[]=ts_inference_requests_total", {"Host": "x"})),
        (
            "inference",
            _post_json("/v2/models/probe/infer", v2("FP32", [1.0])),
        ),
    ]
    while len(cases) < 2000:
        port, data = rng.choice(good)
        head, _, body = data.partition(b"\r\n\r\n")
        first, _, rest = head.partition(b"\r\n")
        damage = rng.randrange(6)
        if damage == 0 and body:  # corrupt the body, keep its length
            b = bytearray(body)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            body = bytes(b)
        elif damage == 1:  # a random byte in the target
            parts = first.split(b" ")
            t = bytearray(parts[1])
            t.insert(rng.randrange(len(t) + 1), rng.choice(b"%\xff\x00{}[]?&=#\\"))
            parts[1] = bytes(t)
            first = b" ".join(parts)
        elif damage == 2:  # a strange header
            rest += b"\r\nX-" + bytes(rng.randrange(33, 127) for _ in range(5)) + b": \xff\xfe"
        elif damage == 3:  # a parameter value Python's int() would take
            first = first.replace(
                b"min_worker=1",
                rng.choice(
                    [
                        b"min_worker=1_0",
                        b"min_worker=+1",
                        "min_worker=١".encode(),
                        b"min_worker=1e3",
                    ]
                ),
            )
        elif damage == 4 and body:  # truncated JSON
            body = body[: rng.randrange(len(body))]
        else:  # a bogus query parameter value
            first = (
                first.replace(b" HTTP", b"?limit=-%ff&tail=x HTTP", 1)
                if b"?" not in first
                else first
            )
        head = first + b"\r\n" + rest
        head = b"\r\n".join(
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length")
        ) + (b"\r\nContent-Length: %d" % len(body) if body else b"")
        cases.append((port, head + b"\r\n\r\n" + body))
    return cases


def malformed(info: dict) -> dict:
    ports = {
        p: int(info[f"{p}_address"].rsplit(":", 1)[1])
        for p in ("inference", "management", "metrics")
    }
    cases = malformed_cases(_key(info))
    statuses: dict[int, int] = {}
    fivexx, not_json, no_answer, handler_503 = [], 0, 0, 0
    not_json_by: dict[str, int] = {}
    for port, data in cases:
        got = _raw(ports[port], data)
        if not got.startswith(b"HTTP/"):
            no_answer += 1
            continue
        status = int(got.split(b" ", 2)[1])
        statuses[status] = statuses.get(status, 0) + 1
        body = got.partition(b"\r\n\r\n")[2]
        message = ""
        if status >= 400:
            try:
                message = str(json.loads(body).get("message", ""))
            except (ValueError, AttributeError):
                not_json += 1
                not_json_by[port] = not_json_by.get(port, 0) + 1
        if status >= 500:
            # the probe handler json.loads its body: a damaged one makes it raise, and a
            # handler's exception is TorchServe's 503 "Prediction failed", the handler's answer
            if status == 503 and message.startswith("Prediction failed"):
                handler_503 += 1
                continue
            fivexx.append((port, data[:120].decode("latin-1"), body[:200].decode("latin-1")))
    errors = sum(v for k, v in statuses.items() if k >= 400)
    ok = requests.post(
        info["inference_address"] + "/predictions/probe", json={"echo": 1}, timeout=60
    )
    return {
        "part": "malformed",
        "requests": len(cases),
        "statuses": statuses,
        "engine_5xx": len(fivexx),
        "engine_5xx_examples": fivexx[:5],
        "handler_503_prediction_failed": handler_503,
        "errors": errors,
        "errors_not_json": not_json,
        "errors_not_json_by_port": not_json_by,
        "no_answer": no_answer,
        "good_request_after": ok.status_code,
    }


FAULTS = {
    "raise": {"raise": "soak fault"},
    "hang": {"sleep": 600},  # past the model's response_timeout (3 s)
    "print-flood": {"flood": 50_000},  # 50 MiB of stdout in one request
    "exit": {"exit": 3},
}


class _Bystander:
    """Predictions to another model, one after another, while a fault happens."""

    def __init__(self, info: dict) -> None:
        self.url = info["inference_address"] + "/predictions/probe"
        self.codes: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        s = requests.Session()
        while not self.stop.is_set():
            try:
                code = s.post(self.url, json={"echo": 1}, timeout=60).status_code
            except requests.RequestException:
                code = 0
            self.codes[code] = self.codes.get(code, 0) + 1

    def __enter__(self) -> _Bystander:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def _workers(info: dict, name: str) -> list[dict]:
    head = {"Authorization": "Bearer " + _key(info)}
    url = info["management_address"] + f"/models/{name}"
    return requests.get(url, headers=head, timeout=30).json()[0]["workers"]


def _until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def handler_faults(info: dict) -> dict:
    """Each fault once on a 2-worker model while another model is asked continuously: what
    the faulty request got, how many of its model's workers it cost, whether the model
    serves again, and what the bystander model's requests got meanwhile."""
    head = {"Authorization": "Bearer " + _key(info)}
    r = requests.post(
        info["management_address"] + "/models",
        params={"url": "fault.mar", "initial_workers": 2, "response_timeout": 3},
        headers=head,
        timeout=180,
    )
    r.raise_for_status()
    results = []
    for name, body in FAULTS.items():
        before = {w["pid"] for w in _workers(info, "fault")}
        with _Bystander(info) as bystander:
            t0 = time.monotonic()
            r = requests.post(
                info["inference_address"] + "/predictions/fault", json=body, timeout=120
            )
            took = time.monotonic() - t0
            ready = _until(
                lambda: [w["status"] for w in _workers(info, "fault")] == ["READY"] * 2, 60
            )
            time.sleep(0.5)
        after = {w["pid"] for w in _workers(info, "fault")}
        try:
            message = str(r.json().get("message", ""))[:80] if r.status_code >= 400 else ""
        except ValueError:
            message = r.text[:80]
        then = requests.post(info["inference_address"] + "/predictions/fault", json={}, timeout=60)
        results.append(
            {
                "fault": name,
                "status": r.status_code,
                "message": message,
                "seconds": round(took, 1),
                "workers_replaced": len(before - after),
                "back_to_2_ready": ready,
                "next_request": then.status_code,
                "bystander_codes": bystander.codes,
            }
        )
    return {"part": "handler-faults", "cases": results}


def _fds(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def slowloris(info: dict, n: int, seconds: float) -> dict:
    """`n` connections that send a request's headers a few bytes at a time and never finish,
    for `seconds`; meanwhile ordinary predictions are timed. Then they close, and the
    engine's open file descriptors are counted against the start."""
    port = int(info["inference_address"].rsplit(":", 1)[1])
    baseline = _fds(info["pid"])
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /predictions/probe HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            refused += 1
    held = _fds(info["pid"])  # the engine may still be accepting its backlog: max below
    codes: dict[int, int] = {}
    latencies: list[float] = []
    session = requests.Session()
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        for s in socks[i % 10 :: 10]:  # a tenth of them trickle a header each round
            try:
                s.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                pass
        t0 = time.monotonic()
        try:
            code = session.post(
                info["inference_address"] + "/predictions/probe", json={"echo": i}, timeout=60
            ).status_code
        except requests.RequestException:
            code = 0
        latencies.append(time.monotonic() - t0)
        codes[code] = codes.get(code, 0) + 1
        held = max(held, _fds(info["pid"]))
        i += 1
        time.sleep(0.1)
    dropped_by_engine = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                dropped_by_engine += 1
        except BlockingIOError:
            pass
        except OSError:
            dropped_by_engine += 1
        s.close()
    session.close()
    settled = _until(lambda: _fds(info["pid"]) <= baseline + 2, 30)
    latencies.sort()
    return {
        "part": "slowloris",
        "connections": len(socks),
        "refused": refused,
        "seconds": seconds,
        "others_codes": codes,
        "others_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "others_max_ms": round(1000 * latencies[-1], 1),
        "closed_by_engine_while_slow": dropped_by_engine,
        "engine_fds": {"baseline": baseline, "most_held": held, "after": _fds(info["pid"])},
        "fds_back_to_baseline": settled,
    }


def engine_kill(tmp: Path, store: Path) -> dict:
    """SIGKILL a busy engine; count what outlives it; start again and look at $TMPDIR
    (a private one: other programs' folders are not the engine's to count)."""
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir()
    os.environ["TMPDIR"] = str(tmpdir)  # the engines' children inherit it
    info = _start(tmp, store)
    head = {"Authorization": "Bearer " + _key(info)}
    requests.put(
        info["management_address"] + "/models/probe?min_worker=2&synchronous=true",
        headers=head,
        timeout=120,
    )

    def busy() -> None:  # a request in a worker's handler when the engine dies
        try:
            requests.post(
                info["inference_address"] + "/predictions/probe", json={"sleep": 30}, timeout=60
            )
        except requests.ConnectionError:
            pass  # cut off with the engine, as expected

    threading.Thread(target=busy, daemon=True).start()
    time.sleep(1)
    family = psutil.Process(info["pid"]).children(recursive=True)
    left = {p.name for p in tmpdir.iterdir() if p.name.startswith(("jts-", "pymp-"))}
    os.kill(info["pid"], signal.SIGKILL)
    time.sleep(5)

    def alive(p: psutil.Process) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    orphans = [p.pid for p in family if alive(p)]
    t0 = time.monotonic()
    info2 = _start(tmp, store)
    restart = time.monotonic() - t0
    after = {p.name for p in tmpdir.iterdir() if p.name.startswith(("jts-", "pymp-"))}
    stale = sorted(left & after)
    stop_engine(info2)
    return {
        "part": "engine-sigkill",
        "processes_before": len(family),
        "orphans_after_5s": orphans,
        "stale_tmp_dirs_after_restart": stale,
        "restart_seconds": round(restart, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--slow-connections", type=int, default=500)
    ap.add_argument("--slow-seconds", type=float, default=30.0)
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["load", "malformed", "faults", "slowloris", "engine-kill"],
    )
    args = ap.parse_args()
    skip = set(args.skip)
    with tempfile.TemporaryDirectory(prefix="jts-soak-") as t:
        tmp = Path(t)
        store = tmp / "store"
        store.mkdir()
        probe_mar(store)
        probe_mar(store, "fault", file="fault.mar")
        info = _start(tmp, store)
        try:
            head = {"Authorization": "Bearer " + _key(info)}
            r = requests.post(
                info["management_address"] + "/models",
                params={"url": "probe-1.0.mar", "initial_workers": 2},
                headers=head,
                timeout=180,
            )
            r.raise_for_status()
            parts: list[Callable[[], dict]] = []
            if "load" not in skip:
                parts.append(
                    lambda: load_with_kills(info, args.requests, args.concurrency, args.kills)
                )
            if "malformed" not in skip:
                parts.append(lambda: malformed(info))
            if "faults" not in skip:
                parts.append(lambda: handler_faults(info))
            if "slowloris" not in skip:
                parts.append(lambda: slowloris(info, args.slow_connections, args.slow_seconds))
            for part in parts:
                print(json.dumps(part()), flush=True)
        finally:
            stop_engine(info)
        if "engine-kill" not in skip:
            print(json.dumps(engine_kill(tmp, store)), flush=True)


if __name__ == "__main__":
    main()
