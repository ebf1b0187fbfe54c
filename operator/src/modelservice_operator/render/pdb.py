"""A PodDisruptionBudget once there is more than one replica: node drains take one pod at a time."""

from __future__ import annotations

from typing import Any

from ..api import ModelServiceSpec
from ..naming import child_name, selector_labels
from .common import metadata


def min_possible_replicas(spec: ModelServiceSpec) -> int:
    return spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas


def render_pdb(spec: ModelServiceSpec) -> dict[str, Any] | None:
    if min_possible_replicas(spec) <= 1 and spec.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, child_name(spec.name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(spec.name)}},
    }
