"""TorchServe's own command line on this engine: `torchserve --start --model-store=... ...`.

Cluster runtimes start a TorchServe image with exactly this command line (KServe:
`torchserve --start --model-store=/mnt/models/model-store
--ts-config=/mnt/models/config/config.properties`; T9k: `torchserve --start
--model-store=/var/lib/t9k/model --models=mnist=model.mar`), so an image that runs
`python -m jupyter_torchserve.torchserve` as `torchserve` serves there unchanged.

The options are TorchServe 0.12's (`ts/arg_parser.py`) and are parsed the same way, with
argparse: `--models a.mar b=b.mar` and `--models=a.mar` work, `"--models a.mar"` arriving as
one argument does not, there or here, so a runtime that works on one works on the other.
Precedence of file, command line and `TS_*` variables is TorchServe's (config.py).

No `torchserve` console script is installed with the package: in an environment that also
has TorchServe it would silently replace TorchServe's own. The image `export` describes
installs a one-line shim instead (`export.image.TORCHSERVE_SHIM`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: TorchServe keeps `.model_server.pid` in the temp dir; ours has its own name, so a
#: `torchserve --stop` of either never stops the other.
PID_FILE = ".jts_model_server.pid"

#: What the image installs as `/usr/local/bin/torchserve` (and what the tests put on PATH).
#: Command-line options TorchServe has that change nothing here (Java and C++ settings).
_IGNORED_OPTIONS = {
    "log_config": "--log-config",
    "cpp_log_config": "--cpp-log-config",
    "plugins_path": "--plugins-path",
    "workflow_store": "--workflow-store",
}


class UsageError(Exception):
    """A start that TorchServe would refuse too; the message is what to fix."""


def build_parser() -> argparse.ArgumentParser:
    """TorchServe 0.12's `torchserve` options, with its names, aliases and destinations."""
    parser = argparse.ArgumentParser(
        prog="torchserve",
        description="TorchServe's command line, served by jupyter_torchserve's engine.",
    )
    group = parser.add_mutually_exclusive_group(required=False)
    group.add_argument("-v", "--version", action="store_true", help="Print the version")
    group.add_argument("--start", action="store_true", help="Start the model server")
    group.add_argument("--stop", action="store_true", help="Stop the model server")
    parser.add_argument("--ts-config", dest="ts_config", help="A TorchServe config.properties")
    parser.add_argument("--model-store", dest="model_store", help="Directory of model archives")
    parser.add_argument("--workflow-store", dest="workflow_store", help="Accepted, not used")
    parser.add_argument(
        "--models",
        metavar="MODEL_PATH1 MODEL_NAME=MODEL_PATH2...",
        nargs="+",
        help="Models to load at start: [name=]archive in the model store, or 'all'",
    )
    parser.add_argument("--log-config", dest="log_config", help="Accepted, not used (log4j)")
    parser.add_argument("--cpp-log-config", dest="cpp_log_config", help="Accepted, not used")
    parser.add_argument("--foreground", action="store_true", help="Run the engine in this process")
    parser.add_argument(
        "--no-config-snapshots",
        "--ncs",
        dest="no_config_snapshots",
        action="store_true",
        help="Keep no snapshot of the registered models",
    )
    parser.add_argument(
        "--plugins-path", "--ppath", dest="plugins_path", help="Accepted, not used (Java)"
    )
    parser.add_argument(
        "--disable-token-auth",
        "--dt",
        dest="token_auth",
        action="store_true",
        help="Serve without token authorization",
    )
    parser.add_argument(
        "--enable-model-api",
        dest="model_mode",
        action="store_true",
        help="Allow register and unregister over HTTP",
    )
    return parser


@dataclass
class Settings:
    """What `--start` runs: EngineConfig values, and what was given that changes nothing."""

    values: dict[str, Any]
    config_file: str | None
    ignored: list[str] = field(default_factory=list)
    expected_models: int = 0  # versions that start-up loads, so the caller can wait for them


def engine_settings(
    args: argparse.Namespace, environ: Mapping[str, str], cwd: str | os.PathLike[str]
) -> Settings:
    """TorchServe's start-up rules, from its launcher and ConfigManager.

    The file is `$TS_CONFIG_FILE`, else `--ts-config`, else `./config.properties` when
    there is one; the model store (command line, else file, else `TS_MODEL_STORE`) must
    be an existing directory.
    """
    from .config import parse_properties, resolve_ts_properties, ts_traits

    config_file = environ.get("TS_CONFIG_FILE") or args.ts_config
    if config_file and not os.path.isfile(config_file):
        raise UsageError(f"--ts-config file not found: {config_file}")
    if not config_file and os.path.isfile(os.path.join(cwd, "config.properties")):
        config_file = os.path.join(cwd, "config.properties")
    props = parse_properties(Path(config_file).read_text()) if config_file else {}
    command_line: dict[str, str] = {}
    if args.model_store:
        command_line["model_store"] = args.model_store
    if args.models:
        command_line["load_models"] = ",".join(args.models)
    if args.model_mode:
        command_line["enable_model_api"] = "true"
    if args.token_auth:
        command_line["disable_token_authorization"] = "true"
    try:
        resolved = resolve_ts_properties(props, command_line, environ)
        values, ignored = ts_traits(resolved, config_file or "the command line")
    except ValueError as e:
        raise UsageError(str(e)) from None
    store = resolved.get("model_store")
    if not store:
        raise UsageError("Missing mandatory parameter --model-store")
    store_path = Path(cwd, store).expanduser()
    if not store_path.is_dir():
        raise UsageError(f"--model-store directory not found: {store}")
    values["model_store"] = str(store_path.resolve())
    if args.no_config_snapshots:
        values["snapshot"] = False
    ignored += [flag for dest, flag in _IGNORED_OPTIONS.items() if getattr(args, dest)]
    return Settings(values, config_file, ignored, _count_startup_models(values, store_path))


