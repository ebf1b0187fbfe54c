"""Canary and blue-green rollouts on the real control plane: pods per revision, what each Service's
EndpointSlices select, the kubectl plugin's controls, and the Gateway API route's weights.

Pods are kwok's (ready at once); what is proven here is the operator's part: Deployments per revision,
replica counts, selectors and endpoints as the API server and its controllers see them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from modelservice_operator.rollout import approximate_counts
from tests.cluster import harness
from tests.e2e.conftest import ROOT, Kubectl, OperatorProcess, condition, eventually, example

pytestmark = pytest.mark.e2e
REVISION = "serving.modelservice.io/revision"
MS_LABEL = "serving.modelservice.io/name"


def ms(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kubectl.json("get", "ms", name)
    return body


def ready_pods_by_revision(kubectl: Kubectl, name: str) -> Counter[str]:
    pods = kubectl.json("get", "pods", "-l", f"{MS_LABEL}={name}")["items"]
    return Counter(
        p["metadata"]["labels"][REVISION]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    )


def endpoints_by_revision(kubectl: Kubectl, service: str) -> Counter[str]:
    """Ready endpoints of ``service``, by the revision of the pod behind each."""
    pods = {p["metadata"]["name"]: p for p in kubectl.json("get", "pods")["items"]}
    slices = kubectl.json("get", "endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    found: Counter[str] = Counter()
    for endpoint in (e for s in slices for e in s.get("endpoints") or []):
        pod = pods.get((endpoint.get("targetRef") or {}).get("name", ""))
        if endpoint["conditions"].get("ready") and pod is not None:
            found[pod["metadata"]["labels"][REVISION]] += 1
    return found


def plugin(kubectl: Kubectl, *args: str) -> str:
    """``kubectl modelservice ...`` exactly as a user runs it (kubectl finds kubectl-modelservice on PATH)."""
    env = {**os.environ, "KUBECONFIG": str(kubectl.kubeconfig), "KUBECTL": str(harness.binary("kubectl")),
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"}  # fmt: skip
    result = subprocess.run(
        [str(harness.binary("kubectl")), "modelservice", "-n", kubectl.namespace or "default", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def at_step(kubectl: Kubectl, name: str, step: int, timeout: float = 90, attempt: int = 0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = ms(kubectl, name)
        rollout = body.get("status", {}).get("rollout") or {}
        here = (
            rollout.get("revision") and rollout.get("step") == step and rollout.get("attempt", 0) == attempt
        )
        return body if here and not rollout.get("aborted") else None

    result: dict[str, Any] = eventually(check, timeout=timeout, what=f"{name} at step {step}")
    return result


def started(kubectl: Kubectl, name: str, first: str) -> str:
    """Wait until a rollout of a revision other than ``first`` is under way; its revision."""
    revision: str = eventually(
        lambda: (
            (r := (ms(kubectl, name)["status"].get("rollout") or {}).get("revision")) and r != first and r
        ),
        what="a rollout to start",
    )
    return revision


def counts_match(kubectl: Kubectl, name: str, expected: dict[str, int]) -> bool:
    """Ready pods per revision and the <name> Service's ready endpoints per revision both match."""
    pods = ready_pods_by_revision(kubectl, name)
    endpoints = endpoints_by_revision(kubectl, name)
    return dict(pods) == expected and dict(endpoints) == expected


