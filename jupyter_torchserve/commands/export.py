"""``%torchserve export NAME --to kserve|t9k|ray|torchserve``: the bundle a cluster engine needs.

The same call as :func:`jupyter_torchserve.export.export` (and ``jupyter-torchserve export``);
the returned :class:`~jupyter_torchserve.export.Bundle` is the cell's result, so the files
written and the next commands show as the cell's output and stay at hand as ``_``.
"""

from __future__ import annotations

import argparse

from .. import api
from ..export import Bundle, ExportError, export
from ..export.options import PROTOCOLS, TARGETS, check_ray_flags
from .namespace import UserNamespace
from .parsing import Parser

HELP = "Write what KServe, T9k, Ray Serve or TorchServe need to serve a model."


def add_arguments(q: Parser) -> None:
    q.add_argument("name", metavar="NAME", help="a model the engine serves, or a .mar path")
    q.add_argument("--to", choices=TARGETS, default="kserve", help="the engine (kserve)")
    q.add_argument("--version", help="export only this version (default: all served)")
    q.add_argument("--out", metavar="DIR", help="where to write it (default ./NAME-TO)")
    q.add_argument("--protocol", choices=PROTOCOLS, default="v1", help="KServe protocol")
    q.add_argument("--gpu", type=int, default=0, metavar="N", help="GPUs per replica")
    q.add_argument("--min-replicas", type=int, metavar="N")
    q.add_argument("--max-replicas", type=int, metavar="M")
    q.add_argument("--image", help="the serving image the runtimes name")
    q.add_argument("--storage-uri", metavar="URI", help="where the cluster finds the bundle")
    q.add_argument("--run", action="store_true", help="Ray: deploy it and print the URL")
    q.add_argument("--ray-address", metavar="URL", help="Ray: the cluster's dashboard")
    q.add_argument("--serve-port", type=int, metavar="PORT", help="Ray: Serve's HTTP port")
    q.add_argument("--force", action="store_true", help="replace files in a non-empty DIR")


def run(args: argparse.Namespace, user: UserNamespace) -> Bundle:
    try:
        check_ray_flags(args.to, args.run, args.ray_address, args.serve_port)
        return export(
            args.name,
            to=args.to,
            version=args.version,
            out=args.out,
            protocol=args.protocol,
            gpu=args.gpu,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            image=args.image,
            storage_uri=args.storage_uri,
            run=args.run,
            ray_address=args.ray_address,
            serve_port=args.serve_port,
            client=api.client,  # the engine this kernel uses, as every other verb
            force=args.force,
        )
    except ExportError as exc:  # already a sentence for the user
        raise api.TorchServeError(str(exc)) from None
