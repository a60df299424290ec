"""``ts.metrics.metric_type_enum`` (compat)."""

from enum import Enum


class MetricTypes(str, Enum):
    """Metric kinds handlers may name when adding metrics."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
