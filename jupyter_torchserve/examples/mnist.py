"""The classic MNIST CNN, trained on scikit-learn's bundled ``load_digits``.

Why this exists: the worked notebook, the README demo and the tests all need a real, trained
digit classifier, and none of them may download MNIST. ``load_digits`` ships with scikit-learn
(1,797 8x8 digits); upscaled to 20x20 and padded to 28x28 like MNIST's own centring, they
train pytorch/examples' MNIST network to ~97% held-out accuracy in seconds on two CPU cores.

The same normalisation as TorchServe's MNIST example is used (mean 0.1307, std 0.3081), so
the built-in ``image_classifier`` handler with ``handler_config={"mean": MEAN, "std": STD}``
turns a grayscale PNG into exactly the tensor the model was trained on.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = (0.1307,)
STD = (0.3081,)
#: ``index_to_name.json`` for the image_classifier handler: class index -> label
LABELS: dict[str, str] = {str(i): str(i) for i in range(10)}


class Net(nn.Module):
    """pytorch/examples' MNIST CNN (two convolutions, dropout, two linear layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


@dataclass
class Digits:
    """Images as uint8 28x28 arrays (what a PNG holds) and their labels, split train/test."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _to_28x28(images8: np.ndarray) -> np.ndarray:
    """8x8 digits with values 0..16 -> 28x28 uint8, drawn in a centred 20x20 box like MNIST."""
    t = torch.as_tensor(images8, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    t = F.interpolate(t, size=(20, 20), mode="bilinear", align_corners=False)
    t = F.pad(t, (4, 4, 4, 4))
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()


def load_data(test_fraction: float = 0.2, seed: int = 0) -> Digits:
    """Load and upscale scikit-learn's digits; a fixed seed keeps the split reproducible."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _to_28x28(bunch.images)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Digits(images[train], labels[train], images[test], labels[test])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, 28, 28) or (28, 28) -> normalised float tensor (N, 1, 28, 28)."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    x = x.reshape(-1, 1, 28, 28)
    return (x - MEAN[0]) / STD[0]


def train(
    model: nn.Module | None = None,
    data: Digits | None = None,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` (a new :class:`Net` when None) and return it in eval mode.

    Adam rather than the example's Adadelta: it reaches high accuracy in a handful of epochs
    on 1,400 images, which keeps the notebook and the tests well under a minute.
    """
    torch.manual_seed(seed)
    model = Net() if model is None else model
    data = load_data(seed=seed) if data is None else data
    x = to_tensor(data.train_images)
    y = torch.as_tensor(data.train_labels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            opt.zero_grad()
            loss = F.nll_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Digits | None = None) -> float:
    """Held-out accuracy, so callers can check the model is worth serving."""
    data = load_data() if data is None else data
    model.eval()
    pred = model(to_tensor(data.test_images)).argmax(1).numpy()
    return float((pred == data.test_labels).mean())


def png_bytes(image: np.ndarray) -> bytes:
    """A 28x28 uint8 array as grayscale PNG bytes: what ``curl -T digit.png`` sends."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def digit_image(digit: int, data: Digits | None = None, nth: int = 0) -> np.ndarray:
    """The ``nth`` held-out image of ``digit`` (never seen in training)."""
    data = load_data() if data is None else data
    (where,) = np.nonzero(data.test_labels == digit)
    return data.test_images[where[nth]]


def save_digit_png(path: str | Path, digit: int, data: Digits | None = None, nth: int = 0) -> Path:
    """Write a held-out ``digit`` as a PNG file and return its path."""
    path = Path(path)
    path.write_bytes(png_bytes(digit_image(digit, data, nth)))
    return path


def write_labels(path: str | Path) -> Path:
    """Write ``index_to_name.json`` (the label map TorchServe's image_classifier reads)."""
    path = Path(path)
    path.write_text(json.dumps(LABELS))
    return path


def trained_model(epochs: int = 8, seed: int = 0) -> Net:
    """A freshly trained :class:`Net` in eval mode: one call for the README demo and tests."""
    return train(Net(), epochs=epochs, seed=seed)  # type: ignore[return-value]
