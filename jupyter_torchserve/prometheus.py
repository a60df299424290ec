"""A `/metrics` page (Prometheus text) as JSON-able families, read by prometheus_client's parser.

prometheus_client is already what the engine writes its page with, and its parser reads the
exposition of both servers we meet: our engine's and TorchServe 0.12's, whose label sets end
with a trailing comma (`{hostname="vm",}`), which a hand-written pattern gets wrong.
"""

from __future__ import annotations

import math
from typing import TypedDict

from prometheus_client.parser import text_string_to_metric_families


class Sample(TypedDict):
    name: str
    labels: dict[str, str]
    value: float | None  # None for nan and ±inf, which JSON cannot carry


class Family(TypedDict):
    name: str
    type: str
    help: str
    samples: list[Sample]


def parse(text: str) -> list[Family]:
    """Every family of the page, in page order; a malformed page raises ValueError."""
    families: list[Family] = []
    for fam in text_string_to_metric_families(text):
        samples: list[Sample] = [
            {
                "name": s.name,
                "labels": dict(s.labels),
                "value": s.value if math.isfinite(s.value) else None,
            }
            for s in fam.samples
        ]
        families.append(
            {"name": fam.name, "type": fam.type, "help": fam.documentation, "samples": samples}
        )
    return families


def model_of(labels: dict[str, str]) -> str | None:
    """The model a sample is about: TorchServe's frontend says `model_name`, its backend
    metrics `ModelName`, and some exporters `model`."""
    return labels.get("model_name") or labels.get("ModelName") or labels.get("model")
