"""The worker process: load one archive once, then answer batches over a Unix socket.

This module is preloaded by the engine's forkserver (through `worker_preload`, which also
imports torch and freezes the heap), so `import torch` is paid once per engine and every
worker starts as a cheap fork of a process that has never touched CUDA. This module itself
never imports torch: an ONNX archive's worker is a plain spawn that runs it without torch
(`forkserver.context_for`), which is where that format's memory saving comes from.
The loop is deliberately single-threaded and blocking: a worker runs one batch at a time,
and the engine keeps the next batch already waiting in the socket buffer (pipelining).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any

from ..handlers.oom import release_cuda_cache
from ..handlers.service import HandlerError, RequestInput, load_service
from .busypoll import PollWindow
from .protocol import SyncConnection

log = logging.getLogger("jupyter_torchserve.worker")

TRACEBACK_TAIL = 12


def _die_with_forkserver() -> None:
    """Ask Linux for SIGKILL when the forkserver (our parent) dies.

    A worker busy in a handler never reads its socket, so it would not notice the engine
    gone. The forkserver does: it exits when the engine's end of its `alive` pipe closes,
    however the engine died, and this signal then takes every worker with it (and so the
    resource tracker, once nothing holds its pipe). Checked again after the call, for a
    parent that died first.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)
    # multiprocessing hands every child the write end of the forkserver's `alive` pipe (so
    # that it could fork more through the same server): held here, the forkserver never
    # sees the engine die, and lives on with this worker. A handler that starts processes
    # of its own gets a forkserver of its own instead.
    from multiprocessing import forkserver as mp_forkserver

    server = mp_forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None
        server._forkserver_pid = None
        server._forkserver_address = None


