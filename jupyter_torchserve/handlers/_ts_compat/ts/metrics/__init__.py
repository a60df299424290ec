"""``ts.metrics`` (compat): the names handlers use to emit custom metrics."""
