"""The README's first command (`make demo` = `python -m jupyter_torchserve.demo`) works end to
end: train the digits CNN, deploy it, call it on every protocol, print right answers."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts real processes


def _three_free_ports() -> int:
    """A base port p with p, p+1 and p+2 free (the demo's inference, management, metrics)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        socks = []
        try:
            for port in (base, base + 1, base + 2):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no three consecutive free ports")


def _stop_leftover_engines(runtime: Path) -> None:
    """Stop what a failed or timed-out demo left running (the assertions above report it)."""
    from jupyter_torchserve import launcher

    for path in runtime.glob("jupyter-torchserve-*.json"):
        try:
            launcher.stop_engine(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            pass


def test_demo_deploys_calls_every_protocol_and_stops(tmp_path: Path) -> None:
    port = _three_free_ports()
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_TORCHSERVE_PROGRESS="text",
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jupyter_torchserve.demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
        )
        out = proc.stdout
        assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
        assert re.search(r"held-out accuracy 0\.9\d", out), out[:500]
        assert "parity               ok" in out
        # each digit image is classified as itself, with its probability first
        for digit in ("0", "3", "7"):
            line = next(ln for ln in out.splitlines() if f"/predictions/mnist  (a {digit})" in ln)
            assert f'-> 200 {{"{digit}":' in line, line
        v1 = next(ln for ln in out.splitlines() if "/v1/models/mnist:predict" in ln and "->" in ln)
        assert '{"predictions":[{"4":' in v1, v1
        v2 = next(ln for ln in out.splitlines() if "/v2/models/mnist/infer" in ln and "->" in ln)
        assert '"datatype":"BYTES"' in v2 and '\\"4\\":' in v2, v2
        assert "Workers scaled to 2 for model: mnist" in out
        assert re.search(r'ts_inference_requests_total\{[^}]*model_name="mnist"[^}]*\} 6\.0', out)
        assert "stopped the engine" in out and "make demo KEEP=1" in out
        # the demo kept its state to itself: the next engine on these ports (a notebook's)
        # restores no `mnist` and the notebook's own deploy of `mnist` works
        from jupyter_torchserve import launcher
        from jupyter_torchserve.client import Client

        next_engine = {
            "inference_address": f"http://127.0.0.1:{port}",
            "management_address": f"http://127.0.0.1:{port + 1}",
            "metrics_address": f"http://127.0.0.1:{port + 2}",
        }
        with pytest.MonkeyPatch.context() as mp:
            for key in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
                mp.setenv(key, env[key])
            info = launcher.start_engine(**next_engine)
            try:
                assert Client.from_info(info).models == []
            finally:
                launcher.stop_engine(info)
        # nothing left behind: the engine is gone from discovery and from its port
        assert not list((tmp_path / "runtime").glob("jupyter-torchserve-*.json"))
        with socket.socket() as s:  # (REUSEADDR: the demo's closed connections sit in TIME_WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        _stop_leftover_engines(tmp_path / "runtime")
