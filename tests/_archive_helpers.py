"""Shared helpers for the archive tests: notebook-like ``__main__`` classes, fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

#: Code run as notebook cells: classes, a helper function and a constant live in ``__main__``.
NOTEBOOK_CELL = """
import torch
from torch import nn
import torch.nn.functional as F

SCALE = 2.0

def helper(x):
    return F.relu(x) * SCALE

class Block(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.fc = nn.Linear(n, n)

    def forward(self, x):
        return helper(self.fc(x))

class Net(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Linear(4, hidden)
        self.block = Block(hidden)
        self.out = nn.Linear(hidden, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.out(self.drop(self.block(self.inp(x))))

class Branchy(Net):
    def forward(self, x):
        if x.sum() > 1e9:
            return x[:, :3]
        return super().forward(x)

torch.manual_seed(0)
model = Net(8)
x = torch.randn(1, 4)
"""


def ipython_shell() -> Any:
    """A real IPython shell whose ``__main__`` has no file, like a Jupyter kernel's."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    # The shell is a singleton: (re)install its module as __main__, as IPython does at start,
    # in case an earlier test put the original __main__ back.
    sys.modules["__main__"] = shell.user_module
    return shell


def run_cell(shell: Any, code: str) -> None:
    result = shell.run_cell(textwrap.dedent(code), store_history=True)
    result.raise_error()


def load_in_fresh_process(model_dirs: list[str], inputs_file: str | Path) -> list[Any]:
    """Load extracted archives, each with *its own* jts_model_loader, in one new interpreter.

    Returns each model's output as nested lists. Nothing of the test process (``__main__``, the
    notebook classes, ``jupyter_torchserve``) is visible there: ``-I`` isolates the child.
    """
    script = textwrap.dedent(
        """
        import importlib.util, json, sys
        import torch
        inputs = torch.load(sys.argv[1], weights_only=True)
        results = []
        for i, model_dir in enumerate(sys.argv[2:]):
            path = model_dir + "/jts_model_loader.py"
            spec = importlib.util.spec_from_file_location(f"loader{i}", path)
            loader = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loader)
            model = loader.load_model(model_dir, torch.device("cpu"))
            with torch.no_grad():
                results.append(model(*inputs).tolist())
        assert "jupyter_torchserve" not in sys.modules
        print(json.dumps(results))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, str(inputs_file), *map(str, model_dirs)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save_inputs(path: Path, *inputs: torch.Tensor) -> Path:
    torch.save(tuple(inputs), path)
    return path
