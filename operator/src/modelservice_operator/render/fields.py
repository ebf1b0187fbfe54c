"""Which ModelService field a child's field comes from, so an API rejection names the user's field.

The CRD refuses bad values at ``kubectl apply`` (OpenAPI + CEL); this table is the fallback for what
only the server can judge (a PriorityClass that does not exist, an admission webhook's verdict).
Longest prefix wins.
"""

from __future__ import annotations

from collections.abc import Iterable

_POD = "spec.template.spec."
_CONTAINER = _POD + "containers[0]."
SPEC_FIELDS: dict[str, dict[str, str]] = {
    "Deployment": {
        "spec.replicas": "spec.replicas",
        "spec.strategy": "spec.rollout",
        "spec.template": "spec",
        _CONTAINER + "image": "spec.runtime.image",
        _CONTAINER + "env": "spec.runtime.env",
        _CONTAINER + "args": "spec.runtime",
        _CONTAINER + "volumeMounts": "spec.runtime.auth",
        _CONTAINER + "resources": "spec.resources",
        _CONTAINER + "startupProbe": "spec.probes",
        _POD + "tolerations": "spec.scheduling.tolerations",
        _POD + "nodeSelector": "spec.scheduling.nodeSelector",
        _POD + "affinity": "spec.scheduling.affinity",
        _POD + "topologySpreadConstraints": "spec.scheduling.topologySpreadConstraints",
        _POD + "runtimeClassName": "spec.scheduling.runtimeClassName",
        _POD + "priorityClassName": "spec.scheduling.priorityClassName",
        _POD + "volumes": "spec.model.storageUri",
        _POD + "initContainers": "spec.model.storage",
    },
    "HorizontalPodAutoscaler": {
        "spec": "spec.autoscaling",
        "spec.metrics": "spec.autoscaling.metrics",
        "spec.behavior": "spec.autoscaling.behavior",
        "spec.minReplicas": "spec.autoscaling.minReplicas",
        "spec.maxReplicas": "spec.autoscaling.maxReplicas",
    },
    "PodDisruptionBudget": {"spec": "spec.replicas"},
    "Service": {"metadata.name": "metadata.name"},
}


def spec_field(kind: str, child_fields: Iterable[str]) -> str:
    """The ModelService field behind the first child field we know, else ``spec``."""
    table = SPEC_FIELDS.get(kind, {})
    for child_field in child_fields:
        matches = [prefix for prefix in table if child_field == prefix or child_field.startswith(prefix)]
        if matches:
            return table[max(matches, key=len)]
    return "spec"
