"""The controller's retry policy: when a ModelService comes back after a reconcile, by outcome."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from modelservice_operator.controller import Controller, Timing
from modelservice_operator.kube.errors import ApiForbidden, ApiRejected, ApiThrottled, KubeError
from modelservice_operator.render import RenderOptions

from .fakes import FakeClient

pytestmark = pytest.mark.asyncio
KEY = ("ml", "iris")
TIMING = Timing(resync=300, rejected_retry=600, backoff_base=1, backoff_max=60)


def body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.modelservice.io/v1alpha1", "kind": "ModelService",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 1, "resourceVersion": "1"},
            "spec": {"model": {"storageUri": "pvc://models/iris"}, **spec}}  # fmt: skip


def controller(fail: dict[tuple[str, str], KubeError] | None = None) -> Controller:
    ctl = Controller(FakeClient(fail), RenderOptions(), TIMING)
    ctl.modelservice_event("ADDED", body())
    return ctl


def due_in(ctl: Controller) -> float:
    due, _ = ctl.queue._timers[KEY]
    return due - asyncio.get_running_loop().time()


async def test_success_comes_back_only_at_the_safety_net_resync() -> None:
    ctl = controller()
    await ctl.process(KEY)
    assert 270 <= due_in(ctl) <= 330


async def test_a_transient_failure_backs_off_exponentially() -> None:
    ctl = controller({("apply", "Service"): ApiForbidden(403, {"message": "forbidden"})})
    delays = []
    for _ in range(4):
        await ctl.process(KEY)
        delays.append(round(due_in(ctl)))
        ctl.queue._timers.pop(KEY)[1].cancel()  # as if the retry had fired
    assert delays == [1, 2, 4, 8]


async def test_the_servers_retry_after_wins_when_longer() -> None:
    ctl = controller({("apply", "Deployment"): ApiThrottled(429, {"message": "slow down"}, retry_after=30)})
    await ctl.process(KEY)
    assert round(due_in(ctl)) == 30


async def test_a_rejected_manifest_is_retried_slowly_never_frozen() -> None:
    ctl = controller({("apply", "Deployment"): ApiRejected(422, {"message": "invalid"})})
    await ctl.process(KEY)
    assert round(due_in(ctl)) == 600


async def test_our_own_status_write_coming_back_does_not_trigger_a_reconcile() -> None:
    ctl = controller()
    assert len(ctl.queue) == 1
    await ctl.queue.get()
    ctl.queue.done(KEY)
    echoed = {**body(), "status": {"observedGeneration": 1}}
    echoed["metadata"] = {**echoed["metadata"], "resourceVersion": "2"}
    ctl.modelservice_event("MODIFIED", echoed)
    assert len(ctl.queue) == 0
    ctl.modelservice_event("MODIFIED", {**echoed, "spec": {**echoed["spec"], "replicas": 3}})
    assert len(ctl.queue) == 1


async def test_a_child_event_queues_its_modelservice_but_the_initial_listing_does_not() -> None:
    ctl = controller()
    await ctl.queue.get()
    ctl.queue.done(KEY)
    pod = {"kind": "Pod", "metadata": {"name": "iris-1", "namespace": "ml",
                                       "labels": {"serving.modelservice.io/name": "iris"}}}  # fmt: skip
    ctl.child_event(None, pod)
    assert len(ctl.queue) == 0
    ctl.child_event("MODIFIED", pod)
    assert len(ctl.queue) == 1


async def test_the_previous_versions_finalizer_is_removed_even_from_an_object_being_deleted() -> None:
    ctl = controller()
    legacy = body()
    legacy["metadata"] = {**legacy["metadata"], "finalizers": ["serving.modelservice.io/finalizer", "other/keep"],
                          "deletionTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "9"}  # fmt: skip
    ctl.modelservice_event("MODIFIED", legacy)
    await ctl.process(KEY)
    client = ctl.client
    assert isinstance(client, FakeClient)
    assert client.calls == [("remove_finalizer", "ModelService", "iris")]  # and nothing else: it is going


async def test_child_events_wait_for_the_backoff_of_a_failing_object_but_a_spec_change_does_not() -> None:
    ctl = controller({("apply", "Service"): ApiForbidden(403, {"message": "forbidden"})})
    await ctl.queue.get()
    await ctl.process(KEY)
    ctl.queue.done(KEY)
    pod = {"kind": "Pod", "metadata": {"name": "iris-1", "namespace": "ml",
                                       "labels": {"serving.modelservice.io/name": "iris"}}}  # fmt: skip
    ctl.child_event("MODIFIED", pod)
    assert len(ctl.queue) == 0, "the retry is already scheduled"
    changed = body(replicas=3)
    changed["metadata"] = {**changed["metadata"], "generation": 2, "resourceVersion": "2"}
    ctl.modelservice_event("MODIFIED", changed)
    assert len(ctl.queue) == 1


async def test_a_rollout_waiting_for_a_gpu_comes_back_as_soon_as_one_is_freed() -> None:
    ctl = Controller(FakeClient(), RenderOptions(), TIMING)
    gpu_node = {"metadata": {"name": "gpu-1", "labels": {}}, "spec": {},
                "status": {"allocatable": {"nvidia.com/gpu": "1"}, "conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip
    tenant = {"metadata": {"name": "trainer", "namespace": "other"},
              "spec": {"nodeName": "gpu-1", "containers": [{"resources": {"limits": {"nvidia.com/gpu": 1}}}]},
              "status": {"phase": "Running"}}  # fmt: skip
    ctl.node_event(None, gpu_node)
    ctl.pod_event(None, tenant)
    rollout = {"strategy": "rolling", "maxSurge": 1, "maxUnavailable": 0}
    ms = body(gpu={"count": 1}, replicas=1, rollout=rollout)
    ctl.modelservice_event("ADDED", ms)
    # A stable revision of one pod exists (bound elsewhere); the spec now renders another one.
    old = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "iris-old", "namespace": "ml", "generation": 1, "resourceVersion": "1",
                        "labels": {"serving.modelservice.io/name": "iris", "serving.modelservice.io/revision": "old"}},
           "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "replicas": 1, "availableReplicas": 1,
                                               "readyReplicas": 1}}  # fmt: skip
    ctl.child_event(None, old)
    outcome = await ctl.process(KEY)
    assert outcome is not None and outcome.capacity_constrained
    assert KEY in ctl.waiting_for_gpus
    ctl.queue._timers.pop(KEY)[1].cancel()
    ctl.pod_event("DELETED", tenant)  # the GPU frees: the key is queued at once, not at the resync
    assert KEY in ctl.queue._queued


def binding(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"name": f"modelservice:auth-delegator:{namespace}:{name}-runtime",
                         "labels": {"serving.modelservice.io/name": name,
                                    "serving.modelservice.io/namespace": namespace}}}  # fmt: skip


async def test_bindings_of_modelservices_deleted_while_no_operator_ran_are_deleted_at_start() -> None:
    ctl = Controller(FakeClient(), RenderOptions(), TIMING)
    client = ctl.client
    assert isinstance(client, FakeClient)
    listed = [binding("ml", "iris"), binding("ml", "gone"), binding("other", "gone"),
              {"metadata": {"name": "unlabelled", "labels": {"serving.modelservice.io/name": "x"}}}]  # fmt: skip
    found = ctl.bindings_listed(listed, existing={("ml", "iris")}, namespaces=["ml"])
    assert found == [("ml", "gone")]  # the live one, another namespace's and a foreign one are left alone
    assert ctl.queue._queue == deque([("ml", "gone")])
    await ctl.process(("ml", "gone"))
    assert client.calls == [("delete", "ClusterRoleBinding", "modelservice:auth-delegator:ml:gone-runtime")]
    assert ctl.orphaned_bindings == {}


async def test_bindings_of_every_namespace_are_swept_when_the_operator_watches_all() -> None:
    ctl = Controller(FakeClient(), RenderOptions(), TIMING)
    found = ctl.bindings_listed(
        [binding("ml", "gone"), binding("other", "gone")], existing=set(), namespaces=[]
    )
    assert found == [("ml", "gone"), ("other", "gone")]
