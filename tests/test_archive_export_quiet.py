"""A model torch.export cannot trace costs the user one line, not its FX graph printed twice."""

from __future__ import annotations

import pytest
import torch

from jupyter_torchserve.archive import formats


class DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.export gives up here
            return self.lin(x)
        return -self.lin(x)


def test_a_failed_export_prints_no_graph(capsys: pytest.CaptureFixture[str]) -> None:
    model = DataDependent().eval()
    x = torch.randn(1, 4)
    with torch.no_grad():
        reference = model(x)
    with pytest.raises(Exception, match="(?i)data.dependent|guard|control flow"):
        formats.try_export(formats.Trial(model, (x,), reference, 1e-4, 1e-5))
    assert "def forward" not in capsys.readouterr().err
