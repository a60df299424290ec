"""The notebook side's layout holds: no import circle, imports only run downwards, small modules.

Read from the source (every import statement, also those inside functions or behind
``TYPE_CHECKING``), so a new import that closes a circle fails here, not in a user's kernel.
The order below is the one docs/architecture.md describes for the notebook side.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jupyter_torchserve"

#: Notebook-side modules, lowest layer first: a module may import only from its own layer or
#: lower ones (circles inside a layer are caught by the circle test).
LAYERS: list[list[str]] = [
    [
        "payloads",
        "scores",
        "display",
        "snippets",
        "widgets",
        "loadtest_view",
        "loadtest",
        "loadtest_job",
        "explain_view",
        "explain_widget",
    ],
    ["api"],
    ["parity", "versions", "traffic", "evaluation", "comparison"],
    ["rollback"],
    ["deployment"],
    ["commands.*"],
    ["magics", "demo", "__init__"],  # the package's own lazy exports are the top
]
MAX_LINES = 450


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["jupyter_torchserve", *parts])


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Our modules that ``name`` imports (a submodule also runs its package's __init__)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            while target and target != "jupyter_torchserve":  # the root's exports are lazy
                if target in MODULES:  # a folder without __init__ (handlers/builtin) runs none
                    found.add(target)
                target = target.rpartition(".")[0]
    found.discard(name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int | None:
    """The layer of a notebook-side module (``commands.*``: the package and all in it)."""
    short = "__init__" if name == "jupyter_torchserve" else name.removeprefix("jupyter_torchserve.")
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            package = entry.removesuffix(".*")
            if short == package or (entry.endswith(".*") and short.startswith(package + ".")):
                return i
    return None


NOTEBOOK_SIDE = sorted(n for n in MODULES if layer_of(n) is not None)


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_layers_name_real_modules() -> None:
    for module in ("api", "deployment", "parity", "payloads", "versions", "magics", "demo"):
        assert f"jupyter_torchserve.{module}" in NOTEBOOK_SIDE
    assert "jupyter_torchserve.commands.deploy" in NOTEBOOK_SIDE
    assert "jupyter_torchserve.deployment" in GRAPH["jupyter_torchserve.commands.deploy"]


def test_no_import_circle_through_the_notebook_side() -> None:
    circles = [name for name in NOTEBOOK_SIDE if name in reachable(name)]
    assert not circles, f"these modules import themselves through others: {circles}"


def test_imports_only_run_downwards() -> None:
    upward = [
        f"{name} -> {target}"
        for name in NOTEBOOK_SIDE
        for target in GRAPH[name]
        if (layer_of(target) or 0) > (layer_of(name) or 0)
    ]
    assert not upward, upward


def test_nothing_below_imports_the_notebook_side() -> None:
    """The engine, the archiver and the handlers never reach up into the notebook face."""
    reaching_up = [
        f"{name} -> {target}"
        for name in MODULES
        if layer_of(name) is None
        for target in GRAPH[name]
        if layer_of(target) is not None
    ]
    assert not reaching_up, reaching_up


def test_notebook_modules_stay_small() -> None:
    sizes = {n: len(MODULES[n].read_text().splitlines()) for n in NOTEBOOK_SIDE}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}
