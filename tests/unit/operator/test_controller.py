"""The controller's retry policy: when a ModelService comes back after a reconcile, by outcome."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from modelservice_operator.controller import Controller, Timing
from modelservice_operator.kube.errors import ApiConflict, ApiForbidden, ApiRejected, ApiThrottled, KubeError
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


def binding(
    namespace: str, name: str, uid: str = "b-uid", role: str = "system:auth-delegator"
) -> dict[str, Any]:
    return {"metadata": {"name": f"modelservice:auth-delegator:{namespace}:{name}-runtime", "uid": uid,
                         "labels": {"serving.modelservice.io/name": name,
                                    "serving.modelservice.io/namespace": namespace}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}}  # fmt: skip


def modelservice(namespace: str, name: str, auth: bool = False, recorded: str = "") -> dict[str, Any]:
    ms = body(runtime={"auth": {"kubernetes": {"enabled": auth}}})
    ms["metadata"].update(namespace=namespace, name=name)
    if recorded:
        ms["status"] = {"authDelegatorBinding": recorded}
    return ms


CRB = "ClusterRoleBinding"


async def test_bindings_no_modelservice_wants_are_deleted_at_start_and_only_ours() -> None:
    ctl = Controller(FakeClient(), RenderOptions(), TIMING)
    client = ctl.client
    assert isinstance(client, FakeClient)
    kept_recorded = binding("ml", "turning-off")
    listed = [
        binding("ml", "iris"),  # its ModelService has authentication on
        kept_recorded,  # its ModelService turned it off and records it: its own reconcile deletes it
        binding("ml", "gone"),  # deleted while no operator ran
        binding("ml", "again"),  # deleted, then re-created without authentication
        binding("other", "gone"),  # another namespace than the operator's
        binding("ml", "foreign", role="cluster-admin"),  # someone else's, with our labels
        {**binding("ml", "renamed"), "metadata": {**binding("ml", "renamed")["metadata"], "name": "mine"}},
    ]
    modelservices = {
        ("ml", "iris"): modelservice("ml", "iris", auth=True),
        ("ml", "turning-off"): modelservice("ml", "turning-off", recorded=kept_recorded["metadata"]["name"]),
        ("ml", "again"): modelservice("ml", "again"),
    }
    found = ctl.bindings_listed(listed, modelservices, namespaces=["ml"])
    assert found == [("ml", "gone"), ("ml", "again")]
    assert ctl.queue._queue == deque(found)
    await ctl.process(("ml", "gone"))
    assert client.calls == [("delete", CRB, "modelservice:auth-delegator:ml:gone-runtime")]
    assert ("ml", "gone") not in ctl.orphaned_bindings


async def test_a_modelservice_recreated_without_authentication_loses_the_binding_and_is_reconciled() -> None:
    ctl = Controller(FakeClient(), RenderOptions(), TIMING)
    client = ctl.client
    assert isinstance(client, FakeClient)
    ms = modelservice("ml", "iris", recorded="modelservice:auth-delegator:ml:iris-runtime")
    ms["spec"]["runtime"]["auth"]["kubernetes"]["enabled"] = True
    ctl.modelservice_event("ADDED", ms)
    ctl.modelservice_event("DELETED", ms)  # the binding is due for deletion ...
    ctl.modelservice_event("ADDED", modelservice("ml", "iris"))  # ... and it comes back without auth first
    await ctl.process(KEY)
    assert client.calls[0] == ("delete", CRB, "modelservice:auth-delegator:ml:iris-runtime")
    assert ("apply", "Deployment") in {(verb, kind) for verb, kind, _ in client.calls}
    assert ctl.orphaned_bindings == {}


async def test_a_modelservice_recreated_with_authentication_keeps_the_binding() -> None:
    ctl = Controller(FakeClient(), RenderOptions(), TIMING)
    client = ctl.client
    assert isinstance(client, FakeClient)
    ctl.modelservice_event(
        "DELETED", modelservice("ml", "iris", recorded="modelservice:auth-delegator:ml:iris-runtime")
    )
    ctl.modelservice_event("ADDED", modelservice("ml", "iris", auth=True))
    await ctl.process(KEY)
    assert ("delete", CRB) not in {(verb, kind) for verb, kind, _ in client.calls}
    assert ctl.orphaned_bindings == {}


async def test_a_binding_replaced_by_a_successor_is_left_to_it_and_not_retried() -> None:
    ctl = Controller(FakeClient({("delete", CRB): ApiConflict(409, {"message": "Precondition failed: UID"})}),
                     RenderOptions(), TIMING)  # fmt: skip
    ctl.bindings_listed([binding("ml", "gone")], {}, namespaces=[])
    await ctl.process(("ml", "gone"))
    assert ctl.orphaned_bindings == {} and ("ml", "gone") not in ctl.queue._timers


async def test_a_binding_the_api_refuses_to_delete_is_retried_with_backoff() -> None:
    ctl = Controller(FakeClient({("delete", CRB): ApiForbidden(403, {"message": "forbidden"})}),
                     RenderOptions(), TIMING)  # fmt: skip
    ctl.bindings_listed([binding("ml", "gone")], {}, namespaces=[])
    await ctl.process(("ml", "gone"))
    assert ("ml", "gone") in ctl.orphaned_bindings and ("ml", "gone") in ctl.queue._timers


async def test_bindings_of_every_namespace_are_swept_when_the_operator_watches_all() -> None:
    ctl = Controller(FakeClient(), RenderOptions(), TIMING)
    found = ctl.bindings_listed([binding("ml", "gone"), binding("other", "gone")], {}, namespaces=[])
    assert found == [("ml", "gone"), ("other", "gone")]
