"""A `/metrics` page (Prometheus text) as JSON-able families, read by prometheus_client's parser.

prometheus_client is already what the engine writes its page with, and its parser reads the
exposition of both servers we meet: our engine's and TorchServe 0.12's, whose label sets end
with a trailing comma (`{hostname="vm",}`), which a hand-written pattern gets wrong.
"""

from __future__ import annotations

import math
import re
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
    """Every family of the page, in page order, typed as prometheus_client reads it (a
    counter's samples are named ``*_total``); a malformed page raises ValueError."""
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


#: A ``# TYPE name counter`` line (see :func:`samples` for why it is rewritten).
_COUNTER_TYPE = re.compile(r"^(#\s*TYPE\s+\S+\s+)counter\s*$", re.MULTILINE)


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` of every sample under the page's own names; nan kept.

    Counters are read as untyped here because the parser renames a counter's samples to
    OpenMetrics' ``*_total``: TorchServe's ``ts_inference_latency_microseconds`` counter
    would become ``..._microseconds_total``, a name that neither the page nor a Prometheus
    server (hence no dashboard) uses, and a person reading the table looks for the page's.
    """
    page = _COUNTER_TYPE.sub(r"\1untyped", text)
    return [
        (s.name, dict(s.labels), float(s.value))
        for fam in text_string_to_metric_families(page)
        for s in fam.samples
    ]


def model_of(labels: dict[str, str]) -> str | None:
    """The model a sample is about: TorchServe's frontend says `model_name`, its backend
    metrics `ModelName`, and some exporters `model`."""
    return labels.get("model_name") or labels.get("ModelName") or labels.get("model")
