"""Our built-in handlers on archives written by ``jupyter_torchserve.archive`` (all formats).

This is the seam between the archiver (which copies ``jts_<name>.py``, ``jts_base.py`` and
``jts_model_loader.py`` into the archive) and the handler runtime that serves it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _handler_helpers import digits_dataset, png_bytes, request, train_digits_classifier
from PIL import Image

from jupyter_torchserve.handlers.service import load_service

pytestmark = pytest.mark.slow  # starts real processes

archive_api = pytest.importorskip("jupyter_torchserve.archive.api")
from jupyter_torchserve.archive import archive, extract  # noqa: E402


class DigitNet(torch.nn.Module):
    """The digits CNN as a user-defined class, so the eager format captures its source."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def digit_net():
    trained = train_digits_classifier()
    net = DigitNet()
    net.conv.load_state_dict(trained[0].state_dict())
    net.fc.load_state_dict(trained[3].state_dict())
    return net.eval()


def _serve(tmp_path, model, fmt, handler, example, **kwargs):
    path = archive(
        model,
        name=f"m_{fmt}_{handler}",
        handler=handler,
        example_inputs=example,
        export_path=str(tmp_path),
        format=fmt,
        preflight=False,
        **kwargs,
    )
    model_dir, _ = extract(str(path), str(tmp_path / "cache"))
    return load_service(model_dir, batch_size=4)


@pytest.mark.parametrize("fmt", ["export", "torchscript", "eager"])
def test_image_classifier_serves_each_archive_format(tmp_path, digit_net, fmt):
    images, targets = digits_dataset()
    labels = {str(i): f"digit-{i}" for i in range(10)}
    svc = _serve(
        tmp_path,
        digit_net,
        fmt,
        "image_classifier",
        images[:1],
        extra_files={"index_to_name.json": labels},
        handler_config={"topk": 2},
    )
    picks = [7, 300, 901]
    pngs = [
        png_bytes(Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8), "L"))
        for i in picks
    ]
    outputs = [json.loads(o.body) for o in svc.predict([request(p, "image/png") for p in pngs])]
    with torch.no_grad():
        expected = digit_net(images[picks]).argmax(1).tolist()
    assert [next(iter(o)) for o in outputs] == [f"digit-{e}" for e in expected]
    assert all(len(o) == 2 for o in outputs)
    assert sum(e == int(targets[i]) for e, i in zip(expected, picks, strict=True)) >= 2


@pytest.mark.parametrize("fmt", ["export", "torchscript", "eager"])
def test_tensor_handler_batches_each_archive_format(tmp_path, digit_net, fmt):
    images, _ = digits_dataset()
    svc = _serve(tmp_path, digit_net, fmt, "tensor", images[:1])
    batches = [images[0:1], images[1:4], images[4:6]]
    outputs = [json.loads(o.body) for o in svc.predict([request(b.tolist()) for b in batches])]
    for batch, out in zip(batches, outputs, strict=True):
        with torch.no_grad():
            assert np.allclose(out, digit_net(batch).numpy(), atol=1e-4)
