"""PURE rendering: a parsed spec in, manifest dicts out. No Kopf, no Kubernetes client, no I/O.

**For testability,** every child is a function of ``(spec, options)``; golden files pin the output and the
Kubernetes OpenAPI schemas validate it. ``.importlinter`` forbids imports of kopf and kubernetes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import ModelServiceSpec
from ..naming import REVISION_LABEL
from .deployment import render_deployment
from .hpa import render_hpa
from .pdb import render_pdb
from .service import render_service, render_services


@dataclass(frozen=True)
class RenderOptions:
    """Operator-wide settings that shape children (from the operator's flags, not the spec)."""

    default_image: str = "modelservice/runtime:0.1.0"
    image_pull_policy: str = "IfNotPresent"


def render_children(spec: ModelServiceSpec, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    """Every child a new ModelService gets, in apply order (Deployment first): its first revision at
    full size, every Service selecting it."""
    options = options or RenderOptions()
    deployment = render_deployment(spec, options.default_image, options.image_pull_policy)
    revision = deployment["metadata"]["labels"][REVISION_LABEL]
    main = revision if spec.rollout.strategy == "blueGreen" else None
    children = [deployment, *render_services(spec, main, revision, revision)]
    hpa = render_hpa(spec)
    if hpa is not None:
        children.append(hpa)
    pdb = render_pdb(spec)
    if pdb is not None:
        children.append(pdb)
    return children


__all__ = [
    "RenderOptions",
    "render_children",
    "render_deployment",
    "render_hpa",
    "render_pdb",
    "render_service",
    "render_services",
]
