"""The real operator (Kopf, our handlers, our API client) against KMock's Kubernetes emulator.

Fast feedback for create / update / invalid-spec / delete; the real API server proves the rest (e2e).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import pytest_asyncio

from modelservice_operator import handlers  # noqa: F401  (registers the handlers)
from modelservice_operator.api import parse_spec
from modelservice_operator.controller import Controller
from modelservice_operator.kube.credentials import Credentials
from modelservice_operator.render import RenderOptions
from modelservice_operator.render.deployment import render_deployment

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

MS = "serving.modelservice.io/v1alpha1/modelservices"
NS = "team-a"


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Wait until ``check()`` returns something truthy without raising."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
        except (KeyError, AssertionError, TypeError) as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in {timeout}s: {last!r}")


def obj(server: Any, resource: str, name: str) -> dict[str, Any]:
    found = server.objects[resource, NS, name]
    return dict(found.raw if hasattr(found, "raw") else found)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


@pytest_asyncio.fixture()
async def cluster(kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    kmock.resources.load_bundled()  # the built-in kinds: pods, events, deployments, namespaces ...
    kmock.resources[MS] = kmock_resource()
    url = str(kmock.url).rstrip("/")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: kmock, user: {token: test}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: kmock}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("MODELSERVICE_RESYNC_SECONDS", "0.5")  # the safety net, often: it must not write
    memo = kopf.Memo(
        credentials=Credentials.load(str(kubeconfig)),
        options=RenderOptions(default_image="example.test/runtime:1"),
    )
    # Kopf owns its event loop (it cancels every other task there when it stops), so it runs in a
    # thread of its own; KMock keeps serving on the test's loop.
    stop, ready = threading.Event(), threading.Event()

    def run_operator() -> None:
        asyncio.run(
            kopf.operator(clusterwide=True, standalone=True, memo=memo, stop_flag=stop, ready_flag=ready)
        )

    thread = threading.Thread(target=run_operator, name="kopf", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 20), "the operator did not start"
    try:
        yield kmock
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 20)
        assert not thread.is_alive(), "the operator did not stop"


def kmock_resource() -> Any:
    return kmock.ResourceInfo(
        kind="ModelService", singular="modelservice", namespaced=True, shortnames={"ms", "msvc"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"}, subresources={"status", "scale"},
    )  # fmt: skip


def modelservice(name: str = "iris", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"storageUri": "pvc://models/iris"}, "replicas": 2}
    body.update(spec)
    return {
        "apiVersion": "serving.modelservice.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": body,
    }


def deployment_name(body: dict[str, Any]) -> str:
    """``iris-<revision>``: the Deployment of the revision the spec renders."""
    options = RenderOptions(default_image="example.test/runtime:1")
    name: str = render_deployment(parse_spec(body), options.default_image)["metadata"]["name"]
    return name


async def create(server: Any, body: dict[str, Any]) -> None:
    response = await server.post(
        f"/apis/serving.modelservice.io/v1alpha1/namespaces/{NS}/modelservices", json=body
    )
    assert response.status < 300, await response.text()


def events_for(server: Any, name: str) -> list[dict[str, Any]]:
    """Events posted about ``name`` (read from the requests: the emulator keys generateName'd events by None)."""
    return [
        r.data
        for r in list(server)
        if r.method.value == "POST"
        and str(r.url.path).endswith("/events")
        and isinstance(r.data, dict)
        and r.data.get("involvedObject", {}).get("name") == name
    ]


async def test_create_applies_children_with_owner_references_and_reports_status(cluster: Any) -> None:
    body = modelservice(gpu={"count": 1, "product": "NVIDIA-A100-SXM4-80GB"})
    await create(cluster, body)
    name = deployment_name(body)
    deployment = await eventually(lambda: obj(cluster, "apps/v1/deployments", name))
    service = await eventually(lambda: obj(cluster, "v1/services", "iris"))
    pdb = await eventually(lambda: obj(cluster, "policy/v1/poddisruptionbudgets", "iris"))
    for child in (deployment, service, pdb):
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelService", "uid-iris", True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.test/runtime:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    body = await eventually(
        lambda: obj(cluster, MS, "iris") if obj(cluster, MS, "iris").get("status") else None
    )
    assert body["status"]["url"] == f"http://iris.{NS}.svc:8501"
    assert condition(body, "Ready")["status"] == "False"  # no pods are ready in an emulator
    events = await eventually(lambda: events_for(cluster, "iris"))
    assert any(e["reason"] == "Created" and f"Deployment {name}" in e["message"] for e in events)


