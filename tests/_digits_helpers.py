"""scikit-learn's digits as held-out-evaluation tests use them, and the small models they train.

The rows are the 8x8 images flattened and scaled to [0, 1] (float32), split at row 1200 into
training and held-out rows (597 of them), so every test that reports on held-out data reports
on the same rows. `train` is the one training loop behind both models (and the handler tests' CNN).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Rows before this one train; the rest are held out.
SPLIT = 1200


def digits() -> tuple[Any, Any, Any, Any]:
    """x_train, y_train, x_test, y_test: flat rows of 64 pixels in [0, 1], int labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return x[:SPLIT], y[:SPLIT], x[SPLIT:], y[SPLIT:]


def train(model: Any, x: Any, y: Any, steps: int) -> Any:
    """Full-batch Adam (lr 0.01) on cross-entropy for `steps` steps; the model in eval mode.
    Few steps make a deliberately weak model, for reports that must differ."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


def digits_mlp(x: Any, y: Any, epochs: int, seed: int) -> Any:
    """A 64-32-10 MLP on flat rows, trained from `seed`."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    return train(model, x, y, epochs)


def cnn() -> Any:
    """The one-convolution CNN on [N, 1, 8, 8] images (10 classes), untrained."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 10),
    )


def digits_cnn(x: Any, y: Any, seed: int, steps: int = 40) -> Any:
    """`cnn()` trained from `seed`."""
    import torch

    torch.manual_seed(seed)
    return train(cnn(), x, y, steps)
