"""Source capture: free globals by scope analysis, imports for installed code, clear refusals."""

from __future__ import annotations

import sys

import pytest
from _archive_helpers import ipython_shell, run_cell

from jupyter_torchserve.archive.capture import SourceCaptureError, capture_module, free_globals


def test_free_globals_ignores_locals_and_parameters():
    source = (
        "class Net(Base):\n"
        "    K = SIZE\n"
        "    def forward(self, x):\n"
        "        y = helper(x)\n"
        "        return [act(v) for v in y]\n"
    )
    assert sorted(free_globals(source, "Net")) == ["Base", "SIZE", "act", "helper"]


@pytest.fixture()
def shell():
    original_main = sys.modules["__main__"]
    yield ipython_shell()
    sys.modules["__main__"] = original_main


def test_notebook_variable_named_like_a_parameter_is_not_captured(shell):
    run_cell(
        shell,
        """
        import torch as T
        from torch.nn import Linear as Dense
        x = T.randn(3)        # a notebook tensor called x ...
        ACTS = {"relu": "relu"}
        class Net(T.nn.Module):
            def __init__(self):
                super().__init__()
                self.d = Dense(3, 3)
            def forward(self, x):  # ... and a parameter called x
                return getattr(T, ACTS["relu"])(self.d(x))
        """,
    )
    module = capture_module([shell.user_ns["Net"]])
    assert "import torch as T" in module.source
    assert "from torch.nn.modules.linear import Linear as Dense" in module.source
    assert "ACTS = {'relu': 'relu'}" in module.source
    assert "x =" not in module.source
    namespace: dict = {}
    exec(compile(module.source, "model.py", "exec"), namespace)
    assert namespace["Net"]()(namespace["T"].ones(2, 3)).shape == (2, 3)


def test_latest_redefinition_wins(shell):
    run_cell(shell, "class Again:\n    def f(self):\n        return 1\n")
    run_cell(shell, "class Again:\n    def f(self):\n        return 2\n")
    source = capture_module([shell.user_ns["Again"]]).source
    assert "return 2" in source and "return 1" not in source


def test_lambda_and_nested_class_are_refused(shell):
    run_cell(
        shell,
        """
        act = lambda t: t
        class UsesLambda:
            def f(self, t):
                return act(t)
        def factory():
            class Inner:
                pass
            return Inner
        Inner = factory()
        """,
    )
    with pytest.raises(
        SourceCaptureError, match="lambda .* cannot be captured by source; define it with 'def'"
    ):
        capture_module([shell.user_ns["UsesLambda"]])
    with pytest.raises(SourceCaptureError, match="Inner is defined inside a function"):
        capture_module([shell.user_ns["Inner"]])


def test_jupyter_torchserve_dependencies_are_refused(shell):
    run_cell(
        shell,
        """
        from jupyter_torchserve.archive import manifest
        class NeedsUs:
            def f(self):
                return manifest.ARCHIVER_VERSION
        """,
    )
    with pytest.raises(SourceCaptureError, match="archives must not import jupyter_torchserve"):
        capture_module([shell.user_ns["NeedsUs"]])
