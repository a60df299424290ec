"""A canary: a share of a model's default-route traffic sent to another of its versions.

The default route is every request that names the model but no version: `/predictions/m`,
`/explanations/m`, KServe v1 (which has no version in its URL), v2 without `/versions/`,
and gRPC's calls without a version. They all resolve their version through
`ModelRegistry.get_version(name, None)`, which asks the model's canary, so one rule splits
every protocol alike. A request that names a version always goes to that version.

Why random per request rather than every n-th request: each request is an independent draw,
so the split holds for any mix of clients, protocols and batch sizes, and no client can fall
into a pattern that always hits (or never hits) the canary. The draws are recorded (how many
default-route requests each version got since the canary began), so describe, `/metrics`
(`jts_route_requests_total{route="default"|"canary"}`) and the sidebar show the split that
actually happened beside the one asked for.

A canary lasts until it is ended, until its version becomes the default (promote), or until
either of its two versions is unregistered; it is not written to the snapshot (TorchServe's
layout has no place for it), so it also ends when the engine stops.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request

#: The roles a version plays on the default route while a canary runs (the metric's label).
DEFAULT_ROUTE = "default"
CANARY_ROUTE = "canary"


def parse_percent(value: str | float | None) -> float:
    """The canary's share in percent: a number above 0 and below 100 (400 otherwise).

    0 and 100 are refused because they are not a canary: 0 is `DELETE .../canary`, and 100
    is making the version the default (`set-default`, the notebook's `promote`).
    """
    if value is None or value == "":
        raise bad_request("Parameter percent is required (a number between 0 and 100).")
    try:
        percent = float(value)
    except (TypeError, ValueError):
        raise bad_request(f"percent must be a number, not {value!r}") from None
    if not 0 < percent < 100:
        raise bad_request(
            f"percent must be above 0 and below 100, not {percent:g}: end a canary with "
            "DELETE /models/{model_name}/canary, make a version take all of the traffic with "
            "PUT /models/{model_name}/{version}/set-default"
        )
    return percent


@dataclass
class Canary:
    """`version` takes `percent` % of the default route; the rest stays with the default."""

    version: str
    percent: float
    started: float = field(default_factory=time.time)
    #: default-route requests sent to each version since the canary began
    routed: dict[str, int] = field(default_factory=dict)
    draw: Callable[[], float] = field(default=random.random, repr=False)

    def choose(self, default: str) -> str:
        """The version this one default-route request goes to (and count it)."""
        chosen = self.version if self.draw() * 100 < self.percent else default
        self.routed[chosen] = self.routed.get(chosen, 0) + 1
        return chosen

    def role(self, version: str) -> str:
        return CANARY_ROUTE if version == self.version else DEFAULT_ROUTE

    def to_json(self, default: str) -> dict[str, Any]:
        """What describe and `GET /models/{m}/canary` show: asked for, and what happened."""
        total = sum(self.routed.get(v, 0) for v in (default, self.version))
        return {
            "defaultVersion": default,
            "canaryVersion": self.version,
            "percent": self.percent,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "requests": {v: self.routed.get(v, 0) for v in (default, self.version)},
            "observedPercent": (
                round(100 * self.routed.get(self.version, 0) / total, 2) if total else None
            ),
        }

    def version_json(self, version: str, default: str) -> dict[str, Any] | None:
        """The `traffic` of one version's describe entry (None: it plays no part)."""
        if version not in (default, self.version):
            return None
        total = sum(self.routed.get(v, 0) for v in (default, self.version))
        mine = self.routed.get(version, 0)
        is_canary = version == self.version
        return {
            "role": CANARY_ROUTE if is_canary else DEFAULT_ROUTE,
            "percent": self.percent if is_canary else 100 - self.percent,
            "requests": mine,
            "observedPercent": round(100 * mine / total, 2) if total else None,
        }
