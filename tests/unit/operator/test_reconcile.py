"""reconcile() as a table: what it writes, what it reports, and what kind of retry an error calls for."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_operator import conditions as c
from modelservice_operator.api import parse_spec
from modelservice_operator.context import ObservedChildren
from modelservice_operator.kube.errors import (
    ApiForbidden,
    ApiRejected,
    ApiServerError,
    ApiThrottled,
    ApiUnreachable,
    KubeError,
)
from modelservice_operator.metrics_source import MetricsSource
from modelservice_operator.reconcile import merge_patch, reconcile
from modelservice_operator.render import RenderOptions
from modelservice_operator.render.deployment import render_deployment

from .fakes import FakeClient

pytestmark = pytest.mark.asyncio
NOW = "2026-01-01T00:00:00Z"
OPTIONS = RenderOptions(default_image="runtime:1")


def modelservice(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "serving.modelservice.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {
            "name": "iris",
            "namespace": "ml",
            "uid": "ms-uid",
            "generation": 2,
            "resourceVersion": "5",
        },
        "spec": {"model": {"storageUri": "pvc://models/iris"}, "replicas": 2, **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def deployment_name(body: dict[str, Any]) -> str:
    """``iris-<revision>``: the Deployment of the revision the spec renders."""
    name: str = render_deployment(parse_spec(body), OPTIONS.default_image)["metadata"]["name"]
    return name


DEPLOYMENT = deployment_name(modelservice())


async def converge(body: dict[str, Any]) -> tuple[ObservedChildren, dict[str, Any]]:
    """What the cluster looks like once a first reconcile created everything and the pods are serving."""
    client = FakeClient()
    observed = ObservedChildren()
    await reconcile(body, observed, client, OPTIONS, NOW)
    deployment = observed.named("Deployment", deployment_name(body))
    assert deployment is not None
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
                            "availableReplicas": 2}  # fmt: skip
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pods = [{"kind": "Pod", "metadata": {"name": f"iris-{i}", "labels": labels},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}} for i in range(2)]  # fmt: skip
    observed.children["Pod"] = pods
    observed.children["EndpointSlice"] = [
        {"kind": "EndpointSlice", "metadata": {"name": "iris-x", "labels": {"kubernetes.io/service-name": "iris"}},
         "endpoints": [{"conditions": {"ready": True}, "targetRef": {"name": p["metadata"]["name"]}} for p in pods]}
    ]  # fmt: skip
    outcome = await reconcile({**body, "status": client.status}, observed, FakeClient(), OPTIONS, NOW)
    assert outcome.ready and outcome.status is not None
    return observed, outcome.status


async def test_first_reconcile_creates_the_children_writes_one_status_and_one_event() -> None:
    client = FakeClient()
    outcome = await reconcile(modelservice(), ObservedChildren(), client, OPTIONS, NOW)
    assert [(v, k) for v, k, _ in client.calls] == [
        ("apply", "Deployment"), ("apply", "Service"), ("apply", "PodDisruptionBudget"),
        ("patch_status", "ModelService"), ("create_event", "Event"),
    ]  # fmt: skip
    assert client.events[0]["reason"] == "Created"
    assert (
        client.events[0]["message"]
        == f"Created Deployment {DEPLOYMENT}, Service iris, PodDisruptionBudget iris"
    )
    assert outcome.error is None and not outcome.ready
    assert c.get_condition(client.status["conditions"], c.READY)["reason"] == c.ROLLING_OUT  # type: ignore[index]


async def test_a_converged_object_makes_no_write_at_all() -> None:
    observed, status = await converge(modelservice())
    client = FakeClient()
    outcome = await reconcile(modelservice(status), observed, client, OPTIONS, NOW)
    assert client.calls == []
    assert outcome.ready and outcome.status is None and outcome.writes == 0


async def test_non_canonical_quantities_as_the_server_returns_them_make_no_write() -> None:
    body = modelservice(
        resources={"requests": {"cpu": "0.5", "memory": "2048Mi"}, "limits": {"cpu": "1000m"}}
    )
    observed, status = await converge(body)
    deployment = observed.named("Deployment", deployment_name(body))
    assert deployment is not None
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "500m", "memory": "2Gi"},
        "limits": {"cpu": "1"},
    }
    client = FakeClient()
    await reconcile({**body, "status": status}, observed, client, OPTIONS, NOW)
    assert client.calls == []


async def test_a_child_edited_by_hand_is_applied_again_and_the_event_names_the_drift() -> None:
    observed, status = await converge(modelservice())
    deployment = observed.named("Deployment", DEPLOYMENT)
    assert deployment is not None
    deployment["spec"]["replicas"] = 7
    client = FakeClient()
    await reconcile(modelservice(status), observed, client, OPTIONS, NOW)
    assert client.calls[0] == ("apply", "Deployment", DEPLOYMENT)
    assert client.events[0]["reason"] == "Updated"
    assert "spec.replicas changed by someone else" in client.events[0]["message"]


async def test_an_edit_that_makes_apply_fail_is_repaired_with_an_update() -> None:
    observed, status = await converge(modelservice())
    service = observed.named("Service", "iris")
    assert service is not None
    service["spec"]["ports"][0]["port"] = 9999  # by hand: our apply would now duplicate the port name
    client = FakeClient({("apply", "Service"): ApiRejected(422, {"message": 'Duplicate value: "http"'})})
    outcome = await reconcile(modelservice(status), observed, client, OPTIONS, NOW)
    assert ("replace", "Service", "iris") in client.calls
    assert client.objects["Service", "iris"]["spec"]["ports"][0]["port"] == 8501
    assert outcome.error is None
    assert client.events[0]["reason"] == "Repaired"


async def test_an_immutable_field_clash_replaces_the_child() -> None:
    observed, status = await converge(modelservice())
    deployment = observed.named("Deployment", DEPLOYMENT)
    assert deployment is not None
    deployment["spec"]["selector"]["matchLabels"]["someone"] = "else"
    client = FakeClient(
        {
            ("apply", "Deployment"): ApiRejected(
                422, {"message": "spec.selector: Invalid value: field is immutable"}
            )
        }
    )
    await reconcile(modelservice(status), observed, client, OPTIONS, NOW)
    assert client.calls[:3] == [("apply", "Deployment", DEPLOYMENT), ("delete", "Deployment", DEPLOYMENT),
                                ("create", "Deployment", DEPLOYMENT)]  # fmt: skip


async def test_a_child_owned_by_someone_else_is_left_alone_and_reported() -> None:
    observed = ObservedChildren()
    observed.put({"kind": "Service", "metadata": {"name": "iris", "ownerReferences": [
        {"kind": "Deployment", "uid": "other", "controller": True}]}})  # fmt: skip
    client = FakeClient()
    outcome = await reconcile(modelservice(), observed, client, OPTIONS, NOW)
    assert ("apply", "Service", "iris") not in client.calls
    ready = c.get_condition(client.status["conditions"], c.READY)  # type: ignore[index]
    assert ready is not None and ready["reason"] == c.CHILD_CONFLICT
    assert "Service iris already exists" in ready["message"]
    assert outcome.error is not None and not getattr(outcome.error, "transient", False)


FORBIDDEN = ApiForbidden(403, {"message": 'horizontalpodautoscalers.autoscaling "iris" is forbidden: User '
                                          '"system:serviceaccount:ops:op" cannot patch resource'})  # fmt: skip


@pytest.mark.parametrize(
    ("error", "reason", "words", "transient"),
    [
        pytest.param(FORBIDDEN, c.FORBIDDEN, "grant it in the operator's Role", True, id="rbac-403"),
        pytest.param(ApiThrottled(429, {"message": "too many requests"}, retry_after=7), c.THROTTLED,
                     "throttling", True, id="throttled-429"),
        pytest.param(ApiServerError(500, {"message": "etcd timeout"}), c.API_UNAVAILABLE, "etcd timeout", True,
                     id="server-500"),
        pytest.param(ApiUnreachable("connection refused"), c.API_UNAVAILABLE, "connection refused", True, id="timeout"),
        pytest.param(ApiRejected(422, {"message": "metrics[0]: unsupported", "details": {"causes": [
            {"field": "spec.metrics[0].type"}]}}), c.APPLY_REJECTED, "spec.autoscaling.metrics: the API server rejected "
                     "HorizontalPodAutoscaler iris", False, id="rejected-422-names-our-field"),
    ],
)  # fmt: skip
async def test_api_errors_are_reported_in_status_with_the_retry_they_call_for(
    error: KubeError, reason: str, words: str, transient: bool
) -> None:
    body = modelservice(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    client = FakeClient({("apply", "HorizontalPodAutoscaler"): error})
    outcome = await reconcile(body, ObservedChildren(), client, OPTIONS, NOW)
    assert outcome.error is error and error.transient is transient
    ready = c.get_condition(client.status["conditions"], c.READY)  # type: ignore[index]
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", reason)
    assert words in ready["message"]
    progressing = c.get_condition(client.status["conditions"], c.PROGRESSING)  # type: ignore[index]
    assert progressing is not None and progressing["status"] == "True"  # it keeps trying by itself
    # The children before the failing one were written; a Warning Event says what failed.
    assert ("apply", "Deployment", DEPLOYMENT) in client.calls
    assert any(e["type"] == "Warning" or e["reason"] == "Created" for e in client.events)


async def test_the_same_failure_again_writes_nothing_new() -> None:
    client = FakeClient({("apply", "Service"): FORBIDDEN})
    first = await reconcile(modelservice(), ObservedChildren(), client, OPTIONS, NOW)
    assert first.status is not None
    observed = ObservedChildren()
    observed.put(client.objects["Deployment", DEPLOYMENT])
    again = FakeClient({("apply", "Service"): FORBIDDEN})
    second = await reconcile(modelservice(first.status), observed, again, OPTIONS, NOW)
    assert [call for call in again.calls if call[0] != "apply"] == []  # no status, no Event
    assert second.status is None and second.error is not None


async def test_an_invalid_spec_is_reported_once_and_creates_nothing() -> None:
    client = FakeClient()
    body = modelservice(model={"storageUri": "gs://bucket/iris"})
    outcome = await reconcile(body, ObservedChildren(), client, OPTIONS, NOW)
    assert [v for v, _, _ in client.calls] == ["patch_status", "create_event"]
    again = FakeClient()
    await reconcile({**body, "status": outcome.status}, ObservedChildren(), again, OPTIONS, NOW)
    assert again.calls == []


async def test_a_child_that_is_no_longer_wanted_is_deleted() -> None:
    observed, status = await converge(modelservice())
    assert observed.named("PodDisruptionBudget", "iris") is not None
    client = FakeClient()
    await reconcile(modelservice(status, replicas=1), observed, client, OPTIONS, NOW)
    assert ("delete", "PodDisruptionBudget", "iris") in client.calls


async def test_a_spec_turned_invalid_clears_the_url_but_keeps_the_rollout_state() -> None:
    observed, status = await converge(modelservice())
    assert "url" in status and "revision" in status
    client = FakeClient()
    await reconcile(modelservice(status, model={"storageUri": "gs://bucket/iris"}), observed, client,
                    OPTIONS, NOW)  # fmt: skip
    assert client.status is not None
    assert client.status["url"] is None  # a merge-patch removal: nothing serves what the spec asks for
    # The pods still run the stable revision; a fixed spec goes on from there instead of starting over.
    assert client.status["stable"] == status["stable"] and client.status["revision"] == status["revision"]


async def test_the_status_patch_removes_keys_gone_at_any_depth() -> None:
    previous = {"rollout": {"step": 1, "aborted": {"reason": "RolloutAborted"}}, "canary": {"revision": "b"}}
    new = {"rollout": {"step": 0}, "history": [{"outcome": "Aborted"}]}
    assert merge_patch(previous, new) == {
        "canary": None, "rollout": {"aborted": None, "step": 0}, "history": [{"outcome": "Aborted"}],
    }  # fmt: skip


async def test_a_due_analysis_scrapes_canary_and_stable_pods_through_the_pod_proxy() -> None:
    observed, status = await converge(modelservice())
    stable_revision = status["stable"]["revision"]
    body = modelservice(status, rollout={"strategy": "canary", "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]}},
                        runtime={"image": "runtime:2"})  # fmt: skip
    canary_revision = deployment_name(body).rsplit("-", 1)[1]
    ready = [{"type": "Ready", "status": "True"}]
    observed.children["Pod"] = [
        {"kind": "Pod", "metadata": {"name": "c-0", "labels": {"serving.modelservice.io/revision": canary_revision}},
         "status": {"conditions": ready}},
        {"kind": "Pod", "metadata": {"name": "s-0", "labels": {"serving.modelservice.io/revision": stable_revision}},
         "status": {"conditions": ready}},
    ]  # fmt: skip
    body["status"] = {**status, "rollout": {"revision": canary_revision, "deployment": deployment_name(body),
                                            "step": 1, "analysis": {"runs": [{"key": "step-1", "nextAt": NOW,
                                                                              "phases": [], "verdict": "Running"}]}}}  # fmt: skip
    client = FakeClient()
    await reconcile(body, observed, client, OPTIONS, NOW, metrics=MetricsSource())
    scraped = sorted(name for verb, _, name in client.calls if verb == "pod_proxy_get")
    assert scraped == ["c-0", "s-0"]
    assert client.status is not None
    run = client.status["rollout"]["analysis"]["runs"][0]
    assert run["key"] == "step-1" and run["nextAt"] == "2026-01-01T00:00:30Z"  # the baseline; next in 30 s


async def test_kubernetes_authentication_gives_the_runtime_an_account_bound_to_auth_delegator_once() -> None:
    body = modelservice(runtime={"auth": {"kubernetes": {"enabled": True}}})
    client = FakeClient()
    observed = ObservedChildren()
    await reconcile(body, observed, client, OPTIONS, NOW)
    assert [(v, k) for v, k, _ in client.calls][:3] == [
        ("apply", "ServiceAccount"), ("apply", "ClusterRoleBinding"), ("apply", "Deployment")
    ]  # fmt: skip
    binding = client.objects["ClusterRoleBinding", "modelservice:auth-delegator:ml:iris-runtime"]
    assert binding["roleRef"]["name"] == "system:auth-delegator"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "iris-runtime", "namespace": "ml"}]
    assert "ownerReferences" not in binding["metadata"]  # cluster-scoped: the status records it instead
    assert client.status is not None and client.status["authDelegatorBinding"] == binding["metadata"]["name"]
    pod = client.objects["Deployment", deployment_name(body)]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("iris-runtime", True)
    assert "--kubernetes_auth=ml/iris" in pod["containers"][0]["args"]

    again = FakeClient()  # recorded in the status, its account unchanged: not applied again
    await reconcile({**body, "status": client.status}, observed, again, OPTIONS, NOW)
    assert not any(kind in ("ServiceAccount", "ClusterRoleBinding") for _, kind, _ in again.calls)

    off = FakeClient()  # turned off: the binding and the account go
    await reconcile({**modelservice(), "status": client.status}, observed, off, OPTIONS, NOW)
    assert ("delete", "ClusterRoleBinding", "modelservice:auth-delegator:ml:iris-runtime") in off.calls
    assert ("delete", "ServiceAccount", "iris-runtime") in off.calls
    assert (
        off.status is not None
        and "authDelegatorBinding" in off.status
        and off.status["authDelegatorBinding"] is None
    )
