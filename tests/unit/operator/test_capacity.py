"""The GPU inventory: free GPUs per resource and product from Node and Pod events."""

from __future__ import annotations

from typing import Any

from modelservice_operator.capacity import GpuInventory, pod_gpus

A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


def node(name: str, gpus: int, labels: dict[str, str] | None = None, ready: bool = True,
         unschedulable: bool = False) -> dict[str, Any]:  # fmt: skip
    return {"metadata": {"name": name, "labels": labels or dict(A100)}, "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}  # fmt: skip


def pod(name: str, node_name: str, gpus: int, phase: str = "Running", ns: str = "other") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node_name, "containers": [{"resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
            "status": {"phase": phase}}  # fmt: skip


def test_free_gpus_are_allocatable_minus_bound_pods_of_anyone() -> None:
    inventory = GpuInventory()
    inventory.node_event(None, node("gpu-1", 4))
    inventory.node_event(None, node("gpu-2", 4))
    inventory.pod_event(None, pod("tenant-a", "gpu-1", 3))
    inventory.pod_event(None, pod("tenant-b", "gpu-2", 2))
    free = inventory.free("nvidia.com/gpu", 1, A100)
    assert (free.gpus, free.pods, free.nodes) == (3, 3, 2)
    # Two free GPUs on two nodes do not fit a pod that needs two.
    assert inventory.free("nvidia.com/gpu", 2, A100).pods == 1


def test_pending_finished_and_deleted_pods_hold_no_gpu_terminating_ones_do() -> None:
    inventory = GpuInventory()
    inventory.node_event(None, node("gpu-1", 2))
    assert inventory.pod_event("ADDED", {**pod("pending", "", 1)}) is False
    assert inventory.pod_event("ADDED", pod("done", "gpu-1", 1, phase="Succeeded")) is False
    terminating = pod("going", "gpu-1", 1)
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert inventory.pod_event("MODIFIED", terminating) is True
    assert inventory.free("nvidia.com/gpu", 1, {}).gpus == 1
    assert inventory.pod_event("DELETED", terminating) is True
    assert inventory.free("nvidia.com/gpu", 1, {}).gpus == 2


def test_only_matching_ready_schedulable_nodes_count() -> None:
    inventory = GpuInventory()
    inventory.node_event(None, node("a100", 4))
    inventory.node_event(None, node("t4", 4, {"nvidia.com/gpu.product": "Tesla-T4"}))
    inventory.node_event(None, node("down", 4, ready=False))
    inventory.node_event(None, node("cordoned", 4, unschedulable=True))
    inventory.node_event(None, {"metadata": {"name": "cpu"}, "status": {"allocatable": {"cpu": "8"}}})
    assert inventory.free("nvidia.com/gpu", 1, A100).gpus == 4
    assert inventory.free("nvidia.com/gpu", 1, {}).gpus == 8
    assert inventory.free("amd.com/gpu", 1, {}).nodes == 0
    assert inventory.node_event("DELETED", node("a100", 4)) is True
    assert inventory.free("nvidia.com/gpu", 1, A100).gpus == 0


def test_pod_gpus_sum_containers_and_read_limits_or_requests() -> None:
    body = {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "1"}}},
                                    {"resources": {"requests": {"nvidia.com/gpu": 1}}}]}}  # fmt: skip
    assert pod_gpus(body) == {"nvidia.com/gpu": 3}


def test_a_tainted_node_counts_only_for_pods_that_tolerate_its_taint() -> None:
    inventory = GpuInventory()
    inventory.node_event(None, node("gpu-1", 8))
    tainted = node("real", 2)
    tainted["spec"]["taints"] = [{"key": "modelservice.io/real-node", "value": "true", "effect": "NoSchedule"},
                                 {"key": "note", "value": "x", "effect": "PreferNoSchedule"}]  # fmt: skip
    inventory.node_event(None, tainted)
    assert inventory.free("nvidia.com/gpu", 1, A100).gpus == 8
    assert (
        inventory.free("nvidia.com/gpu", 1, A100, [{"key": "nvidia.com/gpu", "operator": "Exists"}]).gpus == 8
    )
    exists = [{"key": "modelservice.io/real-node", "operator": "Exists", "effect": "NoSchedule"}]
    assert inventory.free("nvidia.com/gpu", 1, A100, exists).gpus == 10
    assert inventory.free("nvidia.com/gpu", 1, A100, [{"operator": "Exists"}]).gpus == 10
    equal = [{"key": "modelservice.io/real-node", "value": "true"}]
    assert inventory.free("nvidia.com/gpu", 1, A100, equal).gpus == 10
    wrong_value = [{"key": "modelservice.io/real-node", "value": "false"}]
    assert inventory.free("nvidia.com/gpu", 1, A100, wrong_value).gpus == 8
    wrong_effect = [{"key": "modelservice.io/real-node", "operator": "Exists", "effect": "NoExecute"}]
    assert inventory.free("nvidia.com/gpu", 1, A100, wrong_effect).gpus == 8
