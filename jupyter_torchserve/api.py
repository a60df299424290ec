"""The Python face of the engine for notebooks and scripts: its verbs and the user's errors.

Why a layer apart from the magics: scripts, the README demo and tests need the same calls
without IPython, and the magics stay a thin parser over these functions. Nothing here
imports IPython. ``deploy`` lives in :mod:`jupyter_torchserve.deployment`, the parity check
in :mod:`jupyter_torchserve.parity`; both build on this module, never the other way round.

Every verb talks to the engine through :func:`engine_client`, the one place that turns a
client, engine or archive failure into a :class:`TorchServeError` the user can act on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import discovery, display, loadtest, loadtest_view, payloads
from .client import Client, EngineError, EngineNotRunning, Response
from .discovery import EngineInfo
from .display import HOW_TO_START
from .explain_view import EXPLANATION_HEADER, Explanation, explanation
from .explain_widget import ExplanationPicker


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------
class TorchServeError(Exception):
    """An error meant for a person: IPython shows only its message, no internal traceback.

    ``_render_traceback_`` is IPython's hook for exceptions that know how to show
    themselves; the worker's own traceback (in the message) is what the user needs.
    """

    status: int | None = None  # the engine's HTTP status, when the engine answered

    def _render_traceback_(self) -> list[str]:
        red, reset = "\x1b[31m", "\x1b[0m"
        lines = str(self).splitlines() or [type(self).__name__]
        return [f"{red}{type(self).__name__}{reset}: {lines[0]}", *lines[1:]]


class ModelExistsError(TorchServeError):
    """The name/version is already served and ``replace`` was not asked for."""


class ParityError(TorchServeError):
    """The served model answers differently from the in-kernel one.

    ``deployment`` is the :class:`~jupyter_torchserve.deployment.Deployment` that failed:
    still registered so the user can look at it, unless it was a ``--replace`` (undone).
    """

    def __init__(self, message: str, deployment: Any) -> None:
        super().__init__(message)
        self.deployment = deployment


class EngineUnavailable(TorchServeError):
    """No engine is running (or it cannot be reached); the message says how to start one."""


def friendly(exc: BaseException) -> TorchServeError:
    """Turn a client/engine/archive exception into a message a notebook user can act on."""
    if isinstance(exc, TorchServeError):
        return exc
    if isinstance(exc, EngineNotRunning):
        return EngineUnavailable(f"{exc.message}\n{HOW_TO_START}")
    if isinstance(exc, EngineError):
        err = TorchServeError(f"{exc.status} {exc.type}: {exc.message}")
        err.status = exc.status
        return err
    return TorchServeError(f"{type(exc).__name__}: {exc}")


@contextmanager
def user_errors(*passthrough: type[BaseException]) -> Iterator[None]:
    """Re-raise any failure inside as :func:`friendly` says (``passthrough`` types as they are).

    ``from None``: the user reads the engine's message; our own frames would only hide it.
    """
    try:
        yield
    except (TorchServeError, *passthrough):
        raise
    except Exception as exc:
        raise friendly(exc) from None


@contextmanager
def engine_client(c: Client | None = None) -> Iterator[Client]:
    """``c``, or a client of the running engine, with failures turned into user errors."""
    c = c or client()
    with user_errors():
        yield c


# ------------------------------------------------------------------------------------------
# engine access
# ------------------------------------------------------------------------------------------
#: The engine this process (a kernel) talks to, once ``start`` or ``use`` chose one; every
#: verb, ``Deployment`` and snippet goes there, not to whichever engine started last.
_pinned: EngineInfo | None = None


def find() -> EngineInfo | None:
    """The engine this kernel uses: the pinned one, else the newest running (never starts one).

    A pinned engine that has stopped gives None (``client`` says so): falling back to
    another engine would send the user's next request somewhere they did not choose.
    """
    if _pinned is not None:
        return discovery.select_engine(pid=int(_pinned["pid"]))
    return discovery.find_engine()


def pinned() -> EngineInfo | None:
    """The engine ``start``/``use`` pinned this kernel to (None: the newest is used)."""
    return _pinned


def use(
    pid: int | EngineInfo | dict[str, Any] | None = None,
    port: int | None = None,
    management_address: str | None = None,
) -> EngineInfo:
    """Pin this kernel to the running engine with this pid, port or management address.

    ``pid`` may be the engine's info itself (what ``start``, ``find`` and
    ``launcher.start_engine`` return), as ``client``, ``stop`` and ``status`` take it."""
    global _pinned
    if isinstance(pid, dict):
        pid = int(pid["pid"])
    if pid is None and port is None and management_address is None:
        raise TorchServeError(
            "Name the engine: use(pid=N), use(port=P) or use(management_address=A)."
        )
    info = discovery.select_engine(pid, port, management_address)
    if info is None:
        running = discovery.find_engines()
        listing = discovery.describe_engines(running) if running else "  (none)"
        raise EngineUnavailable(f"No running engine matches. Running engines:\n{listing}")
    _pinned = info
    return info


def client(info: EngineInfo | dict[str, Any] | None = None) -> Client:
    """A :class:`~jupyter_torchserve.client.Client` of this kernel's engine (:func:`find`).

    Raises :class:`EngineUnavailable` (saying how to start one) when none runs.
    """
    info = info or find()
    if info is None:
        if _pinned is not None:
            raise EngineUnavailable(
                f"The engine this kernel uses (pid {_pinned['pid']}) is no longer running.\n"
                "Pick another with `%torchserve use --pid N` (or api.use()), or start one "
                "with `%torchserve start`."
            )
        raise EngineUnavailable("No jupyter_torchserve engine is running.\n" + HOW_TO_START)
    return Client.from_info(info)


def start(**config: Any) -> tuple[dict[str, Any], bool]:
    """Find a running engine or start one, and pin this kernel to it; ``(info, started_now)``.

    ``config`` holds EngineConfig values (``inference_address``, ``model_store``, ...). Without
    addresses the pinned engine (if it still runs) is the one found.
    """
    global _pinned
    from . import launcher

    addressed = any(k in config for k in ("inference_address", "management_address"))
    current = find() if _pinned is not None and not addressed else None
    if current is not None:
        return current, False
    before = {int(i["pid"]) for i in discovery.find_engines()}
    info = launcher.ensure_engine(**config)
    _pinned = info
    return info, int(info["pid"]) not in before


def stop(info: EngineInfo | dict[str, Any] | None = None) -> bool:
    """Stop the engine (this kernel's by default); False when none was running."""
    global _pinned
    from . import launcher

    info = info or find()
    if info is None:
        return False
    if _pinned is not None and int(_pinned["pid"]) == int(info["pid"]):
        _pinned = None
    return launcher.stop_engine(info)


def status(info: EngineInfo | dict[str, Any] | None = None) -> display.EngineStatus:
    """The engine, its GPUs and its models (``info=None`` when none is running)."""
    info = info or find()
    if info is None:
        return display.EngineStatus(None)
    c = client(info)
    try:
        engine = c.engine_status() or {}
    except Exception:  # a TorchServe without our /engine route
        engine = {}
    return display.EngineStatus(info, engine, list_models(c))


# ------------------------------------------------------------------------------------------
# verbs
# ------------------------------------------------------------------------------------------
def list_models(c: Client | None = None) -> display.ModelList:
    """Every model with each of its versions, workers and default flag."""
    with engine_client(c) as c:
        models = c.models
        descriptions = {}
        for m in models:
            try:
                descriptions[m["modelName"]] = c.describe(m["modelName"], "all")
            except Exception:  # a TorchServe that knows no "all"
                descriptions[m["modelName"]] = c.describe(m["modelName"])
    return display.ModelList(models, descriptions)


def describe(
    name: str, version: str | None = None, customized: bool = False, c: Client | None = None
) -> display.ModelDescription:
    """Settings and workers of one model (``version='all'`` for every version)."""
    with engine_client(c) as c:
        return display.ModelDescription(name, c.describe(name, version, customized=customized))


def scale(
    name: str,
    min_worker: int,
    max_worker: int | None = None,
    version: str | None = None,
    synchronous: bool = True,
    c: Client | None = None,
) -> display.Message:
    """Set the worker count; synchronous by default so the next cell sees the new workers."""
    with engine_client(c) as c:
        out = c.scale(name, min_worker, max_worker, version=version, synchronous=synchronous)
    return _message(out)


def set_default(name: str, version: str, c: Client | None = None) -> display.Message:
    """Make ``version`` the one ``/predictions/{name}`` and KServe routes answer with."""
    with engine_client(c) as c:
        return _message(c.set_default(name, version))


def unregister(name: str, version: str | None = None, c: Client | None = None) -> display.Message:
    """Remove a model version (the default one when ``version`` is None)."""
    with engine_client(c) as c:
        return _message(c.unregister(name, version))


def predict(
    name: str,
    data: Any,
    version: str | None = None,
    content_type: str | None = None,
    explain: bool = False,
    c: Client | None = None,
) -> Any:
    """Send one request; returns the decoded answer (JSON, text, or bytes).

    A failure comes back as :class:`TorchServeError`; a handler's exception (a 5xx) with the
    worker's traceback, so it shows in the cell instead of hiding in a log file.
    """
    with engine_client(c) as c:
        resp = c.predict(name, data, version=version, content_type=content_type, explain=explain)
    return decode_response(resp)


def explain(
    name: str,
    data: Any,
    version: str | None = None,
    content_type: str | None = None,
    target: int | None = None,
    c: Client | None = None,
) -> ExplanationPicker:
    """Ask for an explanation of ``data`` (toward ``target``, else the predicted class) and
    return it drawn: input | signed heatmap | overlay, or highlighted words for text.

    The returned object is shown as a PNG (any frontend, nbconvert, GitHub), as HTML, and in
    a live kernel as a widget whose dropdown of the top-k classes asks the engine again for
    the picked one. ``.attributions`` is the tensor, ``.raw`` the answer's JSON.
    """
    shown = data.read_bytes() if isinstance(data, Path) else data  # drawn beside it

    def toward(t: int | None) -> Explanation:
        with engine_client(c) as client_:
            resp = client_.explain(name, data, version, content_type, t)
        return explanation(
            resp.body,
            input=shown,
            info=resp.header(EXPLANATION_HEADER),
            latency=resp.elapsed_ms / 1000,
        )

    return ExplanationPicker(toward(target), toward)


def kserve_predict(
    name: str, data: Any, protocol: str, version: str | None = None, c: Client | None = None
) -> dict[str, Any]:
    """Send ``data`` through KServe ``v1`` or ``v2``, its body built by :mod:`.payloads`.

    v1 has no version in its route (it answers with the default version), as in KServe.
    """
    with engine_client(c) as c:
        if protocol == "v1":
            return c.kserve_v1(name, payloads.v1_instances(data))
        return c.kserve_v2_infer(name, payloads.v2_inputs(data), version=version)


def logs(name: str, tail: int = 200, c: Client | None = None) -> display.Logs:
    """The tail of a model's worker log."""
    with engine_client(c) as c:
        return display.Logs(name, c.logs(name, tail=tail))


def metrics(
    names: list[str] | None = None, model: str | None = None, c: Client | None = None
) -> display.Metrics:
    """Prometheus metrics as a table (``.text`` keeps the raw page)."""
    with engine_client(c) as c:
        return display.Metrics(c.metrics(names), model=model)


def bench(
    name: str,
    data: Any,
    options: loadtest.BenchOptions | None = None,
    *,
    progress: bool | str = True,
    c: Client | None = None,
    **settings: Any,
) -> loadtest_view.BenchResult:
    """Load-test ``name`` with ``data`` at each concurrency (and each worker count of
    ``workers``, restored afterwards); a table and picture of what the generator and the
    engine measured (``.rows``, ``.to_dataframe()``).

    ``options`` is a :class:`~jupyter_torchserve.loadtest.BenchOptions`; its fields may also
    be given as keywords (``concurrency=[1, 8]``, ``duration``, ``requests``, ``protocol``,
    ``workers``, ``version``, ``content_type``, ``slo_ms``), which override it.
    ``progress``: True shows a live bar and chart (text lines outside a widget front end),
    False nothing, or a mode ('widget', 'text', 'none').
    """
    try:
        opts = dataclasses.replace(options or loadtest.BenchOptions(), **settings)
    except ValueError as exc:
        raise TorchServeError(str(exc)) from None
    mode = None if progress is True else "none" if progress is False else str(progress)
    what = f"Load test of {name}" + (f" {opts.version}" if opts.version else "")
    view = loadtest_view.BenchProgress(what, mode=mode)
    with engine_client(c) as c:
        try:
            result = loadtest.run(c, name, data, opts, progress=view)
        except ValueError as exc:
            raise TorchServeError(str(exc)) from None
        except BaseException:
            view.finish(ok=False)
            raise
    view.finish()
    return result


def decode_response(resp: Response) -> Any:
    """JSON when the engine says JSON, text for text/*, raw bytes otherwise."""
    ctype = (resp.content_type or "").split(";")[0].strip()
    if ctype.endswith("json"):
        try:
            return resp.json()
        except ValueError:
            return resp.text
    if ctype.startswith("text/"):
        return resp.text
    return resp.body


def _message(out: Any) -> display.Message:
    """The engine's ``{"status": ...}`` answer as a one-line message (other JSON as it is)."""
    text = str(out["status"]) if isinstance(out, dict) and "status" in out else json.dumps(out)
    return display.Message(text, out)


def versions_of(c: Client, name: str) -> list[dict[str, Any]]:
    """Descriptions of every registered version of ``name`` ([] when it is not registered).

    The list is asked first: a describe of a name that is not there is a 404, which every
    first deploy would leave as a warning in the engine's log.
    """
    if name not in {m.get("modelName") for m in c.models}:
        return []
    try:
        return list(c.describe(name, "all"))
    except EngineError as exc:
        if exc.status == 404:
            return []
        raise
