"""The Services: ``<name>`` that clients call (port 8501 named http, TF Serving's REST port, and 8500
named grpc when gRPC is on) and the per-revision ones of canary and blue-green rollouts."""

from __future__ import annotations

from typing import Any

from ..api import ModelServiceSpec
from ..naming import REVISION_LABEL, child_name, selector_labels
from .common import GRPC_PORT, RUNTIME_PORT, metadata


def render_service(spec: ModelServiceSpec, role: str = "", revision: str | None = None) -> dict[str, Any]:
    """``<name>`` (role "") or ``<name>-<role>``; ``revision`` narrows the selector to one revision."""
    selector = selector_labels(spec.name)
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": RUNTIME_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    if spec.runtime.grpc:
        ports.append(
            {
                "name": "grpc",
                "port": GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    if revision:
        selector[REVISION_LABEL] = revision
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, child_name(spec.name, role)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": ports,
        },
    }


def render_services(
    spec: ModelServiceSpec, main: str | None, stable: str, candidate: str
) -> list[dict[str, Any]]:
    """The Services of the strategy: ``<name>`` always (what clients call); ``<name>-stable`` plus
    ``<name>-canary`` (canary) or ``<name>-preview`` (blue-green) select one revision each."""
    services = [render_service(spec, "", main)]
    if spec.rollout.strategy == "canary":
        services += [render_service(spec, "stable", stable), render_service(spec, "canary", candidate)]
    elif spec.rollout.strategy == "blueGreen":
        services += [render_service(spec, "stable", stable), render_service(spec, "preview", candidate)]
    return services


def service_url(spec: ModelServiceSpec) -> str:
    return f"http://{child_name(spec.name)}.{spec.namespace}.svc:{RUNTIME_PORT}"
