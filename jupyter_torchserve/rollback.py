"""Taking back a deploy that failed part-way: deploy is all or nothing.

`deployment.run_pipeline` records each thing it adds (the archive and example files in the
store, the registered version) as it adds it; when a later step fails, `undo` removes them
and says what it did, so re-running the cell is never met with "already served".

A `--replace` writes its archive under the replaced version's file name and must unregister
that version before it can register its own. So before anything is written, the replaced
version's files are set aside (`set_aside`), and a failed replace puts them back and
registers the old version again as it was served: the user is left exactly where they were.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .client import Client
from .versions import Replaced, register_again, unregister_replaced

#: What a deploy writes into the store beside ``<name>-<version>``: its archive (a .mar, a
#: .tar.gz or a directory) and the example files of the snippets (payloads.write_example_files)
STORE_SUFFIXES = (
    "",
    ".mar",
    ".tar.gz",
    ".example.png",
    ".example.json",
    ".example.txt",
    ".v1.json",
    ".v2.json",
)


@dataclass
class Rollback:
    """What a running deploy has added so far, so a failed one can take it back."""

    name: str
    files: list[Path] = field(default_factory=list)
    client: Client | None = None
    version: str | None = None
    others: list[str] = field(default_factory=list)
    registered: bool = False
    #: the replaced version, once it has been unregistered
    replaced: Replaced | None = None
    #: (original path, where it waits) for the replaced version's files
    stashed: list[tuple[Path, Path]] = field(default_factory=list)
    stash_dir: Path | None = None

    def set_aside(self, old: Replaced | None, store: Path, stem: str) -> None:
        """Move the store's files of ``stem`` (the version ``old`` replaced) out of the way;
        nothing when the deploy replaces nothing.

        Why a folder inside the store: a move on one file system is a rename, so neither
        the old archive nor the engine's view of it is copied or half-written.
        """
        present = [store / f"{stem}{suffix}" for suffix in STORE_SUFFIXES]
        present = [p for p in present if p.exists() or p.is_symlink()]
        if old is None or not present:
            return
        self.stash_dir = Path(tempfile.mkdtemp(prefix=".jts-replaced-", dir=store))
        for path in present:
            kept = self.stash_dir / path.name
            shutil.move(str(path), kept)
            self.stashed.append((path, kept))

    def commit(self) -> None:
        """The deploy worked: the replaced version's files are no longer needed."""
        if self.stash_dir is not None:
            shutil.rmtree(self.stash_dir, ignore_errors=True)
            self.stash_dir = None
        self.stashed = []

    def undo(self) -> str:
        """Remove what was added, put back what was replaced; returns what to tell the user."""
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
        elif self.files or self.stashed:
            said.append(f"Nothing was registered: {self.name} is as it was before.")
        for path in self.files:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, kept in self.stashed:
            shutil.move(str(kept), path)
        self.commit()
        if self.replaced is not None:
            said.append(self._serve_replaced_again(self.replaced))
        return " ".join(said)

    def _serve_replaced_again(self, old: Replaced) -> str:
        if self.client is None or not old.registration.get("modelUrl"):
            return f"The version it replaced ({old.version}) had already been removed."
        try:
            register_again(self.client, self.name, old)
        except Exception as exc:  # the files are back: say how to serve it by hand
            url = old.registration["modelUrl"]
            return (
                f"The version it replaced ({old.version}) could not be registered again "
                f"({exc}): its archive is back in the store; register it with "
                f"`POST /models?url={url}` on the management API."
            )
        return f"{self.name} {old.version} is served again as before the --replace."