def _redirect_output(log_path: str) -> None:
    """Send fd 1 and 2 (prints, warnings, C++ messages) to the model's log file."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def handler_device(service: Any, assigned: str) -> str:
    """The device the handler really uses, for `describe`: a handler given `cuda:N` may have
    fallen back to the CPU (no CUDA here). The model's parameters say where it runs, else
    the handler's own `device` (TorchServe's BaseHandler sets one); a handler with neither
    (a `handle` function) is reported on the device it was given."""
    handler = getattr(service, "handler_instance", None)
    model = getattr(handler, "model", None)
    try:
        return _device_name(next(model.parameters()).device)  # type: ignore[union-attr]
    except (AttributeError, StopIteration, TypeError):
        pass
    device = getattr(handler, "device", None)
    return _device_name(device) if device is not None else assigned


def _device_name(device: Any) -> str:
    """`cuda:0` for a torch device of type cuda (index 0 when torch leaves it out)."""
    kind = getattr(device, "type", None)
    if kind is None:
        return str(device)
    index = getattr(device, "index", None)
    return f"{kind}:{index or 0}" if kind == "cuda" else str(kind)


def _tail(text: str, n: int = TRACEBACK_TAIL) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _limit_threads(threads: int) -> None:
    """Torch's thread pools when torch is loaded (a forked worker); otherwise the variable
    a torch-free handler reads (onnxruntime's intra-op threads, handlers/builtin/onnx.py)."""
    if threads > 0:
        os.environ["JTS_WORKER_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        # one batch runs at a time: inter-op parallelism only adds threads that compete
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed by an earlier parallel op; harmless


def run_worker(
    sock_path: str,
    worker_id: str,
    model_name: str,
    model_version: str,
    model_dir: str,
    handler: str | None,
    gpu_id: int | None,
    batch_size: int,
    log_path: str,
    threads: int,
    requirements_dir: str | None = None,
) -> None:
    _die_with_forkserver()
    _redirect_output(log_path)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [{model_name} v{model_version} worker {worker_id}] "
        "%(levelname)s %(message)s",
        force=True,
    )
    _limit_threads(threads)
    # TorchServe runs handlers inside the model directory; some open files by relative path
    os.chdir(model_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sock_path)
    conn = SyncConnection(sock)
    conn.send({"op": "hello", "worker_id": worker_id, "pid": os.getpid()})
    started = time.monotonic()
    try:
        service = load_service(
            model_dir,
            model_name=model_name,
            handler=handler,
            gpu_id=gpu_id,
            batch_size=batch_size,
            requirements_dir=requirements_dir,
        )
    except BaseException as e:  # noqa: BLE001 - every load failure must reach the user
        tb = traceback.format_exc()
        log.error("loading the model failed:\n%s", tb)
        conn.send(
            {"op": "load_failed", "error": f"{type(e).__name__}: {e}", "traceback": _tail(tb)}
        )
        return
    device = handler_device(service, "cpu" if gpu_id is None else f"cuda:{gpu_id}")
    log.info("model loaded in %.2f s on %s", time.monotonic() - started, device)
    conn.send({"op": "ready", "device": device, "pid": os.getpid()})
    _install_stream_hook(service, conn)
    serve(conn, service)


def _install_stream_hook(service: Any, conn: SyncConnection) -> None:
    """Let a handler send intermediate (streamed) responses before it returns."""
    state: dict[str, Any] = {"batch": None}

    def send(outputs: list[Any]) -> None:
        metas = _metas(outputs)
        if service.batch_rows is not None:  # a request of the batch, retried alone
            for meta, row in zip(metas, service.batch_rows, strict=True):
                meta["i"] = row
        _send_result(conn, "stream", state["batch"], metas, [o.body for o in outputs])

    service.set_stream_callback(send)
    service._stream_state = state


def _metas(outputs: list[Any]) -> list[dict[str, Any]]:
    """How each answer's body is sent: status, content type, reason, headers."""
    return [{"s": o.status, "ct": o.content_type, "r": o.reason, "h": o.headers} for o in outputs]


def _drain_metrics(service: Any) -> list[dict[str, Any]]:
    """Custom metrics the handler recorded (context.metrics.add_*), for the engine to export."""
    metrics = getattr(service.context, "metrics", None)
    if metrics is None or not hasattr(metrics, "drain"):
        return []
    return [
        {
            "name": r["name"],
            "value": r["value"],
            "type": r.get("type", "COUNTER"),
            "dims": r.get("dimensions") or {},
        }
        for r in metrics.drain()
    ]


def _send_result(
    conn: SyncConnection,
    op: str,
    batch: Any,
    metas: list[dict[str, Any]],
    bodies: list[bytes],
    metrics: list[dict[str, Any]] | None = None,
) -> None:
    offset = 0
    for meta, body in zip(metas, bodies, strict=True):
        meta["o"] = offset
        meta["n"] = len(body)
        offset += len(body)
    header: dict[str, Any] = {"op": op, "batch": batch, "resps": metas}
    if metrics:
        header["m"] = metrics
    conn.send(header, bodies)


def serve(conn: SyncConnection, service: Any) -> None:
    window = PollWindow()
    slept_since = 0.0  # when the last answer went out, if polling did not catch the next batch
    poll_us = 0
    while True:
        try:
            header, payload = conn.read_frame()
        except (EOFError, ConnectionError):
            return
        op = header["op"]
        if slept_since:
            if op == "infer":
                window.missed(poll_us, (time.perf_counter() - slept_since) * 1e6)
            slept_since = 0.0
        if op == "infer":
            _infer(conn, service, header, payload)
            poll_us = header.get("poll") or 0
            if poll_us:
                answered = time.perf_counter()
                if not conn.poll(window.current(poll_us) / 1e6):
                    slept_since = answered
        elif op == "describe":
            try:
                value = service.describe()
                conn.send({"op": "describe_result", "batch": header["batch"], "value": value})
            except Exception as e:  # noqa: BLE001
                conn.send(
                    {
                        "op": "error",
                        "batch": header["batch"],
                        "message": str(e),
                        "traceback": _tail(traceback.format_exc()),
                    }
                )
        elif op == "stop":
            log.info("stopping on request")
            return


def _failure(e: HandlerError, what: str) -> dict[str, Any]:
    """Log a handler's failure on `what` and return the fields the engine answers it with.

    Out of memory: what the batch held is freed as its exception unwinds; the allocator's
    cache goes back too, so the next batch (or a neighbour on the device) has room.
    A 4xx is the client's mistake, refused on purpose: one warning line with the reason, not
    a traceback at ERROR, so a client sending bad bodies cannot bury the model's log."""
    if e.cuda_oom:
        release_cuda_cache()
        log.error("%s\n%s", e.message, e.traceback_text)
    elif e.status < 500:
        log.warning("refused %s (%d): %s", what, e.status, e.message)
    else:
        log.error("handler failed on %s:\n%s", what, e.traceback_text)
    return {
        "message": e.message,
        "traceback": _tail(e.traceback_text),
        "status": e.status,  # what TorchServe answers: a PredictionException's code
        "oom": e.cuda_oom,  # the engine counts it and judges a later death by it
    }


def _infer(conn: SyncConnection, service: Any, header: dict[str, Any], payload: memoryview) -> None:
    batch_id = header["batch"]
    service._stream_state["batch"] = batch_id
    requests = []
    for req in header["reqs"]:
        params = [(name, ctype, bytes(payload[off : off + n])) for name, ctype, off, n in req["p"]]
        requests.append(RequestInput(request_id=req["id"], headers=req["h"], params=params))
    t0 = time.perf_counter()
    try:
        outputs = service.predict_each(requests)
        failed = outputs[0] if outputs else None
        if isinstance(failed, HandlerError) and all(o is failed for o in outputs):
            raise failed  # the batch failed as one: out of memory, a lone request
    except HandlerError as e:
        what = f"a batch of {len(requests)}"
        conn.send(
            {"op": "error", "batch": batch_id, **_failure(e, what), "m": _drain_metrics(service)}
        )
        return
    except Exception as e:  # noqa: BLE001 - a bug in our runtime must not kill the worker
        tb = traceback.format_exc()
        log.error("batch failed:\n%s", tb)
        conn.send(
            {
                "op": "error",
                "batch": batch_id,
                "message": f"{type(e).__name__}: {e}",
                "traceback": _tail(tb),
            }
        )
        return
    compute_ms = (time.perf_counter() - t0) * 1000
    metas, bodies = [], []
    for o in outputs:
        if isinstance(o, HandlerError):  # this request failed alone; the others answered
            metas.append({"e": _failure(o, "a request")})
            bodies.append(b"")
        else:
            metas.extend(_metas([o]))
            bodies.append(o.body)
    _send_result(conn, "result", batch_id, metas, bodies, _drain_metrics(service))
    if compute_ms > 1000:
        log.info("batch of %d took %.0f ms", len(requests), compute_ms)