def test_canary_walks_every_step_to_promotion_with_pods_and_endpoints_following_the_weights(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    name = "iris-canary"
    kubectl.apply(example(name))
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    stable = ms(kubectl, name)["status"]["stable"]["revision"]
    fast = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "5s"}}]
    kubectl.apply(example(name, spec__model__version="2", spec__rollout__canary={"steps": fast}))
    canary = started(kubectl, name, stable)

    # setWeight 25 of 4 pods: 1 canary, 3 stable, both in the <name> Service; then pause {} holds.
    body = at_step(kubectl, name, 1)
    assert condition(body, "Progressing")["reason"] == "RolloutPaused"
    assert "step 2/4 pause: paused until promoted" in condition(body, "Progressing")["message"]
    eventually(lambda: counts_match(kubectl, name, {stable: 3, canary: 1}), what="25%: 3 stable + 1 canary")
    eventually(
        lambda: dict(endpoints_by_revision(kubectl, f"{name}-canary")) == {canary: 1}, what="canary svc"
    )
    eventually(
        lambda: dict(endpoints_by_revision(kubectl, f"{name}-stable")) == {stable: 3}, what="stable svc"
    )
    body = eventually(lambda: (b := ms(kubectl, name)) and condition(b, "Ready")["status"] == "True" and b,
                      what="Ready while the canary is paused: clients are served throughout")  # fmt: skip
    assert body["status"]["canary"]["actualWeight"] == 25
    time.sleep(8)
    assert ms(kubectl, name)["status"]["rollout"]["step"] == 1, "pause {} must hold until promoted"

    assert "promote" in plugin(kubectl, "promote", name)
    # setWeight 50: 2 and 2, then a 5 s pause, then everything to the canary.
    at_step(kubectl, name, 3)
    eventually(lambda: counts_match(kubectl, name, {stable: 2, canary: 2}), what="50%: 2 + 2")
    done = eventually(
        lambda: (b := ms(kubectl, name))["status"]["stable"]["revision"] == canary
        and "rollout" not in b["status"] and condition(b, "Progressing")["reason"] == "RolloutComplete" and b,
        timeout=60, what="promotion",
    )  # fmt: skip
    eventually(lambda: counts_match(kubectl, name, {canary: 4}), what="only the new revision left")
    deployments = [
        d["metadata"]["name"] for d in kubectl.json("get", "deploy", "-l", f"{MS_LABEL}={name}")["items"]
    ]
    assert deployments == [f"{name}-{canary}"], "the old Deployment must be gone"
    assert [h["outcome"] for h in done["status"]["history"]] == ["Promoted"]
    for service in (f"{name}-stable", f"{name}-canary"):
        assert kubectl.json("get", "svc", service)["spec"]["selector"][REVISION] == canary
    reasons = {e["reason"] for e in kubectl.json("get", "events", "--field-selector",
                                                 f"involvedObject.name={name}")["items"]}  # fmt: skip
    assert {"RolloutStarted", "StepCompleted", "RolloutPromoted"} <= reasons


