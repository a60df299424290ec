"""``ts.metrics.dimension`` (compat)."""

from __future__ import annotations


class Dimension:
    """A metric dimension (name, value), as TorchServe handlers pass them."""

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def __str__(self) -> str:
        return f"{self.name}:{self.value}"

    def __repr__(self) -> str:
        return f"Dimension({self.name!r}, {self.value!r})"
