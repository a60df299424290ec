"""What `export()` returns: the files written and the commands that come next.

The same object is what the magic, the CLI verb and the sidebar show, so its text and HTML
forms are the user-facing report; they carry no logic beyond layout.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Bundle:
    target: str  # kserve | t9k | ray | torchserve
    model: str
    versions: list[str]
    out: Path
    files: list[Path]  # relative to out
    next_steps: list[tuple[str, str]]  # (what it does, shell command)
    notes: list[str] = field(default_factory=list)
    url: str | None = None  # where it answers, once `run` deployed it
    ray_address: str | None = None  # the Ray dashboard it was deployed through
    ray_cluster: Any = None  # the LocalRayCluster `run` started (its .stop() ends it)

    def paths(self) -> list[Path]:
        """Absolute paths of the files written."""
        return [self.out / f for f in self.files]

    def __str__(self) -> str:
        lines = [
            f"Exported {self.model} ({', '.join(self.versions)}) for {self.target} to {self.out}:"
        ]
        lines += [f"  {f}" for f in self.files]
        if self.url:
            lines.append(f"Serving at {self.url}")
        for note in self.notes:
            lines.append(f"Note: {note}")
        if self.next_steps:
            lines.append("Next:")
            for what, command in self.next_steps:
                lines.append(f"  # {what}")
                lines += [f"  {line}" for line in command.splitlines()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: object, cycle: bool) -> None:
        p.text(str(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        e = html.escape
        files = "".join(f"<li><code>{e(str(f))}</code></li>" for f in self.files)
        steps = "".join(
            f"<li>{e(what)}<pre>{e(command)}</pre></li>" for what, command in self.next_steps
        )
        notes = "".join(f"<p><b>Note:</b> {e(n)}</p>" for n in self.notes)
        url = f"<p>Serving at <a href='{e(self.url)}'>{e(self.url)}</a></p>" if self.url else ""
        return (
            f"<div><p>Exported <b>{e(self.model)}</b> ({e(', '.join(self.versions))}) for "
            f"<b>{e(self.target)}</b> to <code>{e(str(self.out))}</code>:</p>"
            f"<ul>{files}</ul>{url}{notes}"
            + (f"<p>Next:</p><ol>{steps}</ol>" if steps else "")
            + "</div>"
        )
