"""The notebook's namespace as the commands see it: expressions and names given as options.

Why evaluate options: ``--example x[:1]`` or ``--handler-config cfg`` name objects the user
already has in the notebook; a bad expression is a usage error, not a traceback.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError


class UserNamespace:
    """The user's variables (``shell.user_ns``; an empty dict outside a shell)."""

    def __init__(self, ns: dict[str, Any] | None = None) -> None:
        self.ns: dict[str, Any] = ns if ns is not None else {}

    def eval(self, expr: str | None, what: str) -> Any:
        """Evaluate an argument in the user's namespace; None stays None."""
        if expr is None:
            return None
        try:
            return eval(expr, self.ns)  # noqa: S307 - the user's own notebook namespace
        except Exception as exc:
            raise UsageError(
                f"cannot evaluate {what} {expr!r}: {type(exc).__name__}: {exc}"
            ) from None

    def handler(self, value: str | None) -> Any:
        """A namespace object (class, dict of functions) wins over a built-in name or path."""
        if value is None:
            return None
        if value.isidentifier() and value in self.ns:
            return self.ns[value]
        if value.isidentifier() or ".py" in value:
            return value  # a built-in handler name or a handler file
        return self.eval(value, "--handler")
