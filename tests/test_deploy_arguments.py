"""deploy refuses what no archive can be made of before it starts (or even finds) an engine."""

from __future__ import annotations

import pytest
import torch

from jupyter_torchserve import api
from jupyter_torchserve.deployment import deploy


@pytest.fixture
def no_engine_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def start(**_config: object) -> None:
        raise AssertionError("deploy went to the engine with arguments it could have refused")

    monkeypatch.setattr(api, "start", start)


@pytest.mark.parametrize(
    "model,name,options,error,says",
    [
        (torch.nn.Linear(3, 2), "bad name!", {}, ValueError, "invalid model name 'bad name!'"),
        (torch.zeros(1, 3), "tens", {}, TypeError, "must be a torch.nn.Module, got torch.Tensor"),
        (torch.nn.Linear(3, 2), "lin", {"format": "pickle"}, ValueError, "not 'pickle'"),
    ],
)
def test_a_bad_argument_is_refused_before_the_engine(
    no_engine_step: None, model: object, name: str, options: dict, error: type, says: str
) -> None:
    with pytest.raises(error, match=says):
        deploy(model, name, progress="none", **options)
