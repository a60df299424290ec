"""The main job end to end: train the digits CNN, deploy it, call it on every protocol.

`python -m jupyter_torchserve.demo` goes through the same code path as
`%torchserve deploy model --name mnist` (jupyter_torchserve.deployment.deploy), so what it prints is
what a notebook user gets. It stops the engine it started unless `--keep` is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import requests
from jupyter_core.paths import jupyter_data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_torchserve.demo")
    parser.add_argument("--keep", action="store_true", help="leave the engine running")
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="inference port; management and metrics use the next two",
    )
    args = parser.parse_args(argv)

    from . import launcher, payloads
    from .client import Client
    from .deployment import deploy
    from .examples import mnist

    # its own state and model store: the snapshot of a stopped demo would otherwise bring
    # its `mnist` back in the next engine on these ports (a notebook's), which then could
    # not deploy its own `mnist`
    demo_root = Path(jupyter_data_dir()) / "torchserve" / "demo"
    engine = {
        "inference_address": f"http://127.0.0.1:{args.port}",
        "management_address": f"http://127.0.0.1:{args.port + 1}",
        "metrics_address": f"http://127.0.0.1:{args.port + 2}",
        "state_dir": str(demo_root / f"engine-{args.port + 1}"),
        "model_store": str(demo_root / "model-store"),
    }
    already = [
        e
        for e in launcher.discovery.find_engines()
        if e["inference_address"] == engine["inference_address"]
    ]

    t0 = time.monotonic()
    data = mnist.load_data()
    model = mnist.train(data=data)
    print(
        f"trained the digits CNN in {time.monotonic() - t0:.1f} s: "
        f"held-out accuracy {mnist.accuracy(model, data):.3f}"
    )

    example = mnist.to_tensor(data.test_images[:1])
    dep = deploy(
        model,
        name="mnist",
        handler="image_classifier",
        example=example,
        workers=1,
        extra_files={"index_to_name.json": mnist.LABELS},
        handler_config={"mean": list(mnist.MEAN), "std": list(mnist.STD), "topk": 3},
        replace=True,
        engine=engine,
        progress="text",
    )
    print(repr(dep))
    if args.keep or already:
        print("(the engine keeps running after this demo: these commands work as printed)")
    else:
        print(
            "(these commands need the engine, which this demo stops when it ends: "
            "run `make demo KEEP=1` to keep it)"
        )
    client = Client.from_info(dep.info)
    base = dep.inference_address

    print("\n== calls ==")
    for digit in (0, 3, 7):
        png = mnist.png_bytes(mnist.digit_image(digit, data))
        r = requests.put(
            f"{base}/predictions/mnist", data=png, headers={"Content-Type": "image/png"}, timeout=60
        )
        print(f"PUT /predictions/mnist  (a {digit})      -> {r.status_code} {_compact(r.json())}")
    png = mnist.png_bytes(mnist.digit_image(4, data))
    v1 = client.kserve_v1("mnist", payloads.v1_instances(png))
    print(f"POST /v1/models/mnist:predict (a 4) -> {_compact(v1)}")
    v2 = client.kserve_v2_infer("mnist", payloads.v2_inputs(png))
    print(f"POST /v2/models/mnist/infer (a 4)   -> {_compact(v2['outputs'])}")
    metadata = json.dumps(client.v2_metadata("mnist"), separators=(",", ":"))  # whole: the
    print(f"GET /v2/models/mnist                -> {metadata}")  # output's datatype comes last

    print("\n== scale to 2 workers ==")
    print(client.scale("mnist", 2, synchronous=True)["status"])
    workers = client.describe("mnist")[0]["workers"]
    print(", ".join(f"worker {w['id']} pid {w['pid']} {w['status']}" for w in workers))

    print("\n== metrics ==")
    for line in client.metrics().splitlines():
        if line.startswith("ts_inference_requests_total") and "mnist" in line:
            print(line)

    if args.keep or already:
        print(f"\nthe engine keeps running: {base} (stop it with `jupyter-torchserve stop`)")
    else:
        launcher.stop_engine(dep.info)
        print("\nstopped the engine (`make demo KEEP=1` or --keep leaves it running)")
    return 0


def _compact(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) < 160 else text[:157] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
