"""How long ``archive()`` takes for ResNet-50-sized weights, next to a plain ``torch.save``.

Target (issue 3): eager archiving (state dict + captured source, no pre-flight) at most 1.5x
the time of ``torch.save(model.state_dict(), path)``. The ResNet-50 is built here (no
torchvision): ~25.6 M parameters, ~102 MB of fp32.

    python benchmarks/archive_speed.py [--repeat 5] [--formats eager,torchscript]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _time(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--formats", default="eager")
    args = parser.parse_args()

    from jupyter_torchserve.archive import archive

    torch.manual_seed(0)
    model = ResNet50().eval()
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        formats = args.formats.split(",")

        # Each run writes a new file (removed outside the timed region): overwriting a 100 MB
        # file costs the kernel's block freeing, which is not what we compare.
        def plain() -> None:
            torch.save(model.state_dict(), out / "plain.pt")

        def make(fmt: str) -> None:
            archive(
                model,
                "resnet50",
                format=fmt,
                export_path=out,
                preflight=False,
                example_inputs=None if fmt == "eager" else torch.randn(1, 3, 64, 64),
            )

        # Interleaved, so that load from other processes hits both sides alike.
        save: list[float] = []
        runs: dict[str, list[float]] = {f: [] for f in formats}
        size = mar = 0
        for _ in range(args.repeat):
            save += _time(plain, 1)
            size = os.path.getsize(out / "plain.pt")
            os.unlink(out / "plain.pt")
            for fmt in formats:
                runs[fmt] += _time(lambda fmt=fmt: make(fmt), 1)
                mar = os.path.getsize(out / "resnet50.mar")
                os.unlink(out / "resnet50.mar")
        base = statistics.median(save)
        print(f"ResNet-50 in code: {params / 1e6:.1f} M params, state dict {size / 1e6:.1f} MB")
        print(f"torch.save(state_dict):          median {base:.3f}s  (runs: {_fmt(save)})")
        for fmt in formats:
            med = statistics.median(runs[fmt])
            print(
                f"archive(format={fmt!r}, no preflight): median {med:.3f}s = {med / base:.2f}x "
                f"torch.save, .mar {mar / 1e6:.1f} MB  (runs: {_fmt(runs[fmt])})"
            )


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    main()