def test_abort_returns_traffic_to_stable_retry_resumes_and_a_new_revision_restarts_the_steps(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    name = "iris-canary"
    kubectl.apply(example(name))
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    stable = ms(kubectl, name)["status"]["stable"]["revision"]
    kubectl.apply(example(name, spec__model__version="2"))
    canary = started(kubectl, name, stable)
    at_step(kubectl, name, 1)

    plugin(kubectl, "abort", name)
    aborted = eventually(
        lambda: (b := ms(kubectl, name)) and condition(b, "Degraded")["reason"] == "RolloutAborted" and b,
        what="Degraded/RolloutAborted",
    )
    assert condition(aborted, "Degraded")["status"] == "True"
    eventually(lambda: counts_match(kubectl, name, {stable: 4}), what="all traffic back on stable")
    assert ms(kubectl, name)["spec"]["model"]["version"] == "2"  # the spec still names the new revision
    # The canary Service selects the stable pods again; its EndpointSlice follows on its own schedule.
    eventually(lambda: dict(endpoints_by_revision(kubectl, f"{name}-canary")) == {stable: 4},
               what="the canary Service's endpoints on stable")  # fmt: skip

    plugin(kubectl, "retry", name)
    body = at_step(kubectl, name, 1, attempt=1)
    assert condition(body, "Degraded")["status"] == "False"
    eventually(lambda: counts_match(kubectl, name, {stable: 3, canary: 1}), what="25% again")

    # The HPA writes spec.replicas through the scale subresource, as kubectl scale does: the share holds.
    kubectl.run("scale", f"ms/{name}", "--replicas=8")
    eventually(lambda: counts_match(kubectl, name, {stable: 6, canary: 2}), what="25% of 8")

    kubectl.apply(example(name, spec__model__version="3", spec__replicas=8))
    newest = started(kubectl, name, canary)
    body = at_step(kubectl, name, 1)
    assert body["status"]["canary"]["revision"] == newest
    eventually(lambda: counts_match(kubectl, name, {stable: 6, newest: 2}), what="the newest revision at 25%")
    eventually(lambda: kubectl.run("get", "deploy", f"{name}-{canary}", check=False).returncode != 0,
               what="the superseded canary's Deployment deleted")  # fmt: skip
    outcomes = [h["outcome"] for h in ms(kubectl, name)["status"]["history"]]
    assert outcomes == ["Aborted", "Superseded"]


def test_blue_green_preview_then_an_instant_switch_and_the_old_revision_goes_after_the_delay(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    name = "iris-bluegreen"
    kubectl.apply(example(name, spec__rollout__blueGreen={"previewReplicas": 1, "autoPromotionEnabled": False,
                                                          "scaleDownDelaySeconds": 10}))  # fmt: skip
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    blue = ms(kubectl, name)["status"]["stable"]["revision"]
    kubectl.apply(example(name, spec__model__version="2", spec__rollout__blueGreen={
        "previewReplicas": 1, "autoPromotionEnabled": False, "scaleDownDelaySeconds": 10}))  # fmt: skip
    green = started(kubectl, name, blue)
    eventually(
        lambda: dict(endpoints_by_revision(kubectl, f"{name}-preview")) == {green: 1}
        and dict(endpoints_by_revision(kubectl, name)) == {blue: 2},
        what="preview serves green alone; clients still on blue",
    )  # fmt: skip
    body = eventually(lambda: (b := ms(kubectl, name)) and condition(b, "Progressing")["reason"] == "RolloutPaused" and b,
                      what="paused until promoted")  # fmt: skip
    assert body["status"]["preview"]["revision"] == green

    plugin(kubectl, "promote", name, "--full")
    # Green is scaled to 2 before the switch, so the switch moves every client at once.
    eventually(lambda: kubectl.json("get", "svc", name)["spec"]["selector"].get(REVISION) == green,
               what="the <name> Service switched to green")  # fmt: skip
    switched_at = time.monotonic()
    assert dict(endpoints_by_revision(kubectl, f"{name}-stable")) in (
        {green: 2},
        {blue: 2},
    )  # may lag a moment
    eventually(
        lambda: dict(endpoints_by_revision(kubectl, name)) == {green: 2},
        timeout=15,
        what="endpoints switched",
    )
    assert kubectl.run("get", "deploy", f"{name}-{blue}", check=False).returncode == 0, "blue went too early"
    eventually(lambda: kubectl.run("get", "deploy", f"{name}-{blue}", check=False).returncode != 0,
               timeout=60, what="blue deleted after scaleDownDelaySeconds")  # fmt: skip
    assert time.monotonic() - switched_at >= 8
    assert ms(kubectl, name)["status"]["history"][-1]["outcome"] == "Promoted"


@pytest.fixture(scope="session")
def gateway_api(cluster: Any) -> None:
    admin = Kubectl(cluster)
    admin.run("apply", "--server-side", "-f", str(harness.gateway_api_crds()))
    eventually(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in admin.json(
        "get", "crd", "httproutes.gateway.networking.k8s.io").get("status", {}).get("conditions") or []),
        what="the HTTPRoute CRD established")  # fmt: skip


def route_weights(kubectl: Kubectl, route: str) -> dict[str, int]:
    refs = kubectl.json("get", "httproute", route)["spec"]["rules"][0]["backendRefs"]
    return {r["name"]: r.get("weight", 1) for r in refs}


def test_gateway_api_route_weights_follow_the_steps(
    kubectl: Kubectl, operator: OperatorProcess, gateway_api: None
) -> None:
    name = "iris-canary"
    kubectl.apply(json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "iris"},
        "spec": {"parentRefs": [{"name": "shared-gateway"}], "rules": [{"backendRefs": [
            {"name": f"{name}-stable", "port": 8501, "weight": 100},
            {"name": f"{name}-canary", "port": 8501, "weight": 0}]}]},
    }))  # fmt: skip
    routed = {"trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
              "steps": [{"setWeight": 20}, {"pause": {}}, {"setCanaryScale": {"replicas": 3}}, {"pause": {}},
                        {"setWeight": 60}, {"pause": {"duration": "3s"}}]}  # fmt: skip
    kubectl.apply(example(name, spec__replicas=5, spec__rollout__canary=routed))
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    stable = ms(kubectl, name)["status"]["stable"]["revision"]
    kubectl.apply(example(name, spec__replicas=5, spec__model__version="2", spec__rollout__canary=routed))
    canary = started(kubectl, name, stable)

    at_step(kubectl, name, 1)
    assert route_weights(kubectl, "iris") == {f"{name}-stable": 80, f"{name}-canary": 20}
    # ceil(5 * 20%) = 1 canary pod; the stable shrinks to ceil(5 * 80%) = 4 once the weight moved.
    eventually(lambda: dict(ready_pods_by_revision(kubectl, name)) == {stable: 4, canary: 1}, what="4 + 1")
    assert ms(kubectl, name)["status"]["canary"]["actualWeight"] == 20

    plugin(kubectl, "promote", name)
    at_step(kubectl, name, 3)
    eventually(lambda: dict(ready_pods_by_revision(kubectl, name))[canary] == 3, what="setCanaryScale 3")
    assert route_weights(kubectl, "iris") == {f"{name}-stable": 80, f"{name}-canary": 20}

    plugin(kubectl, "promote", name)
    at_step(kubectl, name, 5)
    assert route_weights(kubectl, "iris") == {f"{name}-stable": 40, f"{name}-canary": 60}
    eventually(
        lambda: ms(kubectl, name)["status"]["stable"]["revision"] == canary, timeout=60, what="promotion"
    )
    # Both Services now select the new revision and the route sends everything to <name>-stable.
    eventually(lambda: route_weights(kubectl, "iris") == {f"{name}-stable": 100, f"{name}-canary": 0},
               what="weights reset after promotion")  # fmt: skip
    assert kubectl.json("get", "svc", f"{name}-stable")["spec"]["selector"][REVISION] == canary
    eventually(lambda: dict(ready_pods_by_revision(kubectl, name)) == {canary: 5}, timeout=90,
               what="the old stable scaled down after the delay")  # fmt: skip


