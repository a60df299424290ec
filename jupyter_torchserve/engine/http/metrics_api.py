"""The metrics API: `GET /metrics`, Prometheus' text format, filtered like TorchServe's."""

from __future__ import annotations

from ..errors import bad_request
from .base import BaseHandler


class MetricsHandler(BaseHandler):
    api = None

    def get(self) -> None:
        names = parse_names(self.request.query_arguments)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.registry.metrics.exposition(names))


def parse_names(arguments: dict[str, list[bytes]]) -> list[str] | None:
    """TorchServe's `?name[]=a&name[]=b` filter."""
    raw = arguments.get("name[]") or arguments.get("name") or []
    try:
        names = [v.decode() for v in raw]
    except UnicodeDecodeError:
        raise bad_request("Parameter name[] must be UTF-8 text (metric names)") from None
    return names or None
