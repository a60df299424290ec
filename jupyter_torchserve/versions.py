"""Which version a deploy registers, and how a replaced default hands its role over.

Why apart from the pipeline: these are the rules a user meets when a name is already served
(refuse, add a version, or replace one), told once here and read by the pipeline as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .api import ModelExistsError
from .client import Client, EngineError

#: Keys under which an engine's describe answer says whether a version is the default one.
_DEFAULT_KEYS = ("isDefault", "defaultVersion", "default")


@dataclass(frozen=True)
class Replaced:
    """The registered version a deploy replaces, and who else serves under the name."""

    version: str
    was_default: bool
    others: list[str]
    #: its describe entry (url, workers, batching), to register it again if the deploy fails
    registration: dict[str, Any] = field(default_factory=dict)


def choose_version(
    name: str,
    version: str | None,
    existing: list[dict[str, Any]],
    replace: bool,
    default: str | None = None,
) -> tuple[str, Replaced | None]:
    """The version to register and, when replacing, what it replaces.

    ``default`` is the version the engine serves as default (:func:`default_version`);
    ``replace`` without a version replaces that one, and it stays the default.
    Raises :class:`~jupyter_torchserve.api.ModelExistsError` when the name or version is
    already served and ``replace`` was not asked for.
    """
    versions = {str(d.get("modelVersion")): d for d in existing}
    if default not in versions:
        default = next((v for v, d in versions.items() if is_default(d)), None)
    if version is None:
        if not versions:
            return "1.0", None
        if not replace:
            raise ModelExistsError(
                f"A model named {name!r} is already served (versions: "
                f"{', '.join(versions)}). Pass --replace (replace=True) to replace its default "
                f"version, or --version X (version='X') to add a new version."
            )
        version = default or next(iter(versions))
    version = str(version)
    if version not in versions:
        return version, None
    if not replace:
        raise ModelExistsError(
            f"Model {name!r} version {version} is already registered. Pass --replace "
            f"(replace=True) to replace it, or a new --version."
        )
    others = [v for v in versions if v != version]
    was_default = default == version or default is None
    return version, Replaced(version, was_default, others, dict(versions[version]))


def default_version(c: Client, name: str, existing: list[dict[str, Any]]) -> str | None:
    """The version ``name``'s unversioned routes answer with (None when it is not served).

    Our engine flags it in each describe entry; TorchServe does not, but its describe without
    a version answers with the default one, so that is asked when no entry says.
    """
    flagged = [str(d.get("modelVersion")) for d in existing if is_default(d)]
    if flagged or not existing:
        return flagged[0] if flagged else None
    try:
        (desc, *_) = c.describe(name)
    except (EngineError, ValueError):
        return None
    return str(desc.get("modelVersion"))


def is_default(desc: dict[str, Any]) -> bool:
    """Whether a describe entry flags its version as the default one."""
    for key in _DEFAULT_KEYS:
        if key in desc:
            return bool(desc[key])
    return False


def unregister_replaced(c: Client, name: str, old: Replaced) -> None:
    """Unregister the replaced version; a default with siblings must hand the role over first."""
    try:
        c.unregister(name, old.version)
    except EngineError as exc:
        if exc.status != 403 or not old.others:
            raise
        c.set_default(name, old.others[0])
        c.unregister(name, old.version)


def served_as_default(c: Client, name: str, version: str, assumed: bool) -> bool:
    """Whether the engine now serves ``version`` as the default (``assumed`` if it won't say)."""
    try:
        for d in c.describe(name, "all"):
            if str(d.get("modelVersion")) == version and any(k in d for k in _DEFAULT_KEYS):
                return is_default(d)
    except Exception:  # a TorchServe without "all": keep what the pipeline expects
        pass
    return assumed


def register_again(c: Client, name: str, old: Replaced) -> None:
    """Register a replaced version once more from its describe entry, as it was served:
    the same archive, workers, batching and timeout, and the default role if it had it."""
    d = old.registration
    lo = int(d.get("minWorkers") or 0)
    c.register(
        str(d["modelUrl"]),
        model_name=name,
        batch_size=d.get("batchSize"),
        max_batch_delay=d.get("maxBatchDelay"),
        initial_workers=lo,
        synchronous=True,
        response_timeout=d.get("responseTimeout"),
        device_type=d.get("deviceType") or None,
    )
    hi = d.get("maxWorkers")
    if hi is not None and int(hi) > lo:
        c.scale(name, lo, int(hi), version=old.version)
    if old.was_default and old.others:
        c.set_default(name, old.version)
