"""`%torchserve deploy` of a model with two inputs, its example a tuple or dict expression.

The user's case: ``%torchserve deploy twoin --name twoin --example "(a, b)"`` in a cell,
the magic's way to say ``deploy(twoin, "twoin", example=(a, b))``. The line is split like a
shell line, so the expression is quoted; a dict is spelt with ``dict(...)`` or braces, which
IPython would otherwise expand inside a magic line (see the README).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _notebook_helpers import engine, ts_env  # noqa: F401

from jupyter_torchserve import api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SETUP = """
import torch

class TwoIn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fa = torch.nn.Linear(4, 3)
        self.fb = torch.nn.Linear(2, 3)

    def forward(self, a, b):
        return self.fa(a) * 2 - self.fb(b)

twoin = TwoIn()
torch.manual_seed(1)
a, b = torch.randn(2, 4), torch.randn(2, 2)
"""


@pytest.fixture(scope="module")
def ip(ts_env: dict[str, Any]) -> Any:  # noqa: F811
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_torchserve")
    assert shell.run_cell(SETUP, store_history=False).success
    return shell


@pytest.mark.parametrize(
    ("name", "expr", "names"),
    [
        ("twoin", '"(a, b)"', ["input-0", "input-1"]),
        ("twoin_kw", '"dict(b=b, a=a)"', ["a", "b"]),
        ("twoin_braces", "\"{'a': a, 'b': b}\"", ["a", "b"]),
    ],
)
def test_deploy_magic_with_a_tuple_or_dict_example(
    ip: Any,
    engine: dict,  # noqa: F811
    name: str,
    expr: str,
    names: list[str],
) -> None:
    res = ip.run_cell(
        f"dep = %torchserve deploy twoin --name {name} --example {expr}", store_history=False
    )
    assert res.success, res.error_in_exec or res.error_before_exec
    dep = ip.user_ns["dep"]
    a, b, model = ip.user_ns["a"], ip.user_ns["b"], ip.user_ns["twoin"]
    want = model(a, b).detach()
    assert [i["name"] for i in dep.schema["inputs"]] == names
    assert dep.parity.ok, dep.parity
    assert torch.allclose(torch.tensor(dep.predict((a, b))), want, atol=1e-5)
    # the magic's own predict, with the inputs as a tuple expression too
    res = ip.run_cell(f'out = %torchserve predict {name} --data "(a, b)"', store_history=False)
    assert res.success, res.error_in_exec
    assert torch.allclose(torch.tensor(ip.user_ns["out"]), want, atol=1e-5)
    api.unregister(name, c=api.client(engine))