def _count_startup_models(values: dict[str, Any], store: Path) -> int:
    """Model versions the engine loads at start (model_snapshot, then load_models)."""
    from .config import parse_model_snapshot

    count = 0
    snapshot = parse_model_snapshot(values.get("model_snapshot", ""))
    for versions in ((snapshot or {}).get("models") or {}).values():
        count += len(versions)
    spec = values.get("load_models", "").strip()
    if spec == "all":
        from .archive.reader import is_archive

        count += sum(1 for p in store.iterdir() if is_archive(p))
    elif spec:
        count += len([item for item in spec.split(",") if item.strip()])
    return count


# -- pid file --------------------------------------------------------------------------------
def pid_file() -> Path:
    return Path(tempfile.gettempdir()) / PID_FILE


def running_pid() -> int | None:
    """The engine a `torchserve --start` left running, or None (an orphan file is removed)."""
    import psutil

    path = pid_file()
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        if any("jupyter_torchserve" in part for part in psutil.Process(pid).cmdline()):
            return pid
    except psutil.Error:
        pass
    print("Removing orphan pid file.")
    path.unlink(missing_ok=True)
    return None


# -- verbs -----------------------------------------------------------------------------------
def start(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        settings = engine_settings(args, env, os.getcwd())
    except UsageError as e:
        print(e, file=sys.stderr)
        return 1
    pid = running_pid()
    if pid is not None:
        print(
            f"An engine started with `torchserve --start` is already running (pid {pid}); "
            "stop it with `torchserve --stop`.",
            file=sys.stderr,
        )
        return 1
    from .config import ignored_keys_line

    line = ignored_keys_line(settings.ignored)
    if line:
        print(line, file=sys.stderr, flush=True)
    if args.foreground:
        return _run_in_this_process(settings)
    return _start_in_background(settings)


def _run_in_this_process(settings: Settings) -> int:
    """`--foreground`: the engine runs here (a container's main process), through the same
    start path as `jupyter-torchserve start --foreground`."""
    from .cli import main as jts_main

    path = pid_file()
    path.write_text(str(os.getpid()))
    try:
        jts_main(["start", "--foreground", "--config-json=" + json.dumps(settings.values)])
    finally:
        path.unlink(missing_ok=True)
    return 0


def _start_in_background(settings: Settings) -> int:
    """Start the engine in its own session and return once it answers and every start-up
    model has its workers ready (TorchServe's launcher returns before that)."""
    from .client import Client, EngineError
    from .launcher import EngineStartError, start_engine

    try:
        info = start_engine(**settings.values)
    except EngineStartError as e:
        print(e, file=sys.stderr)
        return 1
    pid_file().write_text(str(info["pid"]))
    print(f"jupyter_torchserve engine pid {info['pid']}: inference {info['inference_address']}")
    if settings.expected_models:
        timeout = float(settings.values.get("default_startup_timeout", 120.0)) + 30
        try:
            ready = wait_for_models(Client.from_info(info, timeout=10), settings, timeout)
        except EngineError as e:
            ready = [f"({e})"]
        for line in ready:
            print(line)
        if len(ready) < settings.expected_models:
            print(
                f"only {len(ready)} of {settings.expected_models} start-up models became "
                f"ready; see {info.get('log_file') or info.get('log_dir')}",
                file=sys.stderr,
            )
            return 1
    return 0


def wait_for_models(client: Any, settings: Settings, timeout: float) -> list[str]:
    """Poll the management API until the start-up models have all their workers READY."""
    deadline = time.monotonic() + timeout
    ready: list[str] = []
    while time.monotonic() < deadline:
        ready = []
        for model in client.models:
            for d in client.describe(model["modelName"], "all"):
                workers = d.get("workers", [])
                if len([w for w in workers if w.get("status") == "READY"]) >= max(
                    1, d.get("minWorkers", 1)
                ):
                    ready.append(
                        f"model {d['modelName']} {d['modelVersion']}: "
                        f"{len(workers)} worker(s) READY"
                    )
        if len(ready) >= settings.expected_models:
            return ready
        time.sleep(0.2)
    return ready


def stop(foreground: bool) -> int:
    from .launcher import stop_engine

    pid = running_pid()
    if pid is None:
        print("TorchServe is not currently running.")
        return 0
    stop_engine({"pid": pid}, timeout=60.0 if foreground else 20.0)
    pid_file().unlink(missing_ok=True)
    print("TorchServe has stopped.")
    return 0


def run(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from ._version import __version__

        print(f"jupyter_torchserve {__version__} (TorchServe 0.12's command line and APIs)")
        return 0
    if args.stop:
        return stop(args.foreground)
    return start(args, environ)  # TorchServe starts without --start too


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--foreground" in argv and "--stop" not in argv:
        # the forkserver's `import torch` is most of a cold start: begin it first
        from .engine import forkserver

        forkserver.warm_in_background()
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
