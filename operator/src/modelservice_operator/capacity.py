"""PURE: free GPUs per resource and product, from watched Nodes and Pods (no API calls, no polling).

**Why:** a surge pod that needs a GPU the cluster does not have waits Pending for ever, and the rollout
with it (Argo Rollouts #2687, #3539). The planner asks this inventory how many more pods of a given shape
fit before it surges, and swaps (a stable pod down first) or waits when none do.

The inventory is fed by the controller from two watches: Nodes (allocatable, labels, schedulability) and
Pods (every pod that requests an extended GPU resource, whoever owns it, once it is bound to a node and
until it terminates). A pod holds its GPUs while it is terminating, as the kubelet does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GPU_PREFIXES = ("nvidia.com/", "amd.com/", "gpu.intel.com/")


@dataclass(frozen=True)
class Node:
    name: str
    allocatable: Mapping[str, int]
    labels: Mapping[str, str]
    schedulable: bool
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect) of NoSchedule/NoExecute taints


@dataclass(frozen=True)
class Free:
    """How many more pods needing ``per_pod`` GPUs fit, and the free GPUs on the matching nodes."""

    pods: int
    gpus: int
    nodes: int  # matching nodes


def parse_count(value: Any) -> int:
    """An extended resource's quantity: always a whole number ("2", 2); anything else counts as 0."""
    try:
        return int(str(value))
    except ValueError:
        return 0


def _is_gpu(resource: str) -> bool:
    return resource.startswith(GPU_PREFIXES)


def pod_gpus(pod: Mapping[str, Any]) -> dict[str, int]:
    """GPU requests of a pod (extended resources: the limit is the request), summed over containers."""
    total: dict[str, int] = {}
    spec = pod.get("spec") or {}
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in wanted.items():
            if _is_gpu(name):
                total[name] = total.get(name, 0) + parse_count(value)
    return total


def _node(body: Mapping[str, Any]) -> Node:
    meta, spec, status = body.get("metadata", {}), body.get("spec") or {}, body.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    allocatable = {k: parse_count(v) for k, v in (status.get("allocatable") or {}).items() if _is_gpu(k)}
    taints = tuple(
        (str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
        for t in spec.get("taints") or ()
        if t.get("effect") in ("NoSchedule", "NoExecute")
    )
    return Node(str(meta.get("name", "")), allocatable, dict(meta.get("labels") or {}),
                schedulable=ready and not spec.get("unschedulable", False), taints=taints)  # fmt: skip


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: tuple[str, str, str]) -> bool:
    """The scheduler's rule: a toleration matches a taint by key (empty key + Exists: every key), by
    value unless its operator is Exists, and by effect unless it names none."""
    key, value, effect = taint
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != effect:
            continue
        if toleration.get("operator", "Equal") == "Exists":
            if not toleration.get("key") or toleration["key"] == key:
                return True
        elif toleration.get("key") == key and str(toleration.get("value", "")) == value:
            return True
    return False


@dataclass
class GpuInventory:
    nodes: dict[str, Node] = field(default_factory=dict)
    # (namespace, name) -> (node, {resource: count}) for bound, non-terminal pods that hold GPUs
    pods: dict[tuple[str, str], tuple[str, dict[str, int]]] = field(default_factory=dict)
    version: int = 0  # bumped on every change that can free or take a GPU

    def node_event(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Record a Node; True when GPU capacity may have changed."""
        node = _node(body)
        before = self.nodes.get(node.name)
        if event_type == "DELETED":
            self.nodes.pop(node.name, None)
        elif node.allocatable:
            self.nodes[node.name] = node
        else:
            self.nodes.pop(node.name, None)
        changed = before != self.nodes.get(node.name)
        self.version += changed
        return changed

    def pod_event(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Record a Pod's GPUs; True when it took or freed some."""
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        node = str((body.get("spec") or {}).get("nodeName") or "")
        phase = (body.get("status") or {}).get("phase")
        gpus = pod_gpus(body)
        before = self.pods.get(key)
        if event_type == "DELETED" or not node or phase in ("Succeeded", "Failed") or not gpus:
            self.pods.pop(key, None)
        else:
            self.pods[key] = (node, gpus)
        changed = before != self.pods.get(key)
        self.version += changed
        return changed

    def free(self, resource: str, per_pod: int, selector: Mapping[str, str],
             tolerations: Sequence[Mapping[str, Any]] = ()) -> Free:  # fmt: skip
        """Room for more pods that need ``per_pod`` of ``resource`` on nodes whose labels match
        ``selector`` (the pod's nodeSelector: the GPU product among others) and whose taints the pod's
        ``tolerations`` tolerate. GPUs are per node: two free on two nodes do not fit a pod that needs two."""
        used: dict[str, int] = {}
        for node_name, held in self.pods.values():
            used[node_name] = used.get(node_name, 0) + held.get(resource, 0)
        pods = gpus = count = 0
        for node in self.nodes.values():
            if not node.schedulable or node.allocatable.get(resource, 0) <= 0:
                continue
            if any(node.labels.get(k) != v for k, v in selector.items()):
                continue
            if not all(tolerates(tolerations, taint) for taint in node.taints):
                continue
            count += 1
            left = max(0, node.allocatable[resource] - used.get(node.name, 0))
            gpus += left
            pods += left // max(1, per_pod)
        return Free(pods=pods, gpus=gpus, nodes=count)
