"""``%torchserve``: the one-line notebook face of the engine.

Why argparse (with ``error``/``exit`` turned into exceptions): users already know the
TorchServe command lines, ``--help`` comes for free at every level, and a typo prints the
usage with the error instead of killing the kernel (argparse's default ``sys.exit``) or
dumping a traceback. Every subcommand is a thin call into :mod:`jupyter_torchserve.api`,
which scripts and tests use directly; errors meant for the user are
:class:`~jupyter_torchserve.api.TorchServeError`, shown by IPython as one clean message.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from . import api
from .deployment import Deployment, deploy
from .parity import DEFAULT_TOLERANCE

PROG = "%torchserve"


class _HelpShown(Exception):
    """argparse printed --help and wanted to exit."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting the process.

    The top-level parser has ``exit_on_error=False``; subcommand parsers keep argparse's
    default so that their errors go through :meth:`error` and show *their* usage.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr)
        raise _HelpShown()


def build_parser() -> _Parser:
    """The whole command line; kept separate so tests and docs can inspect it."""
    p = _Parser(
        prog=PROG,
        exit_on_error=False,
        description="Serve PyTorch models from this notebook through a local, "
        "TorchServe-compatible engine.",
        epilog=f"Run `{PROG} COMMAND --help` for the options of a command.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help: str) -> _Parser:
        return sub.add_parser(name, help=help, description=help)

    def model_opts(q: _Parser) -> None:
        q.add_argument("model", metavar="MODEL", help="a torch.nn.Module in the namespace")
        q.add_argument("--name", required=True, help="model name (TorchServe's rules)")
        q.add_argument("--version", help="model version (default 1.0)")
        q.add_argument(
            "--handler",
            help="a built-in handler (tensor, image_classifier, image_segmenter, "
            "object_detector, text_classifier), a handler .py file, or a name in the "
            "namespace (a handler class, or a dict of preprocess/postprocess functions)",
        )
        q.add_argument("--example", metavar="EXPR", help="an example input (expression)")
        q.add_argument("--format", default="auto", help="auto | export | torchscript | eager")
        q.add_argument(
            "--extra-files", metavar="EXPR", help="dict {file name: content or path} (expression)"
        )
        q.add_argument(
            "--handler-config", metavar="EXPR", help="dict for the handler, e.g. mean/std, topk"
        )
        q.add_argument("--requirements", metavar="EXPR", help="list of pip requirements")
        q.add_argument(
            "--archive-format", default="default", help="default | tgz | no-archive | zip-store"
        )

    q = add("deploy", "Archive a model, serve it, and check the served answers match.")
    model_opts(q)
    q.add_argument("--workers", type=int, default=1, help="initial workers (default 1)")
    q.add_argument("--batch-size", type=int, default=1)
    q.add_argument("--max-batch-delay", type=int, default=100, metavar="MS")
    dev = q.add_mutually_exclusive_group()
    dev.add_argument("--gpu", dest="device", action="store_const", const="gpu")
    dev.add_argument("--cpu", dest="device", action="store_const", const="cpu")
    q.add_argument("--replace", action="store_true", help="replace a served name/version")
    q.add_argument("--no-parity", action="store_true", help="skip the parity check")
    q.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    q.add_argument("--response-timeout", type=float, metavar="S")

    q = add("archive", "Write a .mar archive (pre-flight checked) without serving it.")
    model_opts(q)
    q.add_argument("--export-path", default=".", metavar="DIR")
    q.add_argument("--force", action="store_true", help="overwrite an existing archive")
    q.add_argument("--no-preflight", action="store_true")

    q = add("start", "Start the engine (or say which one is already running).")
    q.add_argument("--inference-address")
    q.add_argument("--management-address")
    q.add_argument("--metrics-address")
    q.add_argument("--model-store", metavar="DIR")
    q.add_argument("--disable-token-auth", action="store_true")
    q.add_argument("--ts-config", metavar="FILE", help="a TorchServe config.properties")

    add("stop", "Stop the engine (models are restored from its snapshot on the next start).")

    q = add("status", "The engine, its GPUs and its models.")
    q.add_argument("--live", action="store_true", help="keep refreshing (does not block)")
    q.add_argument("--interval", type=float, default=2.0, metavar="S")
    q.add_argument("--duration", type=float, default=600.0, metavar="S")

    add("list", "Registered models and their versions.")

    q = add("describe", "Settings and workers of a model.")
    q.add_argument("name", metavar="NAME")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--version")
    g.add_argument("--all", action="store_true", help="every version")
    q.add_argument("--customized", action="store_true", help="include the handler's metadata")

    q = add("scale", "Change the number of workers.")
    q.add_argument("name", metavar="NAME")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--workers", type=int, metavar="N", help="exactly N workers")
    g.add_argument("--min", type=int, metavar="N", help="min workers (with --max)")
    q.add_argument("--max", type=int, metavar="M")
    q.add_argument("--version")
    q.add_argument("--async", dest="asynchronous", action="store_true")

    for verb, text in (("predict", "Send one request."), ("explain", "Ask for an explanation.")):
        q = add(verb, text)
        q.add_argument("name", metavar="NAME")
        q.add_argument("file", metavar="FILE", nargs="?", help="a file to send as the body")
        q.add_argument("--data", metavar="EXPR", help="an expression: tensor, bytes, JSON, text")
        q.add_argument("--version")
        q.add_argument("--content-type")
        if verb == "predict":
            q.add_argument(
                "--protocol",
                choices=("torchserve", "v1", "v2"),
                default="torchserve",
                help="torchserve (/predictions), KServe v1 or v2",
            )

    q = add("logs", "The tail of a model's worker log.")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--tail", type=int, default=200, metavar="N")

    q = add("metrics", "Prometheus metrics of the engine.")
    q.add_argument("--model", metavar="NAME", help="only this model's samples")
    q.add_argument("--name", action="append", metavar="FAMILY", help="only these families")
    q.add_argument("--raw", action="store_true", help="the Prometheus text as it is")

    q = add("set-default", "Make a version the default one.")
    q.add_argument("name", metavar="NAME")
    q.add_argument("version", metavar="VERSION")

    q = add("unregister", "Remove a model version (the default one without --version).")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--version")
    return p


@magics_class
class TorchServeMagics(Magics):
    """Holds the parser; each ``_cmd_<name>`` method runs one subcommand."""

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.parser = build_parser()

    @line_magic
    def torchserve(self, line: str) -> Any:
        """Serve PyTorch models: `%torchserve --help` lists the commands."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{self.parser.format_usage()}{PROG}: error: {exc}") from None
        try:
            args = self.parser.parse_args(argv)
        except _HelpShown:
            return None
        except argparse.ArgumentError as exc:
            raise UsageError(f"{self.parser.format_usage()}{PROG}: error: {exc}") from None
        if not args.command:
            self.parser.print_help()
            return None
        method = getattr(self, "_cmd_" + args.command.replace("-", "_"))
        try:
            return method(args)
        except (UsageError, api.TorchServeError):
            raise
        except Exception as exc:
            raise api.friendly(exc) from None

    # -- helpers -----------------------------------------------------------------------------
    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def _eval(self, expr: str | None, what: str) -> Any:
        """Evaluate an argument in the user's namespace; a bad one is a usage error."""
        if expr is None:
            return None
        try:
            return eval(expr, self.ns)  # noqa: S307 - the user's own notebook namespace
        except Exception as exc:
            raise UsageError(
                f"cannot evaluate {what} {expr!r}: {type(exc).__name__}: {exc}"
            ) from None

    def _handler(self, value: str | None) -> Any:
        """A namespace object (class, dict of functions) wins over a built-in name or path."""
        if value is None:
            return None
        if value.isidentifier() and value in self.ns:
            return self.ns[value]
        if value.isidentifier() or ".py" in value:
            return value  # a built-in handler name or a handler file
        return self._eval(value, "--handler")

    def _model_kwargs(self, args: argparse.Namespace) -> dict[str, Any]:
        return {
            "handler": self._handler(args.handler),
            "example": self._eval(args.example, "--example"),
            "format": args.format,
            "extra_files": self._eval(args.extra_files, "--extra-files"),
            "handler_config": self._eval(args.handler_config, "--handler-config"),
            "requirements": self._eval(args.requirements, "--requirements"),
            "archive_format": args.archive_format,
        }

    # -- subcommands -------------------------------------------------------------------------
    def _cmd_deploy(self, args: argparse.Namespace) -> Deployment:
        model = self._eval(args.model, "MODEL")
        return deploy(
            model,
            args.name,
            version=args.version,
            workers=args.workers,
            batch_size=args.batch_size,
            max_batch_delay=args.max_batch_delay,
            device=args.device or "auto",
            replace=args.replace,
            parity=not args.no_parity,
            tolerance=args.tolerance,
            response_timeout=args.response_timeout,
            **self._model_kwargs(args),
        )

    def _cmd_archive(self, args: argparse.Namespace) -> Any:
        from .archive import archive

        kw = self._model_kwargs(args)
        example = kw.pop("example")
        result = archive(
            self._eval(args.model, "MODEL"),
            args.name,
            version=args.version or "1.0",
            example_inputs=example,
            export_path=args.export_path,
            force=args.force,
            preflight=not args.no_preflight,
            **kw,
        )
        from .display import Message

        diff = result.max_abs_diff
        check = f"pre-flight max abs diff {diff:.3g}" if diff is not None else "no pre-flight"
        failed = [f"{a.format}: {a.error}" for a in result.attempts if not getattr(a, "ok", True)]
        text = f"Archived {args.name} → {result.path} (format {result.format}; {check})"
        if failed:
            text += "\nformats tried first: " + "; ".join(failed)
        return Message(text, result)

    def _cmd_start(self, args: argparse.Namespace) -> Any:
        config = {
            k: getattr(args, k)
            for k in ("inference_address", "management_address", "metrics_address", "model_store")
            if getattr(args, k)
        }
        if args.disable_token_auth:
            config["disable_token_authorization"] = True
        if args.ts_config:
            config["ts_config"] = args.ts_config
        info, started = api.start(**config)
        verb = "Started" if started else "Already running:"
        print(f"{verb} engine pid {info['pid']} — inference {info['inference_address']}")
        return api.status(info)

    def _cmd_stop(self, args: argparse.Namespace) -> Any:
        from .display import Message

        info = api.find()
        if info is None or not api.stop(info):
            return Message("No engine was running.")
        return Message(f"Stopped the engine (pid {info['pid']}).")

    def _cmd_status(self, args: argparse.Namespace) -> Any:
        if args.live:
            from .widgets import LiveStatus

            live = LiveStatus(api.status, interval=args.interval, duration=args.duration).show()
            self.ns["_torchserve_live"] = live  # so it can be stopped from code
            return None
        return api.status()

    def _cmd_list(self, args: argparse.Namespace) -> Any:
        return api.list_models()

    def _cmd_describe(self, args: argparse.Namespace) -> Any:
        version = "all" if args.all else args.version
        return api.describe(args.name, version, customized=args.customized)

    def _cmd_scale(self, args: argparse.Namespace) -> Any:
        if args.workers is not None:
            lo, hi = args.workers, args.workers
        else:
            lo, hi = args.min, args.max if args.max is not None else args.min
        if args.workers is not None and args.max is not None:
            raise UsageError("use either --workers N or --min N --max M")
        return api.scale(args.name, lo, hi, version=args.version, synchronous=not args.asynchronous)

    def _request_data(self, args: argparse.Namespace) -> Any:
        if (args.file is None) == (args.data is None):
            raise UsageError(f"{args.command} needs a FILE or --data EXPR (one of them)")
        if args.file is not None:
            path = Path(args.file).expanduser()
            if not path.is_file():
                raise UsageError(f"no such file: {args.file}")
            return path
        return self._eval(args.data, "--data")

    def _cmd_predict(self, args: argparse.Namespace) -> Any:
        data = self._request_data(args)
        if args.protocol == "torchserve":
            return api.predict(args.name, data, args.version, args.content_type)
        c = api.client()
        try:
            if args.protocol == "v1":
                return c.kserve_v1(args.name, kserve_v1_instances(data))
            return c.kserve_v2_infer(args.name, kserve_v2_inputs(data), version=args.version)
        except Exception as exc:
            raise api.friendly(exc) from None

    def _cmd_explain(self, args: argparse.Namespace) -> Any:
        data = self._request_data(args)
        return api.predict(args.name, data, args.version, args.content_type, explain=True)

    def _cmd_logs(self, args: argparse.Namespace) -> Any:
        return api.logs(args.name, tail=args.tail)

    def _cmd_metrics(self, args: argparse.Namespace) -> Any:
        m = api.metrics(args.name, model=args.model)
        if args.raw:
            print(m.text)
            return None
        return m

    def _cmd_set_default(self, args: argparse.Namespace) -> Any:
        return api.set_default(args.name, args.version)

    def _cmd_unregister(self, args: argparse.Namespace) -> Any:
        return api.unregister(args.name, args.version)


def _read(data: Any) -> Any:
    return data.read_bytes() if isinstance(data, Path) else data


def kserve_v1_instances(data: Any) -> list[Any]:
    """``{"instances": [...]}`` items: base64 for bytes, rows for tensors, JSON as given."""
    import base64

    data = _read(data)
    if isinstance(data, (bytes, bytearray)):
        return [{"b64": base64.b64encode(bytes(data)).decode()}]
    if hasattr(data, "tolist"):
        return data.tolist()
    return data if isinstance(data, list) else [data]


def kserve_v2_inputs(data: Any) -> list[dict[str, Any]]:
    """v2 ``inputs``: BYTES (base64) for bytes, the tensor's datatype/shape otherwise."""
    import base64

    data = _read(data)
    if isinstance(data, (bytes, bytearray)):
        b64 = base64.b64encode(bytes(data)).decode()
        return [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [b64]}]
    if isinstance(data, list) and data and isinstance(data[0], dict) and "datatype" in data[0]:
        return data
    if isinstance(data, dict) and "inputs" in data:
        return data["inputs"]
    import torch

    from .archive.schema import v2_datatype

    t = data if isinstance(data, torch.Tensor) else torch.as_tensor(data)
    return [
        {
            "name": "input-0",
            "shape": list(t.shape),
            "datatype": v2_datatype(t.dtype),
            "data": t.reshape(-1).tolist(),
        }
    ]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%torchserve`` (``%load_ext jupyter_torchserve`` or ipython_config.py)."""
    ipython.register_magics(TorchServeMagics)


def unload_ipython_extension(ipython: Any) -> None:  # pragma: no cover - nothing to undo
    """Magics stay registered until the shell ends; the engine keeps running on purpose."""
