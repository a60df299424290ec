"""The sidebar's per-model numbers (requests, errors, latency in ms) from parsed metrics.

TorchServe names: `ts_inference_requests_total` (counter, label `model_name`) and
`ts_inference_latency_microseconds` (a running total); a histogram or summary whose name
holds `latency` gives a real p50 when the engine exports one.
"""

from __future__ import annotations

import math
import time
from typing import Any

from jupyter_torchserve.prometheus import Family, model_of

_REQUEST_COUNTERS = ("ts_inference_requests", "ts_inference_requests_total")
_LATENCY_TOTALS = ("ts_inference_latency_microseconds", "ts_inference_latency")


def _quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Estimate a quantile from cumulative histogram buckets (linear within the bucket)."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            span = count - prev_count
            frac = (rank - prev_count) / span if span else 1.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_count = le, count
    return prev_le


def _to_ms(name: str, value: float) -> float:
    if "microseconds" in name or name.endswith("_us"):
        return value / 1000.0
    if name.endswith("_seconds") or "_seconds_" in name:
        return value * 1000.0
    return value


def summarize(families: list[Family]) -> dict[str, Any]:
    """`{"timestamp", "models": {name: {requests, errors?, latency_ms_*}}, "totals"}`."""
    models: dict[str, dict[str, Any]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    latency_sum: dict[str, float] = {}
    for fam in families:
        fname, ftype = fam["name"], fam["type"]
        for s in fam["samples"]:
            model = model_of(s["labels"])
            if model is None:
                continue
            st = models.setdefault(model, {"requests": 0.0})
            value = s["value"]
            if value is None:
                continue
            sname = s["name"]
            if fname in _REQUEST_COUNTERS or sname == "ts_inference_requests_total":
                st["requests"] += value
            elif "error" in fname and "request" in fname:
                st["errors"] = st.get("errors", 0.0) + value
            elif "latency" in fname and ftype == "histogram" and sname.endswith("_bucket"):
                le = float(s["labels"].get("le", "inf"))
                buckets.setdefault(model, []).append((_to_ms(fname, le), value))
            elif "latency" in fname and ftype == "summary" and s["labels"].get("quantile") == "0.5":
                st["latency_ms_p50"] = _to_ms(fname, value)
            elif fname in _LATENCY_TOTALS or (
                "inference_latency" in fname and ftype in ("counter", "untyped", "gauge")
            ):
                latency_sum[model] = latency_sum.get(model, 0.0) + _to_ms(fname, value)
    for model, b in buckets.items():
        # several label sets (versions) -> merge by bucket bound
        merged: dict[float, float] = {}
        for le, count in b:
            merged[le] = merged.get(le, 0.0) + count
        p50 = _quantile_from_buckets(list(merged.items()), 0.5)
        if p50 is not None:
            models[model].setdefault("latency_ms_p50", p50)
    for model, total in latency_sum.items():
        requests = models[model]["requests"]
        if requests:
            models[model]["latency_ms_mean"] = total / requests
            models[model]["latency_ms_total"] = total
    totals = {
        "requests": sum(m["requests"] for m in models.values()),
        "latency_ms_total": sum(latency_sum.values()),
    }
    return {"timestamp": time.time(), "models": models, "totals": totals}