async def test_status_turns_ready_from_watch_events_once_pods_are_endpoints(cluster: Any) -> None:
    await create(cluster, modelservice())
    name = deployment_name(modelservice())
    await eventually(lambda: obj(cluster, "apps/v1/deployments", name))
    # Play the Deployment and EndpointSlice controllers through the API, so the watches see it: the
    # emulator has neither.
    response = await cluster.patch(
        f"/apis/apps/v1/namespaces/{NS}/deployments/{name}",
        json={"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                                                         "updatedReplicas": 2, "availableReplicas": 2}},
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert response.status < 300, await response.text()
    labels = {"serving.modelservice.io/name": "iris", "app.kubernetes.io/component": "predictor"}
    # The pods carry their revision, as the Deployment's template gives it to them.
    revision = obj(cluster, "apps/v1/deployments", name)["metadata"]["labels"][
        "serving.modelservice.io/revision"
    ]
    for i in range(2):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"iris-{i}", "namespace": NS,
                                                           "labels": {**labels, "serving.modelservice.io/revision": revision}},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip
        assert (await cluster.post(f"/api/v1/namespaces/{NS}/pods", json=pod)).status < 300
    body = await eventually(
        lambda: (
            (b := obj(cluster, MS, "iris")) and condition(b, "Ready")["reason"] == "EndpointsPending" and b
        )
    )
    assert "0/2 ready pods are endpoints of Service iris" in condition(body, "Ready")["message"]
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "iris-abcde", "namespace": NS, "labels": {**labels, "kubernetes.io/service-name": "iris"}},
        "endpoints": [{"addresses": [f"10.0.0.{i}"], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": f"iris-{i}"}} for i in range(2)],
    }  # fmt: skip
    response = await cluster.post(
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", json=endpoint_slice
    )
    assert response.status < 300, await response.text()
    body = await eventually(
        lambda: (b := obj(cluster, MS, "iris")) and condition(b, "Ready")["status"] == "True" and b
    )
    assert condition(body, "Ready")["reason"] == "Available"
    assert body["status"]["replicaSummary"] == "2/2"


async def test_watch_events_reach_the_controller_on_the_operators_event_loop_not_a_thread_pool(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache, the work queue and the GPU inventory belong to the loop the reconcile workers run on;
    Kopf would run a plain-function handler in its thread pool."""
    seen: dict[str, set[str]] = {}
    for method in ("modelservice_event", "child_event", "pod_event", "node_event"):
        original = getattr(Controller, method)

        def recording(self: Controller, *args: Any, _original: Any = original, _name: str = method) -> None:
            seen.setdefault(_name, set()).add(threading.current_thread().name)
            _original(self, *args)

        monkeypatch.setattr(Controller, method, recording)
    await create(cluster, modelservice())
    await eventually(lambda: obj(cluster, "apps/v1/deployments", deployment_name(modelservice())))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "iris-0", "namespace": NS,
                                                       "labels": {"serving.modelservice.io/name": "iris"}}}  # fmt: skip
    assert (await cluster.post(f"/api/v1/namespaces/{NS}/pods", json=pod)).status < 300
    await eventually(lambda: {"modelservice_event", "child_event", "pod_event"} <= seen.keys())
    assert {name for names in seen.values() for name in names} == {"kopf"}, seen


async def test_update_of_the_spec_updates_the_deployment_and_drops_the_pdb_when_alone(cluster: Any) -> None:
    await create(cluster, modelservice())
    await eventually(lambda: obj(cluster, "policy/v1/poddisruptionbudgets", "iris"))
    url = f"/apis/serving.modelservice.io/v1alpha1/namespaces/{NS}/modelservices/iris"
    response = await cluster.patch(url, json={"metadata": {"generation": 2}, "spec": {"replicas": 1}},
                                   headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    assert response.status < 300
    name = deployment_name(modelservice())
    await eventually(lambda: obj(cluster, "apps/v1/deployments", name)["spec"]["replicas"] == 1)
    await eventually(
        lambda: (
            ("v1", "policy/v1/poddisruptionbudgets")
            and _gone(cluster, "policy/v1/poddisruptionbudgets", "iris")
        )
    )


def _gone(server: Any, resource: str, name: str) -> bool:
    try:
        return server.objects[resource, NS, name].deleted  # type: ignore[no-any-return]
    except KeyError:
        return True


async def test_invalid_spec_is_reported_not_retried_and_creates_nothing(cluster: Any) -> None:
    await create(cluster, modelservice("bad", model={"storageUri": "gs://bucket/iris"}))
    body = await eventually(
        lambda: obj(cluster, MS, "bad") if obj(cluster, MS, "bad").get("status") else None
    )
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.model.storageUri" in ready["message"] and "gs://" in ready["message"]
    warnings = await eventually(lambda: [e for e in events_for(cluster, "bad") if e["type"] == "Warning"])
    assert warnings[0]["reason"] == "InvalidSpec"
    await asyncio.sleep(1.0)  # let the first handling settle

    def writes() -> int:
        return len(
            [r for r in list(cluster) if r.method.value in ("PATCH", "POST", "PUT") and "/bad" in str(r.url)]
        )

    before = writes()
    await asyncio.sleep(2.0)  # four resync periods of the timer
    assert writes() == before, "the resync timer rewrote an unchanged InvalidSpec status"
    assert _gone(cluster, "apps/v1/deployments", "bad")


async def test_deleting_a_modelservice_is_not_blocked_by_the_operator(cluster: Any) -> None:
    await create(cluster, modelservice())
    await eventually(lambda: obj(cluster, "apps/v1/deployments", deployment_name(modelservice())))
    response = await cluster.delete(
        f"/apis/serving.modelservice.io/v1alpha1/namespaces/{NS}/modelservices/iris"
    )
    assert response.status < 300
    await eventually(lambda: _gone(cluster, MS, "iris"))
