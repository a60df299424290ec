"""Canary traffic from the notebook: start, look at, end and promote a canary of a model.

The split itself lives in the engine (``engine/canary.py``: a random draw per default-route
request, on every protocol); this module is the notebook's view of it. ``promote`` is
TorchServe's set-default, which in our engine also ends the canary, so promoting a canary
and making any version the default stay one operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import api
from .client import Client
from .display import esc, html_table, text_table


@dataclass
class CanarySplit:
    """The split of a model's default route: asked for, and what the requests actually did."""

    name: str
    data: dict[str, Any]
    status: str = ""

    @property
    def canary(self) -> dict[str, Any] | None:
        return self.data.get("canary")

    def table(self) -> tuple[list[str], list[list[Any]]]:
        c = self.canary
        if c is None:
            return ["version", "role", "share asked", "requests", "share seen"], [
                [self.data.get("defaultVersion"), "default", "100%", "", ""]
            ]
        total = sum(c["requests"].values())
        rows = []
        for version, role, percent in (
            (c["defaultVersion"], "default", 100 - c["percent"]),
            (c["canaryVersion"], "canary", c["percent"]),
        ):
            n = c["requests"].get(version, 0)
            seen = f"{100 * n / total:.1f}%" if total else ""
            rows.append([version, role, f"{percent:g}%", n, seen])
        return ["version", "role", "share asked", "requests", "share seen"], rows

    def _summary(self) -> str:
        c = self.canary
        if c is None:
            return f"Model {self.name}: no canary; version {self.data.get('defaultVersion')} " + (
                "takes all of the default route"
            )
        return (
            f"Model {self.name}: version {c['canaryVersion']} takes {c['percent']:g}% of the "
            f"default route (since {c['started']}), version {c['defaultVersion']} the rest"
        )

    def __repr__(self) -> str:
        head, rows = self.table()
        lines = [self.status, self._summary()] if self.status else [self._summary()]
        return "\n".join([*lines, text_table(head, rows)])

    def _repr_html_(self) -> str:
        head, rows = self.table()
        status = f"<p>{esc(self.status)}</p>" if self.status else ""
        return status + html_table(head, rows, self._summary())


def split(name: str, c: Client | None = None) -> CanarySplit:
    """The default route's split of ``name`` (its canary, or that it has none)."""
    with api.engine_client(c) as c:
        return CanarySplit(name, c.canary(name))


def canary(name: str, version: str, percent: float, c: Client | None = None) -> CanarySplit:
    """Send ``percent`` % of ``name``'s default-route requests to ``version``, drawn per request.

    Versioned URLs keep going to their version; starting a canary again changes its split
    and restarts its counts.
    """
    with api.engine_client(c) as c:
        out = c.start_canary(name, version, percent)
        return CanarySplit(name, c.canary(name), str(out.get("status", "")))


def end_canary(name: str, c: Client | None = None) -> CanarySplit:
    """End ``name``'s canary: the default version takes all of the default route again."""
    with api.engine_client(c) as c:
        out = c.end_canary(name)
        return CanarySplit(name, c.canary(name), str(out.get("status", "")))


def promote(name: str, version: str, c: Client | None = None) -> CanarySplit:
    """Make ``version`` the default (it takes all of the default route); ends the canary."""
    with api.engine_client(c) as c:
        out = c.set_default(name, version)
        status = str(out.get("status", "")) if isinstance(out, dict) else str(out)
        return CanarySplit(name, c.canary(name), status)
