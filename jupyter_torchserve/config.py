"""Engine configuration: traitlets traits, plus TorchServe's `config.properties` keys.

Traitlets lets the same options come from `jupyter_server_config.py`, `ipython_config.py`,
a `jupyter_torchserve_config.py` or the command line. TorchServe users bring a
`config.properties`; the keys that mean the same thing here are read from it, so an existing
file keeps working (`--ts-config`).
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable


def _default_root() -> Path:
    return Path(jupyter_data_dir()) / "torchserve"


class EngineConfig(Configurable):
    """Everything the serving engine can be told."""

    inference_address = Unicode(
        "http://127.0.0.1:8080", help="Inference API address (TorchServe: inference_address)."
    ).tag(config=True)
    management_address = Unicode(
        "http://127.0.0.1:8081", help="Management API address (TorchServe: management_address)."
    ).tag(config=True)
    metrics_address = Unicode(
        "http://127.0.0.1:8082", help="Metrics API address (TorchServe: metrics_address)."
    ).tag(config=True)
    grpc_inference_address = Unicode(
        "127.0.0.1", help="Host of the gRPC inference API (TorchServe: grpc_inference_address)."
    ).tag(config=True)
    grpc_inference_port = Int(
        None,
        allow_none=True,
        help="Port of the gRPC inference API: TorchServe's InferenceAPIsService and KServe v2 "
        "(TorchServe: grpc_inference_port, 7070 there). Unset: no gRPC inference API.",
    ).tag(config=True)
    grpc_management_address = Unicode(
        "127.0.0.1", help="Host of the gRPC management API (TorchServe: grpc_management_address)."
    ).tag(config=True)
    grpc_management_port = Int(
        None,
        allow_none=True,
        help="Port of the gRPC management API (TorchServe: grpc_management_port, 7071 there). "
        "Unset: no gRPC management API.",
    ).tag(config=True)
    enable_grpc_ssl = Bool(
        False, help="Serve gRPC over TLS with certificate_file and private_key_file."
    ).tag(config=True)
    model_store = Unicode(help="Directory that register `url=` names are resolved in.").tag(
        config=True
    )
    state_dir = Unicode(
        help="Where logs, the key file, the snapshot and unpacked archives live. "
        "Defaults to a folder per management port, so two engines never share one."
    ).tag(config=True)
    load_models = Unicode(
        "", help="Models to load at start: 'all', 'a.mar,b.mar' or 'name=a.mar,...'."
    ).tag(config=True)
    default_workers_per_model = Int(
        1, help="Workers for each start-up model (register's initial_workers defaults to 0)."
    ).tag(config=True)
    number_of_gpu = Int(
        None, allow_none=True, help="Use at most this many GPUs (default: all visible)."
    ).tag(config=True)
    job_queue_size = Int(100, min=1, help="Requests a model version may queue before 503.").tag(
        config=True
    )
    max_workers_per_model = Int(
        0, min=0, help="Most workers one model version may have; 0: four per CPU core."
    ).tag(config=True)
    max_workers = Int(
        0,
        min=0,
        help="Most workers the engine runs in all (the sum of every version's min_worker); "
        "0: eight per CPU core, at most one per 512 MiB of memory.",
    ).tag(config=True)
    max_models = Int(512, min=1, help="Most model versions the engine holds registered.").tag(
        config=True
    )
    max_request_size = Int(6553500, help="Largest request body in bytes (413 beyond).").tag(
        config=True
    )
    max_response_size = Int(6553500, help="Largest response body in bytes.").tag(config=True)
    default_response_timeout = Float(
        120.0, help="Seconds a batch may take before its worker is replaced."
    ).tag(config=True)
    default_startup_timeout = Float(120.0, help="Seconds a worker may take to load.").tag(
        config=True
    )
    allowed_urls = List(
        Unicode(),
        default_value=[],
        help="Regexes a register URL outside the model store must match. Empty: model store only.",
    ).tag(config=True)
    disable_token_authorization = Bool(False, help="Serve the management API without a token.").tag(
        config=True
    )
    inference_token_required = Bool(
        False, help="Also require the inference key on the inference API."
    ).tag(config=True)
    token_expiration_min = Float(
        0.0, help="Minutes a key stays valid (0: until the engine stops)."
    ).tag(config=True)
    enable_model_api = Bool(True, help="Allow register and unregister over HTTP.").tag(config=True)
    private_key_file = Unicode(
        "", help="PEM private key for https:// addresses and gRPC TLS (TorchServe's key)."
    ).tag(config=True)
    certificate_file = Unicode(
        "", help="PEM certificate for https:// addresses and gRPC TLS (TorchServe's key)."
    ).tag(config=True)
    keystore = Unicode(
        "", help="A PKCS12 keystore with the TLS key and certificate, instead of the PEM pair."
    ).tag(config=True)
    keystore_pass = Unicode("", help="The keystore's password.").tag(config=True)
    keystore_type = Unicode("PKCS12", help="PKCS12 (JKS is not read: convert it).").tag(config=True)
    model_snapshot = Unicode(
        "", help="A TorchServe model_snapshot (JSON text or a file path) to restore at start."
    ).tag(config=True)
    snapshot = Bool(True, help="Keep a snapshot of models and restore it on start.").tag(
        config=True
    )
    batch_size = Int(1, help="Default batch size for register.").tag(config=True)
    max_batch_delay = Int(100, help="Default max batch delay (ms) for register.").tag(config=True)
    max_inflight_per_worker = Int(
        2, help="Batches sent to a worker before its previous one answered (pipelining)."
    ).tag(config=True)
    busy_poll_us = Int(
        300,
        min=0,
        help="Microseconds the engine and an idle worker poll without sleeping while an answer "
        "or the next batch is due, at light load and while that leaves a CPU free; a worker "
        "whose client is a little slower stretches its window up to 4 times this. 0 always "
        "sleeps. Cuts about a third off a small model's latency at one connection on a VM, "
        "for some CPU; see docs/performance.md.",
    ).tag(config=True)
    worker_threads = Int(
        0,
        help="torch threads per worker; 0 means (cores - 1) divided by the workers asked for.",
    ).tag(config=True)
    model_log_max_bytes = Int(
        20 * 1024**2,
        help="A model's log is moved to <model>.log.1 beyond this size (0: never).",
    ).tag(config=True)
    install_py_dep_per_model = Bool(
        False, help="pip-install an archive's requirements file into a per-model folder."
    ).tag(config=True)
    max_archive_size = Int(
        4 * 1024**3,
        min=1,
        help="Largest archive in bytes: a download stops past it, and so does unpacking one "
        "(the total of its members as written).",
    ).tag(config=True)
    download_timeout = Float(
        300.0, min=0.001, help="Seconds a register URL's download may take, redirects included."
    ).tag(config=True)
    shutdown_timeout = Float(
        10.0,
        min=0,
        help="Seconds a stop waits for the requests already received to be answered (HTTP "
        "and gRPC) before it closes their connections; a second SIGTERM or Ctrl+C closes "
        "them at once. `jupyter-torchserve stop` waits this long plus 15 s (the workers' "
        "exit and the rest of the stop), then kills the engine.",
    ).tag(config=True)
    # The autoscaler (engine/autoscale.py), for versions whose max_worker is above min_worker
    autoscale_interval = Float(
        0.25, min=0.01, help="Seconds between the autoscaler's looks at each model's queue."
    ).tag(config=True)
    autoscale_queue_depth = Int(
        4,
        min=1,
        help="Add a worker when at least this many requests per live worker are queued ...",
    ).tag(config=True)
    autoscale_queue_wait_ms = Float(
        200.0, min=0, help="... or the oldest queued request has waited this long (ms) ..."
    ).tag(config=True)
    autoscale_up_window = Float(
        1.0, min=0, help="... for this many seconds in a row (up to max_worker)."
    ).tag(config=True)
    autoscale_cooldown = Float(
        30.0,
        min=0,
        help="Drain a worker when one has been idle, with nothing queued, this many seconds "
        "(and as long since the last change), down to min_worker.",
    ).tag(config=True)

    @validate("inference_address", "management_address", "metrics_address")
    def _address(self, proposal: Any) -> str:
        """Refused here, in the process that asked, rather than as a traceback from the
        engine's start-up (or a port urllib cannot read, deep in its key check)."""
        try:
            split_address(proposal["value"])
        except ValueError as e:
            raise TraitError(f"{proposal['trait'].name}: {e}") from None
        return proposal["value"]

    @default("model_store")
    def _model_store_default(self) -> str:
        return str(_default_root() / "model-store")

    @default("state_dir")
    def _state_dir_default(self) -> str:
        return str(_default_root() / f"engine-{port_of(self.management_address)}")

    def resolved_state_dir(self) -> Path:
        """The state dir, made if need be; one that cannot be made or written is refused
        with `StateDirUnusable`, naming it, rather than a traceback from deep in a start."""
        path = Path(self.state_dir).expanduser().resolve()
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        except OSError as e:
            raise StateDirUnusable(
                f"cannot use {path} as the engine's state dir (state_dir): {e.strerror or e}"
            ) from None
        return path


