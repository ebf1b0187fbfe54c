"""``modelservice-operator``: run the operator, render children without a cluster, print the CRD.

modelservice-operator run --all-namespaces            # or --namespace team-a --namespace team-b
modelservice-operator render -f examples/iris.yaml    # like `helm template`: no cluster needed
modelservice-operator crd | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import yaml

from . import KIND
from .api import InvalidSpec, parse_spec
from .render import RenderOptions, render_children

REPO_CRD = Path(__file__).resolve().parents[3] / "crds" / "modelservice.yaml"


def crd_text() -> str:
    """The CRD: packaged into the image, or read from the checkout in a development install."""
    override = os.environ.get("MODELSERVICE_CRD_PATH")
    if override:
        return Path(override).read_text()
    packaged = resources.files("modelservice_operator").joinpath("crds/modelservice.yaml")
    if packaged.is_file():
        return packaged.read_text()
    return REPO_CRD.read_text()


def render_file(path: str, options: RenderOptions) -> str:
    """The children of every ModelService in the file, as YAML; anything it cannot render stops it with
    one line that names the file (and the object), as ``kubectl apply`` would, not a traceback."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        loaded = list(yaml.safe_load_all(text))
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8, or a bad !!int or date
        raise SystemExit(f"{path}: {exc}") from None
    documents = []
    for number, doc in enumerate(loaded, start=1):
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise SystemExit(f"{path}: document {number} is not an object but a {type(doc).__name__}")
        if doc.get("kind") != KIND:
            continue
        metadata = doc.get("metadata")
        if isinstance(metadata, dict):
            metadata.setdefault("namespace", "default")
        try:
            spec = parse_spec(doc)
        except InvalidSpec as exc:
            name = metadata.get("name") if isinstance(metadata, Mapping) else None
            raise SystemExit(f"{path}: {name}: {exc}") from None
        documents.extend(render_children(spec, options))
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelservice-operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)"
    )
    run.add_argument("--liveness-port", type=int, default=8080, help="serve /healthz here; 0 disables it")
    run.add_argument(
        "--metrics-port", type=int, default=9090, help="serve Prometheus /metrics here; 0 disables it"
    )
    run.add_argument(
        "--peering",
        default="",
        metavar="LEASE",
        help="high availability: only the holder of this coordination.k8s.io Lease reconciles; the other "
        "replicas keep their caches warm and take over when it expires",
    )
    run.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the --peering Lease (default: $POD_NAMESPACE, else default)",
    )
    run.add_argument(
        "--runtime-image", default=os.environ.get("MODELSERVICE_RUNTIME_IMAGE", RenderOptions.default_image)
    )
    run.add_argument(
        "--runtime-pull-policy",
        default=os.environ.get("MODELSERVICE_RUNTIME_PULL_POLICY", RenderOptions.image_pull_policy),
        choices=("Always", "IfNotPresent", "Never"),
        help="imagePullPolicy of the runtime containers",
    )
    run.add_argument(
        "--kubeconfig", default=None, help="kubeconfig path (default: in-cluster, else $KUBECONFIG)"
    )
    run.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    run.add_argument("--verbose", action="store_true")
    render = commands.add_parser("render", help="print the children of the ModelServices in a file")
    render.add_argument("-f", "--filename", required=True, help="YAML file with ModelService objects, or -")
    render.add_argument("--runtime-image", default=RenderOptions.default_image)
    commands.add_parser("crd", help="print the ModelService CRD")
    return parser  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    import kopf
    from prometheus_client import start_http_server

    from . import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
    if not args.verbose:
        # Kopf logs every watch event's handler at INFO; ours log what they changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from .kube.credentials import Credentials

    if args.metrics_port:
        start_http_server(args.metrics_port)
    memo = kopf.Memo(
        options=RenderOptions(default_image=args.runtime_image, image_pull_policy=args.runtime_pull_policy),
        credentials=Credentials.load(args.kubeconfig, args.context),
        namespaces=list(args.namespace),
        lease=(args.lease_namespace, args.peering, f"{socket.gethostname()}-{os.getpid()}")
        if args.peering
        else None,
    )
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,  # replicas coordinate through our Lease, not Kopf peering
            liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
            memo=memo,
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "crd":
        sys.stdout.write(crd_text())
        return 0
    if args.command == "render":
        sys.stdout.write(render_file(args.filename, RenderOptions(default_image=args.runtime_image)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
