"""One observed context per reconcile, read once from the watch-fed cache (Argo Rollouts' rolloutContext).

Every step of a reconcile reads this, never the API; the steps replace entries with what the server
returned from their writes, so the status is computed from the freshest objects we know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cache import ObjectCache
from .capacity import GpuInventory
from .status import Observed

CHILD_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount")


@dataclass
class ObservedChildren:
    """Everything that carries the ModelService's name label, by kind."""

    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    gpus: GpuInventory | None = None  # free GPUs of the cluster, for rollouts of GPU pods

    def scheduled_pods(self) -> int:
        """Our pods bound to a node and not finished: they hold their GPUs (terminating ones too)."""
        return sum(
            1
            for pod in self.of_kind("Pod")
            if (pod.get("spec") or {}).get("nodeName")
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        )

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return self.children.get(kind, [])

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.of_kind(kind) if o["metadata"]["name"] == name), None)

    def put(self, obj: Mapping[str, Any]) -> None:
        kind, name = str(obj.get("kind")), obj["metadata"]["name"]
        items = [o for o in self.of_kind(kind) if o["metadata"]["name"] != name]
        self.children[kind] = [*items, dict(obj)]

    def drop(self, kind: str, name: str) -> None:
        self.children[kind] = [o for o in self.of_kind(kind) if o["metadata"]["name"] != name]

    def for_status(self, service: str) -> Observed:
        slices: Sequence[Mapping[str, Any]] = [
            s
            for s in self.of_kind("EndpointSlice")
            if (s.get("metadata", {}).get("labels") or {}).get("kubernetes.io/service-name") == service
        ]
        return Observed(
            deployments=list(self.of_kind("Deployment")),
            pods=self.of_kind("Pod"),
            service=self.named("Service", service),
            endpoint_slices=slices,
        )


def observe(
    cache: ObjectCache, namespace: str, name: str, gpus: GpuInventory | None = None
) -> ObservedChildren:
    kinds = (*CHILD_KINDS, "Pod", "EndpointSlice")
    return ObservedChildren({kind: cache.children(namespace, name, kind) for kind in kinds}, gpus)