class StateDirUnusable(OSError):
    """The configured state dir cannot be made or written."""


#: The file every way of starting an engine reads (the Jupyter config path, like
#: ``jupyter_server_config.py``); the kernel and the server add their own files' values.
CONFIG_FILE = "jupyter_torchserve_config"


def loaded_engine_config() -> dict[str, Any]:
    """The ``EngineConfig`` values this process's own config files set, for an engine it starts.

    Why: an engine runs in its own process, which sees none of the files a kernel
    (``ipython_config.py``) or a Jupyter server (``jupyter_server_config.py``) loaded; these
    values travel with the start request (the caller's explicit values win over them).
    The running traitlets Application (the kernel's or the server's) and the IPython shell
    hold what their files set.
    """
    import sys

    from traitlets.config import Application

    sections = []
    if Application.initialized():
        sections.append(Application.instance().config)
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        sections.append(shell.config)
    values: dict[str, Any] = {}
    for config in sections:
        values.update(engine_values(config))
    return values


def engine_values(config: Any) -> dict[str, Any]:
    """The ``EngineConfig`` section of a traitlets ``Config`` as plain values (JSON-able)."""
    names = set(EngineConfig.class_trait_names(config=True))
    section = config.get("EngineConfig", {}) if "EngineConfig" in config else {}
    return {k: v for k, v in dict(section).items() if k in names and _json_value(v)}


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def port_of(address: str) -> int:
    return split_address(address)[1]


