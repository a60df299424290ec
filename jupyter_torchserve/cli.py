"""`jupyter-torchserve start|stop|status|token|export` (also `python -m jupyter_torchserve`).

Built on traitlets `Application` so every `EngineConfig` option is a flag
(`--EngineConfig.job_queue_size=200`) and config files work as everywhere in Jupyter.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from traitlets import Bool, Int, TraitError, Unicode
from traitlets.config import Application

from . import discovery
from ._version import __version__
from .config import EngineConfig, StateDirUnusable, ignored_keys_line, load_ts_config
from .discovery import EngineInfo

_aliases = {
    "inference-address": "EngineConfig.inference_address",
    "management-address": "EngineConfig.management_address",
    "metrics-address": "EngineConfig.metrics_address",
    "grpc-inference-port": "EngineConfig.grpc_inference_port",
    "grpc-management-port": "EngineConfig.grpc_management_port",
    "model-store": "EngineConfig.model_store",
    "models": "EngineConfig.load_models",
    "state-dir": "EngineConfig.state_dir",
    "ts-config": "StartApp.ts_config",
    "config-json": "StartApp.config_json",
}
_flags = {
    "foreground": ({"StartApp": {"foreground": True}}, "Run in this process (for debugging)."),
    "disable-token-auth": (
        {"EngineConfig": {"disable_token_authorization": True}},
        "Serve the management API without a token.",
    ),
    "ncs": ({"EngineConfig": {"snapshot": False}}, "No config snapshot (TorchServe's --ncs)."),
}


class StartApp(Application):
    name = "jupyter-torchserve start"
    description = "Start a serving engine (in the background unless --foreground)."
    aliases = _aliases
    flags = _flags
    classes = [EngineConfig]
    foreground = Bool(False, help="Run the engine in this process.").tag(config=True)
    ts_config = Unicode("", help="A TorchServe config.properties to read.").tag(config=True)
    config_json = Unicode("", help="EngineConfig values as JSON (used by the launcher).").tag(
        config=True
    )

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        from jupyter_core.paths import jupyter_config_path

        from .config import CONFIG_FILE

        # as in Jupyter: the first path wins, and the command line wins over every file
        self.load_config_file(CONFIG_FILE, path=jupyter_config_path())

    def engine_config(self) -> tuple[EngineConfig, dict[str, Any]]:
        values: dict[str, Any] = {}
        if self.ts_config:
            values = load_ts_config(self.ts_config)
            line = ignored_keys_line(values.pop("_ignored"))
            if line:
                self.log.warning(line)
            # TorchServe's precedence: a flag on the command line wins over the file
            given = set(self.cli_config.get("EngineConfig", {}))
            values = {k: v for k, v in values.items() if k not in given}
        if self.config_json:
            values.update(json.loads(self.config_json))
        cfg = EngineConfig(parent=self)
        for key, value in values.items():
            setattr(cfg, key, value)
        return cfg, values

    def start(self) -> None:
        try:
            cfg, values = self.engine_config()
        except TraitError as e:  # an address it cannot serve on, a negative size, ...
            print(f"error: {e}", file=sys.stderr)
            self.exit(1)
        if self.foreground:
            # run as `python -m jupyter_torchserve` (the launcher's way) it started already,
            # before the CLI's imports (__main__.py); the console script starts it here
            from .engine import forkserver

            forkserver.warm_in_background()
            from .engine import busypoll
            from .engine.app import serve

            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
            from .engine.statelock import StateDirInUse

            selector = busypoll.BusyPollSelector(cfg.busy_poll_us / 1e6)
            try:
                busypoll.run(serve(cfg, selector), selector)
            except (StateDirInUse, StateDirUnusable) as e:
                print(str(e), file=sys.stderr)
                self.exit(1)
            return
        from .launcher import EngineStartError, start_engine

        explicit = {k: getattr(cfg, k) for k in cfg.trait_names() if cfg.trait_has_value(k)}
        explicit.pop("config", None)
        explicit.pop("parent", None)
        explicit.pop("log", None)
        try:
            info = start_engine(**{k: v for k, v in explicit.items() if k in _config_traits()})
        except EngineStartError as e:
            print(str(e), file=sys.stderr)
            self.exit(1)
        _print_info(info)


def _config_traits() -> set[str]:
    return set(EngineConfig.class_trait_names(config=True))


def _print_info(info: EngineInfo) -> None:
    print(f"engine pid {info['pid']} (jupyter_torchserve {info.get('version')})")
    print(f"  inference   {info['inference_address']}")
    print(f"  management  {info['management_address']}")
    print(f"  metrics     {info['metrics_address']}")
    for api in ("inference", "management"):
        if info.get(f"grpc_{api}_address"):
            print(f"  gRPC {api:<10} {info[f'grpc_{api}_address']}")
    print(f"  model store {info['model_store']}")
    if info.get("key_file"):
        print(f"  key file    {info['key_file']}")
    print(f"  logs        {info['log_dir']}")


class StopApp(Application):
    name = "jupyter-torchserve stop"
    description = "Stop the running engine(s)."
    all = Bool(False, help="Stop every engine, not only the newest.").tag(config=True)
    flags = {"all": ({"StopApp": {"all": True}}, "Stop every running engine.")}

    def start(self) -> None:
        from .launcher import stop_engine

        engines = discovery.find_engines()
        if not engines:
            print("no engine is running")
            return
        for info in engines if self.all else engines[:1]:
            stop_engine(info)
            print(f"stopped engine pid {info['pid']}")


class StatusApp(Application):
    name = "jupyter-torchserve status"
    description = "Show running engines and their models."

    def start(self) -> None:
        from .client import Client, EngineError

        engines = discovery.find_engines()
        if not engines:
            print("no engine is running")
            self.exit(1)
        for info in engines:
            _print_info(info)
            try:
                client = Client.from_info(info, timeout=10)
                status = client.engine_status()
                for g in status.get("gpus", []):
                    print(
                        f"  gpu {g['index']}   {g['name']} "
                        f"{g['memory_used'] // 2**20}/{g['memory_total'] // 2**20} MiB"
                    )
                for m in client.models:
                    for d in client.describe(m["modelName"], "all"):
                        workers = ", ".join(w["status"] for w in d["workers"]) or "no workers"
                        print(f"  model {d['modelName']} v{d['modelVersion']}: {workers}")
            except EngineError as e:
                print(f"  (not answering: {e})")


class TokenApp(Application):
    name = "jupyter-torchserve token"
    description = 'Print a key of the running engine, for curl: -H "Authorization: Bearer $(jupyter-torchserve token)".'
    type = Unicode("management", help="management, inference or API").tag(config=True)
    pid = Int(0, help="The engine with this pid (default: the newest).").tag(config=True)
    management_address = Unicode(
        "", help="The engine with this management address (default: the newest)."
    ).tag(config=True)
    aliases = {
        "type": "TokenApp.type",
        "pid": "TokenApp.pid",
        "management-address": "TokenApp.management_address",
    }

    def start(self) -> None:
        kinds = ("management", "inference", "API")  # the key file's names; Keys' in lower case
        if self.type not in kinds:
            print(f"--type must be one of {', '.join(kinds)}", file=sys.stderr)
            self.exit(2)
        if self.pid or self.management_address:
            info = discovery.select_engine(
                pid=self.pid or None, management_address=self.management_address or None
            )
            if info is None:
                running = discovery.describe_engines(discovery.find_engines()) or "  (none)"
                print(f"no running engine matches; running engines:\n{running}", file=sys.stderr)
                self.exit(1)
        else:
            info = discovery.find_engine()
        if info is None:
            print("no engine is running", file=sys.stderr)
            self.exit(1)
        if not info.get("key_file"):
            print("token authorization is off for this engine", file=sys.stderr)
            self.exit(1)
        key = getattr(discovery.read_keys(info), self.type.lower())
        if key is None:
            print(
                f"the engine's key file {info['key_file']} is missing, unreadable or holds "
                f"no {self.type} key; restart the engine to write a new one",
                file=sys.stderr,
            )
            self.exit(1)
        print(key)


class ExportApp(Application):
    name = "jupyter-torchserve export"
    description = (
        "Write what KServe, T9k, Ray Serve or TorchServe need to serve a model: "
        "jupyter-torchserve export NAME|FILE.mar --to kserve|t9k|ray|torchserve [options]. "
        "NAME is a model the running engine serves (the newest engine, as `status` lists)."
    )
    to = Unicode("kserve", help="kserve, t9k, ray or torchserve").tag(config=True)
    version = Unicode("", help="Export only this version (default: all served).").tag(config=True)
    out = Unicode("", help="Where to write it (default ./NAME-TO).").tag(config=True)
    protocol = Unicode("v1", help="KServe protocol: v1, v2 or grpc-v2.").tag(config=True)
    gpu = Int(0, help="GPUs per replica.").tag(config=True)
    min_replicas = Int(-1, help="Minimum replicas (default: the model's min workers).").tag(
        config=True
    )
    max_replicas = Int(-1, help="Maximum replicas (default: the model's max workers).").tag(
        config=True
    )
    image = Unicode("", help="The serving image the runtimes name.").tag(config=True)
    storage_uri = Unicode("", help="Where the cluster finds the bundle.").tag(config=True)
    run = Bool(False, help="Ray: deploy the bundle and print its URL.").tag(config=True)
    ray_address = Unicode("", help="Ray: the cluster's dashboard address.").tag(config=True)
    serve_port = Int(0, help="Ray: the port of Serve's HTTP proxy.").tag(config=True)
    force = Bool(False, help="Write into a non-empty --out.").tag(config=True)
    aliases = {
        name.replace("_", "-"): f"ExportApp.{name}"
        for name in (
            "to", "version", "out", "protocol", "gpu", "min_replicas", "max_replicas",
            "image", "storage_uri", "ray_address", "serve_port",
        )
    }  # fmt: skip
    flags = {
        "run": ({"ExportApp": {"run": True}}, "Ray: deploy the bundle and print its URL."),
        "force": ({"ExportApp": {"force": True}}, "Write into a non-empty --out."),
    }

    def start(self) -> None:
        """One line on stderr and exit status 1 for anything the user can fix."""
        from .client import EngineError, EngineNotRunning
        from .export import ExportError, export
        from .export.options import check_ray_flags

        if len(self.extra_args) != 1:
            print("give one model NAME or .mar path (see --help)", file=sys.stderr)
            self.exit(2)
        try:
            check_ray_flags(self.to, self.run, self.ray_address, self.serve_port)
            bundle = export(
                self.extra_args[0],
                to=self.to,
                version=self.version or None,
                out=self.out or None,
                protocol=self.protocol,
                gpu=self.gpu,
                min_replicas=None if self.min_replicas < 0 else self.min_replicas,
                max_replicas=None if self.max_replicas < 0 else self.max_replicas,
                image=self.image or None,
                storage_uri=self.storage_uri or None,
                run=self.run,
                ray_address=self.ray_address or None,
                serve_port=self.serve_port or None,
                force=self.force,
            )
        except ExportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(1)
        except EngineNotRunning as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            self.exit(1)
        except EngineError as exc:  # the engine's answer, e.g. 404 ModelNotFoundException
            print(f"error: {exc.status} {exc.type}: {exc.message}", file=sys.stderr)
            self.exit(1)
        except Exception as exc:  # Ray failed to start or deploy: its reason, no frames
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.exit(1)
        print(bundle)


class TorchServeApp(Application):
    name = "jupyter-torchserve"
    version = __version__
    description = "Serve PyTorch models with a TorchServe-compatible engine."
    subcommands = {
        "start": (StartApp, StartApp.description),
        "stop": (StopApp, StopApp.description),
        "status": (StatusApp, StatusApp.description),
        "token": (TokenApp, "Print the management (or --type inference) key of the engine."),
        "export": (ExportApp, "Write a model's bundle for KServe, T9k, Ray Serve or TorchServe."),
    }

    def start(self) -> None:
        if self.subapp is None:
            self.print_subcommands()
            if self.extra_args:  # traitlets lists the commands without saying why
                print(f"error: unknown command {self.extra_args[0]!r}", file=sys.stderr)
            self.exit(1)
        self.subapp.start()


def main(argv: list[str] | None = None) -> None:
    app = TorchServeApp.instance()
    app.initialize(argv)
    app.start()
