"""Take this machine out of the notebooks' saved outputs before they are committed.

A notebook run prints where things are (the model store, the key file, the kernel's
Python); those paths name the machine and the run's temporary folders, which mean nothing
to a reader and must not be committed. This rewrites, in outputs only:

- `/tmp/<run folder>/...` as `$TMPDIR/run/...` (the run's own temporary folder);
- an absolute path to a virtual environment's Python as `.venv/bin/python`.

    python scripts/scrub_notebook_outputs.py notebooks/*.ipynb

tests/test_notebook_outputs.py keeps the committed notebooks clean of both.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import nbformat

TMP_RUN = re.compile(r"/tmp/[^/\s\"'<>]+/")
VENV_PYTHON = re.compile(r"/(?:[^/\s\"'<>]+/)*\.venv/bin/python")


def scrub_text(text: str) -> str:
    return TMP_RUN.sub("$TMPDIR/run/", VENV_PYTHON.sub(".venv/bin/python", text))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def scrub_notebook(path: Path) -> bool:
    """Rewrite `path`'s outputs in place; True when anything changed."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    changed = False
    for cell in nb.cells:
        outputs = cell.get("outputs")
        if outputs:
            scrubbed = nbformat.from_dict(_scrub(outputs))
            if scrubbed != outputs:
                cell["outputs"] = scrubbed
                changed = True
    if changed:
        nbformat.write(nb, path)  # nbformat's own layout: the diff is the paths only
    return changed


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        if scrub_notebook(Path(arg)):
            print(f"scrubbed {arg}")
