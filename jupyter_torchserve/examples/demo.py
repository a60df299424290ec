"""End-to-end demo: train the MNIST CNN, deploy it like ``%torchserve deploy``, call every API.

``python -m jupyter_torchserve.examples.demo`` is what the README's first command runs on a
fresh machine. It goes through :func:`jupyter_torchserve.api.deploy` (the magic's code path),
prints each protocol's answer, and leaves the engine running unless ``--stop`` is given.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="mnist")
    parser.add_argument("--stop", action="store_true", help="stop the engine at the end")
    parser.add_argument("--replace", action="store_true", help="replace a served model")
    args = parser.parse_args(argv)

    import requests

    from jupyter_torchserve import api
    from jupyter_torchserve.examples import mnist

    data = mnist.load_data()
    model = mnist.train(mnist.Net(), data)
    print(f"trained: held-out accuracy {mnist.accuracy(model, data):.1%}")
    png3 = mnist.png_bytes(mnist.digit_image(3, data))
    png7 = mnist.png_bytes(mnist.digit_image(7, data))
    dep = api.deploy(
        model,
        args.name,
        handler="image_classifier",
        example=png3,
        extra_files={"index_to_name.json": mnist.LABELS},
        handler_config={"mean": mnist.MEAN, "std": mnist.STD},
        replace=args.replace,
        progress="text",
    )
    print(repr(dep))
    ep = dep.endpoints
    b64 = base64.b64encode(png7).decode()
    answers = {
        "TorchServe /predictions (PNG of a 3)": requests.put(ep["predictions"], data=png3).json(),
        "KServe v1 (PNG of a 7)": requests.post(
            ep["kserve_v1"], json={"instances": [{"b64": b64}]}
        ).json(),
        "KServe v2 (PNG of a 7)": requests.post(
            ep["kserve_v2"],
            json={
                "inputs": [{"name": "input-0", "shape": [1], "datatype": "BYTES", "data": [b64]}]
            },
        ).json(),
    }
    for title, answer in answers.items():
        print(f"\n{title}:\n{json.dumps(answer, indent=1)[:600]}")
    print(f"\ncurl: {dep.snippets['curl']}")
    if args.stop:
        api.stop(dep.info)
        print("engine stopped")
    else:
        print(
            f"\nThe engine keeps running (pid {dep.info['pid']}); stop it with "
            "`jupyter-torchserve stop`."
        )
    ok = dep.parity is not None and dep.parity.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
