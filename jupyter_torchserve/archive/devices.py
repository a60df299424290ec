"""Which device a model is on, and bringing its inputs there.

The kernel's model may live on a GPU while its example was made on the CPU (a test split, an
image the deploy decoded), or the other way round. Every check that calls the model in the
kernel (the archiver's reference and reload checks, the deploy's parity check, evaluation)
moves the inputs to the model, never the model to the inputs: the model is the user's, and a
copy of it may not fit on the other device.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch


def model_device(model: object) -> torch.device:
    """The device of the model's first parameter or buffer; the CPU for a model with none
    (or anything that is not an ``nn.Module``)."""
    if isinstance(model, torch.nn.Module):
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            return tensor.device
    return torch.device("cpu")


def to_device(inputs: Any, device: torch.device) -> Any:
    """``inputs`` (a tensor, or a tuple, list or dict of them) with every tensor on ``device``;
    anything else is passed through as it is."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, tuple):
        return tuple(to_device(x, device) for x in inputs)
    if isinstance(inputs, list):
        return [to_device(x, device) for x in inputs]
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    return inputs