def test_the_previous_operators_single_deployment_is_adopted_without_downtime(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    """A ModelService whose only Deployment is ``<name>`` (the previous layout) moves onto
    ``<name>-<revision>`` with at least ``replicas`` ready pods behind the Service throughout."""
    name = "iris"
    kubectl.apply(ROOT / "examples" / "iris-cpu.yaml")
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    current = ms(kubectl, name)["status"]["deployment"]
    deployment = kubectl.json("get", "deploy", current)
    operator.stop()
    try:
        # Recreate the previous layout: one Deployment named <name>, selecting without the revision.
        legacy = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": deployment["metadata"]["labels"],
                         "ownerReferences": deployment["metadata"]["ownerReferences"]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {
                k: v for k, v in deployment["spec"]["selector"]["matchLabels"].items() if k != REVISION}},
                "template": deployment["spec"]["template"]},
        }  # fmt: skip
        kubectl.apply(json.dumps(legacy))
        eventually(lambda: kubectl.json("get", "deploy", name)["status"].get("availableReplicas") == 2,
                   what="the legacy Deployment available")  # fmt: skip
        kubectl.run("delete", "deploy", current, "--wait=true")
        kubectl.run("patch", "ms", name, "--subresource=status", "--type=json",
                    "-p", '[{"op": "remove", "path": "/status/stable"}, {"op": "replace", "path": "/status/deployment", "value": "iris"}]')  # fmt: skip
        eventually(lambda: sum(endpoints_by_revision(kubectl, name).values()) == 2, what="legacy pods serve")
    finally:
        operator.start()
    lowest = 2
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        lowest = min(lowest, sum(endpoints_by_revision(kubectl, name).values()))
        names = [
            d["metadata"]["name"] for d in kubectl.json("get", "deploy", "-l", f"{MS_LABEL}={name}")["items"]
        ]
        if names == [current]:
            break
        time.sleep(0.5)
    assert names == [current], names
    assert lowest >= 2, f"only {lowest} ready endpoints during the adoption"
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=60s")


def _gpus_held_elsewhere(admin: Kubectl, namespace: str) -> int:
    pods = admin.json("get", "pods", "--all-namespaces")["items"]
    return sum(
        int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        for p in pods
        if p["metadata"]["namespace"] != namespace and p["spec"].get("nodeName")
        for c in p["spec"]["containers"]
    )


def fill_gpus(admin: Kubectl, kubectl: Kubectl, leave_free: int) -> int:
    """Another tenant's one-GPU pods take every GPU but ours (4) and ``leave_free``; the total of kwok's GPU
    nodes (the real node's GPUs are behind its taint, which neither these pods nor ours tolerate)."""
    nodes = admin.json("get", "nodes", "-l", "type=kwok")["items"]
    total = sum(int(n["status"]["allocatable"].get("nvidia.com/gpu", 0)) for n in nodes)
    replicas = total - 4 - leave_free
    filler = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "other-tenant"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "other-tenant"}}, "template": {
            "metadata": {"labels": {"app": "other-tenant"}},
            "spec": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "train", "image": "trainer:1",
                                     "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}},
    }  # fmt: skip
    kubectl.apply(json.dumps(filler))
    eventually(lambda: kubectl.json("get", "deploy", "other-tenant")["status"].get("availableReplicas") == replicas,
               what="the other tenant's pods bound")  # fmt: skip
    return total


