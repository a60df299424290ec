"""Taking back a deploy that failed part-way: deploy is all or nothing.

`deployment.run_pipeline` records each thing it adds (the archive and example files in the
store, the registered version) as it adds it; when a later step fails, `undo` removes them
and says what it did, so re-running the cell is never met with "already served".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .client import Client
from .versions import Replaced, unregister_replaced


@dataclass
class Rollback:
    """What a running deploy has added so far, so a failed one can take it back."""

    name: str
    files: list[Path] = field(default_factory=list)
    client: Client | None = None
    version: str | None = None
    others: list[str] = field(default_factory=list)
    registered: bool = False
    replaced: str | None = None

    def undo(self) -> str:
        """Remove what was added; returns the sentence that tells the user (or '')."""
        said = []
        if self.registered and self.client is not None and self.version is not None:
            gone = Replaced(self.version, True, self.others)
            try:
                unregister_replaced(self.client, self.name, gone)
                said.append(
                    f"The deploy was rolled back: {self.name} {self.version} is not served."
                )
            except Exception as exc:  # say what is left, and how to remove it
                said.append(
                    f"Rolling back failed ({exc}): remove it with `%torchserve unregister "
                    f"{self.name} --version {self.version}`."
                )
        elif self.files:
            said.append(f"Nothing was registered: {self.name} is as it was before.")
        if self.replaced is not None:
            said.append(f"The version it replaced ({self.replaced}) had already been removed.")
        for path in self.files:
            path.unlink(missing_ok=True)
        return " ".join(said)