def split_address(address: str) -> tuple[str, int]:
    """`http://127.0.0.1:8080` -> ("127.0.0.1", 8080); a bare `host:port` works too."""
    if "://" not in address:
        address = "http://" + address
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https", ""):
        raise ValueError(f"only http and https addresses are supported, got {address!r}")
    try:
        port = parts.port
    except ValueError:  # urllib's own words name neither the address nor the range
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"the port of {address!r} is not one of 1-65535")
    host = parts.hostname or "127.0.0.1"
    return host, port or (443 if parts.scheme == "https" else 80)


#: TorchServe config.properties keys read into the EngineConfig trait of the same name.
_TS_SAME_NAME = (
    "inference_address",
    "management_address",
    "metrics_address",
    "model_store",
    "grpc_inference_address",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_port",
    "enable_grpc_ssl",
    "certificate_file",
    "private_key_file",
    "keystore",
    "keystore_pass",
    "keystore_type",
    "load_models",
    "default_workers_per_model",
    "number_of_gpu",
    "job_queue_size",
    "max_request_size",
    "max_response_size",
    "default_response_timeout",
    "default_startup_timeout",
    "allowed_urls",
    "disable_token_authorization",
    "enable_model_api",
    "model_snapshot",
    "install_py_dep_per_model",
    "token_expiration_min",
)
#: TorchServe config.properties key -> our trait. The value is converted by the trait's own
#: type (`_ts_value`), so each option's type is told once, in `EngineConfig`.
_TS_KEYS: dict[str, str] = {
    **{key: key for key in _TS_SAME_NAME},
    # ours (TorchServe has no autoscaler): `jts_` + the trait; TorchServe ignores them
    **{
        f"jts_{trait}": trait
        for trait in EngineConfig.class_trait_names(config=True)
        if trait.startswith("autoscale_")
    },
}


def _ts_value(trait: str, raw: str) -> Any:
    """A config.properties string as the value ``trait`` holds (TorchServe's spelling)."""
    if trait == "load_models":  # TorchServe reads "ALL" in any case; the engine knows "all"
        return "all" if raw.strip().lower() == "all" else raw
    kind = EngineConfig.class_traits()[trait]
    if isinstance(kind, Bool):
        return _bool(raw)
    if isinstance(kind, Int):
        return int(raw)
    if isinstance(kind, Float):
        return float(raw)
    if isinstance(kind, List):  # comma-separated, as TorchServe's allowed_urls
        return [item for item in raw.split(",") if item]
    return str(raw)


