"""The autoscaling/v2 HPA. It scales the ModelService itself through its scale subresource, so the
operator stays the only writer of the Deployment's replicas."""

from __future__ import annotations

import copy
from typing import Any

from ..api import ModelServiceSpec
from ..naming import child_name
from .common import API_VERSION, KIND, metadata

DEFAULT_CPU_UTILIZATION = 80


def render_hpa(spec: ModelServiceSpec) -> dict[str, Any] | None:
    if spec.autoscaling is None:
        return None
    metrics = [copy.deepcopy(dict(m)) for m in spec.autoscaling.metrics] or [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
            },
        }
    ]
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": spec.name},
        "minReplicas": spec.autoscaling.min_replicas,
        "maxReplicas": spec.autoscaling.max_replicas,
        "metrics": metrics,
    }
    if spec.autoscaling.behavior:
        hpa_spec["behavior"] = copy.deepcopy(dict(spec.autoscaling.behavior))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec, child_name(spec.name)),
        "spec": hpa_spec,
    }
