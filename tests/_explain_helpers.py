"""The explanation tests' models and images, shared by the handler, engine and TorchServe
tiers so that each compares Captum on the same model and the same preprocessing."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import nn

#: the image handler's normalisation in these tests (handler_config mean/std)
MEAN, STD = 0.2, 0.3


class TinyCNN(nn.Module):
    """An 8x8 grayscale, 5-class CNN; tanh keeps the gradients varying along the IG path."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class BagOfWords(nn.Module):
    """A text classifier over an nn.Embedding: mean of the word vectors, then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(8, 6, padding_idx=0)
        self.fc = nn.Linear(6, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.embedding(ids)).mean(dim=1))


VOCAB = {"<pad>": 0, "<unk>": 1, "a": 2, "good": 3, "bad": 4, "film": 5, "plot": 6, "!": 7}


def png(seed: int) -> bytes:
    """A random 8x8 grayscale PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def model_input(image: bytes) -> torch.Tensor:
    """What the image handler feeds the model for ``image``: pixels in [0, 1], then mean/std."""
    pixels = np.asarray(Image.open(io.BytesIO(image)), dtype=np.float32) / 255.0
    return ((torch.from_numpy(pixels) - MEAN) / STD).reshape(1, 1, 8, 8)
