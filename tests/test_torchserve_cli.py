"""TorchServe's command line on our engine: parsing, precedence and what a runtime sees.

The fast tests check the rules (TorchServe 0.12's: env > command line > config.properties,
`TS_*` only with enable_envvars_config=true, `--models=...` as one token, `"--models x"`
refused as TorchServe refuses it, ignored keys said in one line). The slow ones start real
engines with KServe's and T9k's command lines and stop them with `--stop`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from _engine_helpers import linear_mar
from _ports import free_port

from jupyter_torchserve import torchserve
from jupyter_torchserve.config import (
    TS_ENVIRONMENT,
    ignored_keys_line,
    load_ts_config,
    resolve_ts_properties,
)

KSERVE_SAMPLE = """\
inference_address=http://0.0.0.0:8085
management_address=http://0.0.0.0:8085
metrics_address=http://0.0.0.0:8082
grpc_inference_port=7070
grpc_management_port=7071
enable_metrics_api=true
metrics_format=prometheus
number_of_netty_threads=4
job_queue_size=10
enable_envvars_config=true
install_py_dep_per_model=true
model_store=/mnt/models/model-store
"""


def settings(tmp_path: Path, argv: list[str], env: dict[str, str] | None = None):
    return torchserve.engine_settings(
        torchserve.build_parser().parse_args(argv), env or {}, tmp_path
    )


def test_env_beats_command_line_beats_file(tmp_path: Path) -> None:
    (tmp_path / "cli-store").mkdir()
    (tmp_path / "env-store").mkdir()
    config = tmp_path / "config.properties"
    config.write_text(KSERVE_SAMPLE + "disable_token_authorization=false\n")
    argv = ["--start", f"--ts-config={config}", f"--model-store={tmp_path / 'cli-store'}"]
    # the command line beats the file: the store, and --disable-token-auth against false
    s = settings(tmp_path, [*argv, "--disable-token-auth"])
    assert s.values["model_store"] == str(tmp_path / "cli-store")
    assert s.values["disable_token_authorization"] is True
    assert s.values["job_queue_size"] == 10
    # TS_* beats both, because the file has enable_envvars_config=true
    env = {
        "TS_MODEL_STORE": str(tmp_path / "env-store"),
        "TS_JOB_QUEUE_SIZE": "7",
        "TS_DISABLE_TOKEN_AUTHORIZATION": "false",
        "TS_INFERENCE_ADDRESS": "http://127.0.0.1:9999",
    }
    s = settings(tmp_path, [*argv, "--disable-token-auth"], env)
    assert s.values["model_store"] == str(tmp_path / "env-store")
    assert s.values["job_queue_size"] == 7
    assert s.values["disable_token_authorization"] is False
    assert s.values["inference_address"] == "http://127.0.0.1:9999"


def test_env_is_ignored_without_enable_envvars_config(tmp_path: Path) -> None:
    props = {"job_queue_size": "10"}
    env = {"TS_JOB_QUEUE_SIZE": "7"}
    assert resolve_ts_properties(props, {}, env)["job_queue_size"] == "10"
    assert (
        resolve_ts_properties({**props, "enable_envvars_config": "true"}, {}, env)["job_queue_size"]
        == "7"
    )
    # TorchServe reads TS_ALLOWED_URLS only with use_env_allowed_urls=true
    on = {"enable_envvars_config": "true"}
    assert "allowed_urls" not in resolve_ts_properties(on, {}, {"TS_ALLOWED_URLS": "x"})
    both = {**on, "use_env_allowed_urls": "true"}
    assert resolve_ts_properties(both, {}, {"TS_ALLOWED_URLS": "x"})["allowed_urls"] == "x"


def test_ts_environment_names_follow_torchserve_not_a_pattern() -> None:
    assert TS_ENVIRONMENT["TS_TOKEN_EXPIRATION_TIME_MIN"] == "token_expiration_min"
    assert TS_ENVIRONMENT["TS_OPEN_INFERENCE_PROTOCOL"] == "ts_open_inference_protocol"
    assert "TS_ENABLE_ENVVARS_CONFIG" not in TS_ENVIRONMENT  # only the file turns it on


def test_config_file_placeholders_and_ts_config_file(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    config = tmp_path / "a.properties"
    config.write_text("model_store=$$STORE$$\njob_queue_size=3\n")
    other = tmp_path / "b.properties"
    other.write_text(f"model_store={tmp_path / 'store'}\njob_queue_size=5\n")
    env = {"STORE": str(tmp_path / "store")}
    assert settings(tmp_path, [f"--ts-config={config}"], env).values["job_queue_size"] == 3
    # TS_CONFIG_FILE wins over --ts-config, as in TorchServe's launcher
    env["TS_CONFIG_FILE"] = str(other)
    assert settings(tmp_path, [f"--ts-config={config}"], env).values["job_queue_size"] == 5
    with pytest.raises(torchserve.UsageError, match="environment variable STORE is not set"):
        settings(tmp_path, [f"--ts-config={config}"])


def test_config_properties_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "config.properties").write_text("job_queue_size=4\nmodel_store=store\n")
    s = settings(tmp_path, ["--start"])
    assert s.values["job_queue_size"] == 4
    assert s.values["model_store"] == str((tmp_path / "store").resolve())


def test_start_refusals_match_torchserve(tmp_path: Path) -> None:
    with pytest.raises(torchserve.UsageError, match="Missing mandatory parameter --model-store"):
        settings(tmp_path, ["--start"])
    with pytest.raises(torchserve.UsageError, match="--model-store directory not found: nope"):
        settings(tmp_path, ["--start", "--model-store=nope"])
    with pytest.raises(torchserve.UsageError, match="--ts-config file not found"):
        settings(tmp_path, ["--start", "--ts-config=missing.properties"])


def test_models_one_token_and_many(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    s = settings(tmp_path, ["--start", f"--model-store={store}", "--models=mnist=model.mar"])
    assert s.values["load_models"] == "mnist=model.mar" and s.expected_models == 1
    s = settings(tmp_path, ["--start", f"--model-store={store}", "--models", "a.mar", "b=b.mar"])
    assert s.values["load_models"] == "a.mar,b=b.mar" and s.expected_models == 2
    s = settings(tmp_path, ["--start", f"--model-store={store}", "--models=ALL"])
    assert s.values["load_models"] == "all"


def test_models_with_a_space_in_one_argument_is_refused_as_by_torchserve() -> None:
    """T9k's manual writes `--models {{...}}` as one list item; TorchServe's argparse does
    not read that, and neither does ours (the bundle writes `--models=...`)."""
    with pytest.raises(SystemExit) as e:
        torchserve.build_parser().parse_args(["--start", "--models mnist=model.mar"])
    assert e.value.code == 2


def test_ignored_settings_are_said_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.properties"
    path.write_text(KSERVE_SAMPLE)
    values = load_ts_config(path, environ={})
    ignored = values.pop("_ignored")
    assert set(ignored) == {
        "grpc_inference_port",
        "grpc_management_port",
        "enable_metrics_api",
        "metrics_format",
        "number_of_netty_threads",
    }
    line = ignored_keys_line(ignored)
    assert line is not None and "\n" not in line and "number_of_netty_threads" in line
    assert values["job_queue_size"] == 10 and values["install_py_dep_per_model"] is True
    assert ignored_keys_line([]) is None
    elsewhere = tmp_path / "elsewhere"  # no ./config.properties there
    elsewhere.mkdir()
    s = settings(elsewhere, ["--start", f"--model-store={tmp_path}", "--log-config=log4j2.xml"])
    assert s.ignored == ["--log-config"]


def test_jupyter_torchserve_start_flags_win_over_its_ts_config(tmp_path: Path) -> None:
    import logging

    from jupyter_torchserve.cli import StartApp

    path = tmp_path / "config.properties"
    path.write_text(
        f"model_store={tmp_path / 'from-file'}\njob_queue_size=7\nnumber_of_netty_threads=4\n"
    )
    app = StartApp()
    app.initialize([f"--ts-config={path}", f"--model-store={tmp_path / 'from-flag'}"])
    said: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = said.append  # type: ignore[method-assign]
    app.log.addHandler(handler)
    cfg, _ = app.engine_config()
    assert cfg.model_store == str(tmp_path / "from-flag")
    assert cfg.job_queue_size == 7  # what the command line leaves alone, the file sets
    assert [r.getMessage() for r in said if "number_of_netty_threads" in r.getMessage()]


# -- real engines ------------------------------------------------------------------------------
def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {
        **os.environ,
        "TMPDIR": str(tmp_path / "tmp"),  # the pid file
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 200):
    return subprocess.run(
        [sys.executable, "-m", "jupyter_torchserve.torchserve", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_kserve_command_line_starts_waits_for_workers_and_stops(tmp_path: Path) -> None:
    store = tmp_path / "model-store"
    store.mkdir()
    linear_mar(store, "lin", "1.0")
    config = tmp_path / "config.properties"
    snapshot = (
        '{"name":"startup.cfg","modelCount":1,"models":{"lin":{"1.0":{"defaultVersion":true,'
        '"marName":"lin-1.0.mar","minWorkers":2,"maxWorkers":2,"batchSize":1,'
        '"maxBatchDelay":5,"responseTimeout":120}}}}'
    )
    config.write_text(KSERVE_SAMPLE + f"model_snapshot={snapshot}\n")
    ports = [free_port() for _ in range(3)]
    env = _env(
        tmp_path,
        TS_INFERENCE_ADDRESS=f"http://127.0.0.1:{ports[0]}",
        TS_MANAGEMENT_ADDRESS=f"http://127.0.0.1:{ports[1]}",
        TS_METRICS_ADDRESS=f"http://127.0.0.1:{ports[2]}",
    )
    args = ["--start", f"--model-store={store}", f"--ts-config={config}", "--disable-token-auth"]
    started = _cli(args, env, tmp_path)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        # --start returned only once the snapshot's two workers were READY
        assert "model lin 1.0: 2 worker(s) READY" in started.stdout
        # the keys this engine does not act on are said once, in one line
        lines = [x for x in started.stderr.splitlines() if "not acted on" in x]
        assert len(lines) == 1 and "number_of_netty_threads" in lines[0]
        r = requests.post(
            f"http://127.0.0.1:{ports[0]}/v1/models/lin:predict",
            json={"instances": [[1, 2, 3, 4]]},
            timeout=30,
        )
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 3
        # --disable-token-auth on the command line: management needs no token
        d = requests.get(f"http://127.0.0.1:{ports[1]}/models/lin", timeout=30).json()
        assert d[0]["batchSize"] == 1 and d[0]["maxBatchDelay"] == 5
        again = _cli(args, env, tmp_path)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = _cli(["--stop"], env, tmp_path)
    assert stopped.returncode == 0 and "TorchServe has stopped." in stopped.stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{ports[0]}/ping", timeout=5)
    assert "not currently running" in _cli(["--stop"], env, tmp_path).stdout


@pytest.mark.slow
def test_t9k_command_line_in_the_foreground(tmp_path: Path) -> None:
    """T9k's rendered args, `--models=NAME=FILE` one token, in the foreground as in a pod;
    the image's defaults come from ./config.properties, as TorchServe reads them."""
    store = tmp_path / "model"
    store.mkdir()
    linear_mar(store, "lin", "1.0")
    ports = [free_port() for _ in range(3)]
    (tmp_path / "config.properties").write_text(
        f"inference_address=http://127.0.0.1:{ports[0]}\n"
        f"management_address=http://127.0.0.1:{ports[1]}\n"
        f"metrics_address=http://127.0.0.1:{ports[2]}\n"
        "disable_token_authorization=true\n"
    )
    env = _env(tmp_path)
    args = ["--start", "--foreground", f"--model-store={store}", "--models=linear=lin-1.0.mar"]
    log = tmp_path / "foreground.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_torchserve.torchserve", *args],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = requests.post(
                    f"http://127.0.0.1:{ports[0]}/predictions/linear",
                    json=[[1, 2, 3, 4]],
                    timeout=60,
                )
                if r.status_code == 200:
                    answer = r.json()
                    break
            except requests.ConnectionError:
                pass  # not listening yet
            time.sleep(0.2)
        assert answer is not None and len(answer[0]) == 3, log.read_text()[-3000:]
        assert torchserve.pid_file().name == ".jts_model_server.pid"
        assert (tmp_path / "tmp" / ".jts_model_server.pid").read_text() == str(proc.pid)
    finally:
        stopped = _cli(["--stop", "--foreground"], env, tmp_path)
        proc.wait(60)
    assert "TorchServe has stopped." in stopped.stdout
    assert proc.returncode == 0
    assert not (tmp_path / "tmp" / ".jts_model_server.pid").exists()