def capacity_events(kubectl: Kubectl, name: str) -> list[str]:
    """The capacity decisions of ``name``'s rollouts, oldest first."""
    events = kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    ordered = sorted(events, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["creationTimestamp"]))
    return [e["message"] for e in ordered if e["reason"] == "GPUCapacity"]


def test_a_gpu_canary_waits_without_free_gpus_swaps_when_allowed_and_surges_once_a_gpu_is_free(
    cluster: Any, kubectl: Kubectl, operator: OperatorProcess
) -> None:
    admin = Kubectl(cluster)
    eventually(lambda: _gpus_held_elsewhere(admin, kubectl.namespace or "") == 0, timeout=120,
               what="GPUs of earlier tests' namespaces released")  # fmt: skip
    name = "digits"
    canary = {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}
    rollout = {"strategy": "canary", "maxSurge": 1, "maxUnavailable": 0, "canary": canary}
    kubectl.apply(example("digits-gpu", spec__replicas=4, spec__rollout=rollout))
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    # Another tenant takes every other GPU: 2 nodes x 8, 4 are ours.
    total = fill_gpus(admin, kubectl, leave_free=0)

    stable = ms(kubectl, name)["status"]["stable"]["revision"]
    kubectl.apply(example("digits-gpu", spec__replicas=4, spec__model__version="2", spec__rollout=rollout))
    canary_revision = started(kubectl, name, stable)
    body = eventually(
        lambda: (b := ms(kubectl, name)) and condition(b, "CapacityConstrained")["status"] == "True" and b,
        what="CapacityConstrained",
    )
    constrained = condition(body, "CapacityConstrained")
    assert constrained["reason"] == "InsufficientGPUCapacity"
    assert constrained["message"] == ("needs 1 nvidia.com/gpu of NVIDIA-A100-SXM4-80GB per pod, 0 free; "
                                      "allow maxUnavailable >= 1 or free a GPU")  # fmt: skip
    assert body["status"]["capacity"] == {"mode": "Wait", "freeGPUs": 0, "reason": constrained["message"]}
    time.sleep(3)
    assert kubectl.json("get", "deploy", f"{name}-{canary_revision}")["spec"]["replicas"] == 0, (
        "no pod may wait Pending"
    )

    swap = {**rollout, "maxUnavailable": 1}
    kubectl.apply(example("digits-gpu", spec__replicas=4, spec__model__version="2", spec__rollout=swap))
    done = eventually(lambda: (b := ms(kubectl, name))["status"]["stable"]["revision"] == canary_revision and b,
                      timeout=120, what="the swapped rollout completes")  # fmt: skip
    # kwok pods are ready at once: the decisions are read from their Events, not raced in the status.
    assert [d.split(":")[0] for d in capacity_events(kubectl, name)] == ["Wait", "Swap"]
    assert condition(done, "CapacityConstrained")["status"] == "False"
    assert kubectl.json("get", "deploy", "other-tenant")["status"]["availableReplicas"] == total - 4

    kubectl.run("scale", "deploy", "other-tenant", f"--replicas={total - 5}")  # one GPU frees
    kubectl.apply(example("digits-gpu", spec__replicas=4, spec__model__version="3", spec__rollout=swap))
    started(kubectl, name, canary_revision)
    eventually(lambda: any(m.startswith("Surge: ") for m in capacity_events(kubectl, name)),
               what="surge once a GPU is free")  # fmt: skip


def test_blue_green_with_two_free_gpus_for_four_replicas_previews_two_and_promotes_in_batches(
    cluster: Any, kubectl: Kubectl, operator: OperatorProcess
) -> None:
    admin = Kubectl(cluster)
    eventually(lambda: _gpus_held_elsewhere(admin, kubectl.namespace or "") == 0, timeout=120,
               what="GPUs of earlier tests' namespaces released")  # fmt: skip
    name = "digits"
    rollout = {"strategy": "blueGreen", "maxUnavailable": 1, "blueGreen": {"autoPromotionEnabled": False}}
    kubectl.apply(example("digits-gpu", spec__replicas=4, spec__rollout=rollout))
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    fill_gpus(admin, kubectl, leave_free=2)
    blue = ms(kubectl, name)["status"]["stable"]["revision"]
    kubectl.apply(example("digits-gpu", spec__replicas=4, spec__model__version="2", spec__rollout=rollout))
    green = started(kubectl, name, blue)
    eventually(lambda: dict(endpoints_by_revision(kubectl, f"{name}-preview")) == {green: 2},
               what="a preview of the 2 pods that fit")  # fmt: skip
    body = ms(kubectl, name)
    assert body["status"]["capacity"]["reason"].startswith("preview at 2 of 4 pods")
    assert dict(endpoints_by_revision(kubectl, name)) == {blue: 4}

    plugin(kubectl, "promote", name, "--full")
    done = eventually(lambda: (b := ms(kubectl, name))["status"]["stable"]["revision"] == green and b,
                      timeout=120, what="promotion completes")  # fmt: skip
    # kwok pods are ready at once, so the batches can pass between two polls: their Events stay.
    events = kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    batches = sorted(e["message"] for e in events if e["reason"] == "PromotingInBatches")
    assert batches and batches[-1].startswith(f"Revision {green}: 4/4 pods"), batches
    assert condition(done, "CapacityConstrained")["status"] == "False"
    eventually(lambda: dict(endpoints_by_revision(kubectl, name)) == {green: 4}, what="all endpoints green")
    assert kubectl.json("get", "svc", name)["spec"]["selector"][REVISION] == green


