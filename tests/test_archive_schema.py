"""The schema's inputs from an example: positions, keywords, and examples a model cannot take."""

from __future__ import annotations

import pytest
import torch

from jupyter_torchserve.archive.schema import build_schema, model_inputs


class TwoIn(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.sum(1, keepdim=True) + b.sum(1, keepdim=True)


class KeywordOnly(torch.nn.Module):
    def forward(self, a: torch.Tensor, *, b: torch.Tensor) -> torch.Tensor:
        return a + b


A, B = torch.ones(2, 4), torch.ones(2, 2, dtype=torch.int64)


def test_positional_inputs_are_named_by_position() -> None:
    inputs, names = model_inputs(TwoIn(), (A, B))
    assert inputs == (A, B) and names == ["input-0", "input-1"]
    assert model_inputs(TwoIn(), None) == (None, [])
    assert model_inputs(torch.nn.Linear(4, 1), A) == ((A,), ["input-0"])


def test_keyword_inputs_take_forward_order_and_their_keys() -> None:
    inputs, names = model_inputs(TwoIn(), {"b": B, "a": A})
    assert inputs == (A, B) and names == ["a", "b"]
    schema = build_schema(inputs, TwoIn()(*inputs), names)
    assert schema["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 2]},
    ]


@pytest.mark.parametrize(
    ("model", "example", "message"),
    [
        (TwoIn(), (A,), r"gives 1 input\(s\), but TwoIn\.forward\(a.*missing"),
        (TwoIn(), (A, B, A), r"gives 3 input\(s\), but TwoIn\.forward"),
        (TwoIn(), {"a": A, "c": B}, r"gives the keys \['a', 'c'\], but TwoIn\.forward"),
        (KeywordOnly(), {"a": A, "b": A}, r"takes \['b'\] only by keyword"),
    ],
)
def test_an_example_forward_cannot_take_is_refused(
    model: torch.nn.Module, example: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        model_inputs(model, example)
