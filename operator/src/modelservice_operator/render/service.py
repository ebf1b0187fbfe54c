"""The Service ``<name>`` that clients call: port 8501 named http, TF Serving's REST port."""

from __future__ import annotations

from typing import Any

from ..api import ModelServiceSpec
from ..naming import child_name, selector_labels
from .common import RUNTIME_PORT, metadata


def render_service(spec: ModelServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, child_name(spec.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.name),
            "ports": [{"name": "http", "port": RUNTIME_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def service_url(spec: ModelServiceSpec) -> str:
    return f"http://{child_name(spec.name)}.{spec.namespace}.svc:{RUNTIME_PORT}"