def _bool(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java `.properties` text: `key=value` or `key: value`, `#`/`!` comments,
    backslash continuations; the last duplicate key wins, as in TorchServe."""
    props: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", logical)
        if match:
            props[match.group(1)] = match.group(2).strip()
        elif logical:
            props[logical] = ""
        logical = ""
    return props


def load_ts_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Read the keys of a TorchServe `config.properties` that mean the same thing here.

    Returns trait name -> value. `$$VAR$$` placeholders are filled in and, with
    `enable_envvars_config=true`, `TS_*` variables override the file, as in TorchServe.
    Keys with no effect here are returned under `_ignored`, so the caller can say which
    ones they are (`ignored_keys_line`) instead of silently dropping them.
    """
    env = os.environ if environ is None else environ
    props = resolve_ts_properties(parse_properties(Path(path).read_text()), {}, env)
    values, ignored = ts_traits(props, str(path))
    values["_ignored"] = ignored
    return values


#: TorchServe 0.12's environment variables: the `TS_*` constants of its ConfigManager (read
#: from model-server.jar with javap), each naming the config key it overrides when
#: `enable_envvars_config=true`. Not always `TS_` + the key in capitals (token_expiration_min).
TS_ENVIRONMENT: dict[str, str] = {
    "TS_DEBUG": "debug",
    "TS_INFERENCE_ADDRESS": "inference_address",
    "TS_MANAGEMENT_ADDRESS": "management_address",
    "TS_METRICS_ADDRESS": "metrics_address",
    "TS_LOAD_MODELS": "load_models",
    "TS_BLACKLIST_ENV_VARS": "blacklist_env_vars",
    "TS_DEFAULT_WORKERS_PER_MODEL": "default_workers_per_model",
    "TS_DEFAULT_RESPONSE_TIMEOUT": "default_response_timeout",
    "TS_DEFAULT_STARTUP_TIMEOUT": "default_startup_timeout",
    "TS_UNREGISTER_MODEL_TIMEOUT": "unregister_model_timeout",
    "TS_NUMBER_OF_NETTY_THREADS": "number_of_netty_threads",
    "TS_NETTY_CLIENT_THREADS": "netty_client_threads",
    "TS_JOB_QUEUE_SIZE": "job_queue_size",
    "TS_NUMBER_OF_GPU": "number_of_gpu",
    "TS_METRICS_CONFIG": "metrics_config",
    "TS_METRICS_MODE": "metrics_mode",
    "TS_MODEL_METRICS_AUTO_DETECT": "model_metrics_auto_detect",
    "TS_DISABLE_SYSTEM_METRICS": "disable_system_metrics",
    "TS_IPEX_ENABLE": "ipex_enable",
    "TS_CPU_LAUNCHER_ENABLE": "cpu_launcher_enable",
    "TS_CPU_LAUNCHER_ARGS": "cpu_launcher_args",
    "TS_IPEX_GPU_ENABLE": "ipex_gpu_enable",
    "TS_ASYNC_LOGGING": "async_logging",
    "TS_CORS_ALLOWED_ORIGIN": "cors_allowed_origin",
    "TS_CORS_ALLOWED_METHODS": "cors_allowed_methods",
    "TS_CORS_ALLOWED_HEADERS": "cors_allowed_headers",
    "TS_DECODE_INPUT_REQUEST": "decode_input_request",
    "TS_KEYSTORE": "keystore",
    "TS_KEYSTORE_PASS": "keystore_pass",
    "TS_KEYSTORE_TYPE": "keystore_type",
    "TS_CERTIFICATE_FILE": "certificate_file",
    "TS_PRIVATE_KEY_FILE": "private_key_file",
    "TS_MAX_REQUEST_SIZE": "max_request_size",
    "TS_MAX_RESPONSE_SIZE": "max_response_size",
    "TS_LIMIT_MAX_IMAGE_PIXELS": "limit_max_image_pixels",
    "TS_DEFAULT_SERVICE_HANDLER": "default_service_handler",
    "TS_SERVICE_ENVELOPE": "service_envelope",
    "TS_MODEL_SERVER_HOME": "model_server_home",
    "TS_MODEL_STORE": "model_store",
    "TS_PREFER_DIRECT_BUFFER": "prefer_direct_buffer",
    "TS_ALLOWED_URLS": "allowed_urls",
    "TS_INSTALL_PY_DEP_PER_MODEL": "install_py_dep_per_model",
    "TS_ENABLE_METRICS_API": "enable_metrics_api",
    "TS_GRPC_INFERENCE_ADDRESS": "grpc_inference_address",
    "TS_GRPC_MANAGEMENT_ADDRESS": "grpc_management_address",
    "TS_GRPC_INFERENCE_PORT": "grpc_inference_port",
    "TS_GRPC_MANAGEMENT_PORT": "grpc_management_port",
    "TS_GRPC_INFERENCE_MAX_CONNECTION_AGE_MS": "grpc_inference_max_connection_age_ms",
    "TS_GRPC_MANAGEMENT_MAX_CONNECTION_AGE_MS": "grpc_management_max_connection_age_ms",
    "TS_GRPC_INFERENCE_MAX_CONNECTION_AGE_GRACE_MS": "grpc_inference_max_connection_age_grace_ms",
    "TS_GRPC_MANAGEMENT_MAX_CONNECTION_AGE_GRACE_MS": "grpc_management_max_connection_age_grace_ms",
    "TS_ENABLE_GRPC_SSL": "enable_grpc_ssl",
    "TS_INITIAL_WORKER_PORT": "initial_worker_port",
    "TS_INITIAL_DISTRIBUTION_PORT": "initial_distribution_port",
    "TS_WORKFLOW_STORE": "workflow_store",
    "TS_CPP_LOG_CONFIG": "cpp_log_config",
    "TS_OPEN_INFERENCE_PROTOCOL": "ts_open_inference_protocol",
    "TS_TOKEN_EXPIRATION_TIME_MIN": "token_expiration_min",
    "TS_HEADER_KEY_SEQUENCE_ID": "ts_header_key_sequence_id",
    "TS_HEADER_KEY_SEQUENCE_START": "ts_header_key_sequence_start",
    "TS_HEADER_KEY_SEQUENCE_END": "ts_header_key_sequence_end",
    "TS_DISABLE_TOKEN_AUTHORIZATION": "disable_token_authorization",
    "TS_ENABLE_MODEL_API": "enable_model_api",
}

#: Keys this module acts on itself, not through a trait: they are not "ignored".
_RESOLUTION_KEYS = {"enable_envvars_config", "use_env_allowed_urls"}
_PLACEHOLDER = re.compile(r"\$\$([^$]+[^$])\$\$")


def resolve_ts_properties(
    props: Mapping[str, str], command_line: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """TorchServe's precedence, in the order its ConfigManager applies it: the file (with
    `$$VAR$$` filled in from the environment), then the command line (`--model-store`,
    `--models`, `--enable-model-api`, `--disable-token-auth`), then, only with
    `enable_envvars_config=true` in the file, the `TS_*` environment variables.
    `TS_ALLOWED_URLS` counts only with `use_env_allowed_urls=true`, as there.
    """
    merged = {key: _fill_placeholders(key, value, environ) for key, value in props.items()}
    merged.update(command_line)
    if _bool(merged.get("enable_envvars_config", "false")):
        for variable, key in TS_ENVIRONMENT.items():
            if variable == "TS_ALLOWED_URLS" and not _bool(
                merged.get("use_env_allowed_urls", "false")
            ):
                continue
            if variable in environ:
                merged[key] = environ[variable]
    return merged


def _fill_placeholders(key: str, value: str, environ: Mapping[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ValueError(f"{key}={value}: environment variable {name} is not set")
        return environ[name]

    return _PLACEHOLDER.sub(fill, value)


def ts_traits(props: Mapping[str, str], where: str = "config") -> tuple[dict[str, Any], list[str]]:
    """Resolved TorchServe keys -> (EngineConfig trait values, the keys with no effect here)."""
    values: dict[str, Any] = {}
    ignored = []
    for key, raw in props.items():
        if key in _TS_KEYS:
            trait = _TS_KEYS[key]
            try:
                values[trait] = _ts_value(trait, raw)
            except ValueError as e:
                raise ValueError(f"{where}: bad value for {key}: {raw!r} ({e})") from None
        elif key not in _RESOLUTION_KEYS:
            ignored.append(key)
    # TorchServe with token auth on (its default) requires the inference key too
    values.setdefault(
        "inference_token_required", not values.get("disable_token_authorization", False)
    )
    return values, ignored


def ignored_keys_line(ignored: list[str]) -> str | None:
    """The one line said at start about TorchServe keys that change nothing here."""
    if not ignored:
        return None
    return "TorchServe settings accepted but not acted on by jupyter_torchserve: " + ", ".join(
        sorted(set(ignored))
    )


def parse_model_snapshot(value: str) -> dict[str, Any] | None:
    """A TorchServe `model_snapshot` is JSON text in config.properties; accept a path too."""
    if not value:
        return None
    text = value
    if not value.lstrip().startswith("{"):
        text = Path(value).expanduser().read_text()
    return json.loads(text)
