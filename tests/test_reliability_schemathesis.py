"""schemathesis against the engine's own OpenAPI documents: no input it generates, on any
operation of the inference or management API, gets a 5xx.

Runs schemathesis' CLI (a maintained property-based fuzzer, rather than our own generator)
on a throwaway engine holding one model, with the management key on every request so the
calls reach the code behind the auth check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _engine_helpers import probe_mar, running_engine

pytestmark = pytest.mark.slow  # an engine and the schemathesis CLI

ST = Path(sys.executable).with_name("st")


@pytest.mark.parametrize("port", ["inference", "management"])
def test_no_generated_request_gets_a_server_error(tmp_path, port):
    store = tmp_path / "store"
    store.mkdir()
    probe_mar(store)
    with running_engine(tmp_path, model_store=str(store)) as (info, client):
        client.register("probe-1.0.mar", initial_workers=1)
        key = json.loads(Path(info["key_file"]).read_text())["management"]["key"]
        base = info[f"{port}_address"]
        run = subprocess.run(
            [
                str(ST),
                "run",
                base + "/api-description",
                "--url",
                base,
                "--header",
                f"Authorization: Bearer {key}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "5",
                "--phases",
                "coverage,fuzzing",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # it keeps a .schemathesis/ folder where it runs
        )
        assert run.returncode == 0, run.stdout[-4000:]
        assert "passed" in run.stdout and " failed" not in run.stdout.split("SUMMARY")[-1]
        # still serving (the run may have unregistered or rescaled the throwaway model)
        client.register("probe-1.0.mar", model_name="after", initial_workers=1)
        assert client.predict("after", {"echo": 1}).status == 200