def test_an_analysis_that_cannot_read_the_canarys_metrics_rolls_back_and_says_why(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    """kwok pods serve no /metrics: the real API server's pod proxy fails, each scrape is an Error
    measurement, and past consecutiveErrorLimit the canary is rolled back with the reason."""
    name = "iris-canary"
    analysed = {"steps": [{"setWeight": 25}, {"analysis": {}}]}
    analysis = {"interval": "2s", "consecutiveErrorLimit": 1}
    kubectl.apply(example(name, spec__rollout__canary=analysed, spec__rollout__analysis=analysis))
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    stable = ms(kubectl, name)["status"]["stable"]["revision"]
    kubectl.apply(example(name, spec__model__version="2", spec__rollout__canary=analysed,
                           spec__rollout__analysis=analysis))  # fmt: skip
    started(kubectl, name, stable)
    body = eventually(
        lambda: (b := ms(kubectl, name)) and condition(b, "Degraded")["reason"] == "AnalysisFailed" and b,
        timeout=90, what="an automatic rollback",
    )  # fmt: skip
    message = condition(body, "Degraded")["message"]
    assert message.startswith("Analysis at step 2 error: could not scrape /metrics of the canary pods")
    eventually(lambda: counts_match(kubectl, name, {stable: 4}), what="all traffic back on stable")
    events = kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    assert sum(e["reason"] == "AnalysisError" for e in events) >= 1


def test_the_hpa_scaling_a_paused_canary_keeps_its_share(kubectl: Kubectl, operator: OperatorProcess) -> None:
    """A real HPA decision (kwok reports the pods' CPU through metrics-server) during a canary at 50%."""
    name = "iris-autoscaled"
    canary = {"strategy": "canary", "maxSurge": 1, "maxUnavailable": 0,
              "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}  # fmt: skip
    kubectl.apply(example("iris-autoscaling", spec__rollout=canary))
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", "--timeout=120s")
    stable = ms(kubectl, name)["status"]["stable"]["revision"]
    kubectl.apply(example("iris-autoscaling", spec__rollout=canary, spec__model__version="2"))
    revision = started(kubectl, name, stable)
    at_step(kubectl, name, 1)
    eventually(
        lambda: dict(ready_pods_by_revision(kubectl, name)) == {stable: 1, revision: 1}, what="50% of 2"
    )

    def scaled_up() -> bool:
        for pod in kubectl.json("get", "pods", "-l", f"{MS_LABEL}={name}")["items"]:
            kubectl.run(
                "annotate", "--overwrite", "pod", pod["metadata"]["name"], "kwok.x-k8s.io/usage-cpu=1800m"
            )
        return int(ms(kubectl, name)["spec"]["replicas"]) >= 4

    eventually(scaled_up, timeout=180, interval=3, what="the HPA to scale the ModelService up")

    def share_held() -> bool:
        replicas = int(ms(kubectl, name)["spec"]["replicas"])
        canary_pods, stable_pods = approximate_counts(replicas, 50, 1)  # the planner's (unit-tested) maths
        return dict(ready_pods_by_revision(kubectl, name)) == {stable: stable_pods, revision: canary_pods}

    eventually(share_held, timeout=90, what="50% of the HPA's replicas on each revision")
    assert int(ms(kubectl, name)["spec"]["replicas"]) >= 4
    assert ms(kubectl, name)["status"]["rollout"]["step"] == 1, "the pause holds while the HPA scales"
