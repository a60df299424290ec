"""A minimal, real metrics cache for handlers (what ``context.metrics`` is in our workers).

TorchServe handlers call ``context.metrics.add_time(...)`` and friends; in TorchServe those go
to ``model_metrics.log``. Our worker instead reads the recorded values back after each batch
(:meth:`MetricsCache.drain`) and ships them to the engine, which exposes them on the metrics
port. Keeping the cache a plain list of dicts keeps that hand-over trivial and picklable.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class MetricsCache:
    """Records metrics emitted by a handler; the signatures follow TorchServe's metric cache.

    Every ``add_*`` method accepts the positional order TorchServe handlers use
    (``name, value, idx, unit, dimensions``) so that existing handler code works unchanged.
    """

    def __init__(self, model_name: str | None = None) -> None:
        self.model_name = model_name
        self.request_ids: dict[int, str] | None = None
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -- recording ---------------------------------------------------------------------------
    def _record(
        self,
        name: str,
        value: float,
        unit: str,
        idx: int | str | None,
        dimensions: list[Any] | None,
        metric_type: str,
    ) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise TypeError("metric name must be a non-empty str")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"metric value must be an int or float, got {type(value).__name__}")
        request_id = None
        if idx is not None:
            if isinstance(idx, int) and self.request_ids:
                request_id = self.request_ids.get(idx)
            else:
                request_id = str(idx)
        dims: dict[str, str] = {}
        for dim in dimensions or []:
            # TorchServe passes Dimension objects (name, value); accept tuples and dicts too.
            if isinstance(dim, dict):
                dims.update({str(k): str(v) for k, v in dim.items()})
            elif isinstance(dim, (tuple, list)) and len(dim) == 2:
                dims[str(dim[0])] = str(dim[1])
            elif hasattr(dim, "name") and hasattr(dim, "value"):
                dims[str(dim.name)] = str(dim.value)
        if self.model_name and "ModelName" not in dims:
            dims["ModelName"] = self.model_name
        record = {
            "name": name,
            "value": float(value),
            "unit": unit,
            "type": metric_type,
            "dimensions": dims,
            "request_id": request_id,
            "timestamp": time.time(),
        }
        with self._lock:
            self._records.append(record)
        return record

    def add_metric(
        self,
        name: str,
        value: float,
        unit: str = "count",
        idx: int | str | None = None,
        dimensions: list[Any] | None = None,
        metric_type: str = "COUNTER",
    ) -> dict[str, Any]:
        """Record a metric of any unit (TorchServe's generic ``add_metric``)."""
        return self._record(name, value, unit, idx, dimensions, str(metric_type))

    def add_counter(
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        dimensions: list[Any] | None = None,
        metric_type: str = "COUNTER",
    ) -> dict[str, Any]:
        """Record a counter increment."""
        return self._record(name, value, "count", idx, dimensions, str(metric_type))

    def add_time(
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        unit: str = "ms",
        dimensions: list[Any] | None = None,
        metric_type: str = "GAUGE",
    ) -> dict[str, Any]:
        """Record a duration (``ms`` by default, like TorchServe)."""
        if unit not in ("ms", "s", "us", "ns"):
            raise ValueError(f"the unit of a time metric must be ms, s, us or ns, not {unit!r}")
        return self._record(name, value, unit, idx, dimensions, str(metric_type))

    def add_size(
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        unit: str = "MB",
        dimensions: list[Any] | None = None,
        metric_type: str = "GAUGE",
    ) -> dict[str, Any]:
        """Record a size (``MB`` by default, like TorchServe)."""
        if unit not in ("MB", "kB", "GB", "B"):
            raise ValueError(f"the unit of a size metric must be MB, kB, GB or B, not {unit!r}")
        return self._record(name, value, unit, idx, dimensions, str(metric_type))

    def add_percent(
        self,
        name: str,
        value: float,
        idx: int | str | None = None,
        dimensions: list[Any] | None = None,
        metric_type: str = "GAUGE",
    ) -> dict[str, Any]:
        """Record a percentage."""
        return self._record(name, value, "percent", idx, dimensions, str(metric_type))

    # -- reading (the worker side) -----------------------------------------------------------
    @property
    def records(self) -> list[dict[str, Any]]:
        """A copy of everything recorded and not yet drained."""
        with self._lock:
            return list(self._records)

    def drain(self) -> list[dict[str, Any]]:
        """Return and forget the recorded metrics (called by the worker after each batch)."""
        with self._lock:
            records, self._records = self._records, []
        return records
