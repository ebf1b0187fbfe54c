"""The operator and kubectl against the real local control plane (etcd, apiserver, controllers,
scheduler, kwok GPU nodes, metrics-server)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness
from tests.e2e.conftest import (
    ROOT,
    Kubectl,
    OperatorProcess,
    condition,
    eventually,
    example,
    stable_deployment,
)

pytestmark = pytest.mark.e2e
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MS_LABEL = "serving.modelservice.io/name"


def ready(kubectl: Kubectl, name: str, timeout: float = 120) -> dict[str, Any]:
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", f"--timeout={int(timeout)}s")
    ms: dict[str, Any] = kubectl.json("get", "ms", name)
    return ms


def pods_of(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", "pods", "-l", f"{MS_LABEL}={name}")["items"]
    return items


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_becomes_ready_on_the_right_nodes(
    path: Path, kubectl: Kubectl, operator: OperatorProcess
) -> None:
    kubectl.apply(path)
    doc = yaml.safe_load(path.read_text())
    name, spec = doc["metadata"]["name"], doc["spec"]
    ms = ready(kubectl, name)
    assert condition(ms, "Ready")["reason"] == "Available"
    pods = pods_of(kubectl, name)
    assert len(pods) == spec.get("replicas", 1)
    for pod in pods:
        container = pod["spec"]["containers"][0]
        if "gpu" in spec:
            assert pod["spec"]["nodeName"] in harness.GPU_NODES
            assert container["resources"]["limits"]["nvidia.com/gpu"] == str(spec["gpu"]["count"])
        else:
            assert pod["spec"]["nodeName"] in harness.CPU_NODES
    slices = kubectl.json("get", "endpointslices", "-l", f"kubernetes.io/service-name={name}")["items"]
    ready_endpoints = [e for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")]
    assert len(ready_endpoints) == len(pods)
    kinds = {"hpa": "autoscaling" in spec, "pdb": spec.get("replicas", 1) > 1}
    for kind, expected in kinds.items():
        found = kubectl.run("get", kind, name, check=False).returncode == 0
        assert found == expected, f"{kind} {'missing' if expected else 'unexpected'}"


def test_kubectl_scale_works_through_the_scale_subresource(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    kubectl.apply(ROOT / "examples" / "iris-cpu.yaml")
    ready(kubectl, "iris")
    kubectl.run("scale", "ms/iris", "--replicas=3")
    eventually(lambda: stable_deployment(kubectl, "iris")["spec"]["replicas"] == 3, what="Deployment at 3")
    eventually(
        lambda: kubectl.json("get", "ms", "iris")["status"]["readyReplicas"] == 3, what="3 ready replicas"
    )
    path = f"/apis/serving.modelservice.io/v1alpha1/namespaces/{kubectl.namespace}/modelservices/iris/scale"
    scale = json.loads(kubectl.run("get", "--raw", path).stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert "serving.modelservice.io/name=iris" in scale["status"]["selector"]


def test_hpa_scales_up_on_high_pod_cpu_and_back_down(kubectl: Kubectl, operator: OperatorProcess) -> None:
    # The example's 120 s scale-down stabilization, shortened: the HPA's own window is not under test.
    kubectl.apply(
        example(
            "iris-autoscaling", spec__autoscaling__behavior={"scaleDown": {"stabilizationWindowSeconds": 5}}
        )
    )
    ready(kubectl, "iris-autoscaled")

    def set_cpu(usage: str) -> None:
        for pod in pods_of(kubectl, "iris-autoscaled"):
            kubectl.run(
                "annotate", "--overwrite", "pod", pod["metadata"]["name"], f"kwok.x-k8s.io/usage-cpu={usage}"
            )

    def scaled_up() -> bool:
        set_cpu("1800m")  # 180% of the 1-CPU request, target 70%: the HPA wants more pods
        return int(kubectl.json("get", "ms", "iris-autoscaled")["spec"]["replicas"]) > 2

    eventually(scaled_up, timeout=180, interval=3, what="the HPA to scale the ModelService up")
    eventually(
        lambda: stable_deployment(kubectl, "iris-autoscaled")["spec"]["replicas"] > 2,
        what="Deployment follows",
    )

    def scaled_down() -> bool:
        set_cpu("10m")
        return int(kubectl.json("get", "ms", "iris-autoscaled")["spec"]["replicas"]) == 2

    eventually(scaled_down, timeout=240, interval=3, what="the HPA to scale back down to minReplicas")
    eventually(
        lambda: stable_deployment(kubectl, "iris-autoscaled")["spec"]["replicas"] == 2,
        what="Deployment follows",
    )


def test_changing_model_version_or_image_rolls_out_a_new_revision(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    kubectl.apply(ROOT / "examples" / "digits-gpu.yaml")
    first = ready(kubectl, "digits")["status"]["revision"]
    kubectl.apply(example("digits-gpu", spec__model__version="2"))
    second = eventually(
        lambda: (
            (ms := kubectl.json("get", "ms", "digits"))["status"].get("revision") != first
            and condition(ms, "Ready")["status"] == "True"
            and ms["status"]["revision"]
        ),
        what="version 2 rolled out",
    )
    args = stable_deployment(kubectl, "digits")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model_version_policy=specific:2" in args
    kubectl.apply(
        example("digits-gpu", spec__model__version="2", spec__runtime__image="modelservice/runtime:next")
    )
    third = eventually(
        lambda: (
            (ms := kubectl.json("get", "ms", "digits"))["status"].get("revision") not in (first, second)
            and condition(ms, "Ready")["status"] == "True"
            and ms["status"]["revision"]
        ),
        what="new image rolled out",
    )
    revisions = {
        p["metadata"]["labels"]["serving.modelservice.io/revision"] for p in pods_of(kubectl, "digits")
    }
    eventually(lambda: {p["metadata"]["labels"]["serving.modelservice.io/revision"]
                        for p in pods_of(kubectl, "digits")} == {third}, what="only new pods left")  # fmt: skip
    assert revisions


INVALID = [
    ("autoscaling-bounds", {"spec__autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas"),
    ("storage-scheme", {"spec__model__storageUri": "ftp://models/iris"}, "spec.model.storageUri"),
    ("gpu-vs-limits", {"spec__gpu": {"count": 2}, "spec__resources": {"limits": {"nvidia.com/gpu": 1}}}, "spec.gpu.count"),
    ("replicas-outside-autoscaling", {"spec__replicas": 9, "spec__autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, "spec.replicas"),
    ("version-and-policy", {"spec__model__version": "2", "spec__model__versionPolicy": {"latest": 2}}, "spec.model.version"),
    ("bad-strategy", {"spec__rollout": {"strategy": "yolo"}}, "spec.rollout.strategy"),
    ("batch-sizes-end", {"spec__runtime": {"batching": {"maxBatchSize": 16, "allowedBatchSizes": [4, 8]}}},
     "spec.runtime.batching.allowedBatchSizes"),
    ("batch-sizes-order", {"spec__runtime": {"batching": {"maxBatchSize": 8, "allowedBatchSizes": [4, 2, 8]}}},
     "spec.runtime.batching.allowedBatchSizes"),
    ("batch-size-zero", {"spec__runtime": {"batching": {"maxBatchSize": 0}}}, "spec.runtime.batching.maxBatchSize"),
    ("intra-op-zero", {"spec__runtime": {"tensorflow": {"intraOpParallelism": 0}}},
     "spec.runtime.tensorflow.intraOpParallelism"),
    ("cpu-lots", {"spec__resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests"),
    ("memory-2GB", {"spec__resources": {"limits": {"memory": "2GB"}}}, "spec.resources.limits"),
    ("gpu-resource-name", {"spec__gpu": {"count": 1, "resourceName": "not a resource!"}}, "spec.gpu.resourceName"),
    ("toleration-operator", {"spec__scheduling": {"tolerations": [{"key": "k", "operator": "Sometimes"}]}},
     "spec.scheduling.tolerations[0].operator"),
    ("max-surge-lots", {"spec__rollout": {"maxSurge": "lots"}}, "spec.rollout.maxSurge"),
    ("surge-and-unavailable-zero", {"spec__rollout": {"maxSurge": 0, "maxUnavailable": 0}},
     "spec.rollout.maxSurge and spec.rollout.maxUnavailable cannot both be 0"),
    ("hpa-metric-type", {"spec__autoscaling": {"maxReplicas": 3, "metrics": [{"type": "Magic"}]}},
     "spec.autoscaling.metrics[0].type"),
    ("canary-steps-with-blue-green", {"spec__rollout": {"strategy": "blueGreen", "canary": {"steps": [{"setWeight": 5}]}}},
     "spec.rollout.canary is only used with strategy canary"),
    ("two-fields-in-one-step", {"spec__rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 5, "pause": {}}]}}},
     "spec.rollout.canary.steps[0]"),
    ("pause-duration", {"spec__rollout": {"strategy": "canary", "canary": {"steps": [{"pause": {"duration": "soon"}}]}}},
     "spec.rollout.canary.steps[0].pause.duration"),
    ("canary-scale-without-router", {"spec__rollout": {"strategy": "canary", "canary": {"steps": [
        {"setCanaryScale": {"replicas": 1}}]}}}, "needs spec.rollout.canary.trafficRouting"),
    ("prometheus-without-address", {"spec__rollout": {"analysis": {"provider": "prometheus"}}},
     "spec.rollout.analysis.prometheus.address is required"),
    ("success-rate-above-one", {"spec__rollout": {"analysis": {"successRate": {"min": "1.5"}}}},
     "spec.rollout.analysis.successRate.min"),
    ("capacity-policy", {"spec__rollout": {"capacityPolicy": "Always"}}, "spec.rollout.capacityPolicy"),
    ("storage-on-a-pvc", {"spec__model__storage": {"secretRef": {"name": "s3-creds"}}},
     "spec.model.storage applies to s3:// and http(s):// sources only"),
    ("endpoint-on-http", {"spec__model__storageUri": "https://h/m.tar.gz", "spec__model__storage": {"region": "eu"}},
     "spec.model.storage.endpoint and region apply to s3:// sources only"),
    ("s3-without-bucket", {"spec__model__storageUri": "s3:///iris"}, "s3:// must name a bucket"),
    ("empty-auth", {"spec__runtime": {"auth": {}}}, "spec.runtime.auth needs apiKeys or kubernetes.enabled"),
    ("rate-limit-zero", {"spec__runtime": {"rateLimit": {"requestsPerSecond": 0}}},
     "spec.runtime.rateLimit.requestsPerSecond"),
    ("cache-too-small", {"spec__runtime": {"cache": {"maxBytes": 10}}}, "spec.runtime.cache.maxBytes"),
    ("endpoint-not-a-url", {"spec__model__storageUri": "s3://b/m", "spec__model__storage": {"endpoint": "minio:9000"}},
     "spec.model.storage.endpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "changes", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_specs_are_rejected_by_the_api_server_naming_the_field(
    kubectl: Kubectl, case: str, changes: dict[str, Any], field: str
) -> None:
    result = kubectl.run("apply", "-f", "-", input_text=example("iris-cpu", **changes), check=False)
    assert result.returncode != 0, f"{case} was accepted"
    assert field in result.stderr, result.stderr


def test_unsatisfiable_gpu_request_reports_the_schedulers_message(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    kubectl.apply(example("digits-gpu", spec__gpu={"count": 16}))
    ms = eventually(
        lambda: (
            (m := kubectl.json("get", "ms", "digits"))
            and condition(m, "Ready")["reason"] == "Unschedulable"
            and "nvidia.com/gpu" in condition(m, "Ready")["message"]
            and m
        ),
        what="Ready=False/Unschedulable",
    )
    message = condition(ms, "Ready")["message"]
    assert condition(ms, "Ready")["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in message and "nodes are available" in message


def test_deleting_a_modelservice_garbage_collects_every_child(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    # The example's 120 s scale-down stabilization, shortened: the HPA's own window is not under test.
    kubectl.apply(
        example(
            "iris-autoscaling", spec__autoscaling__behavior={"scaleDown": {"stabilizationWindowSeconds": 5}}
        )
    )
    ready(kubectl, "iris-autoscaled")
    kubectl.run("delete", "ms", "iris-autoscaled", "--wait=true", "--timeout=60s")

    def children() -> list[str]:
        out = kubectl.run(
            "get", "deploy,rs,pods,svc,hpa,pdb", "-l", f"{MS_LABEL}=iris-autoscaled", "-o", "name"
        ).stdout
        return out.split()

    eventually(lambda: children() == [], timeout=90, what="garbage collection of every child")


def _operator_writes(namespace: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in harness.audit_entries()
        if entry.get("user", {}).get("username") == "modelservice-operator"
        and entry.get("objectRef", {}).get("namespace") == namespace
        and entry.get("verb") in ("create", "update", "patch", "delete")
    ]


def test_steady_state_makes_no_writes_for_a_minute_even_with_non_canonical_quantities(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    # The server stores these as 500m, 2Gi and 1: compared as strings they meant a write every resync.
    resources = {"requests": {"cpu": "0.5", "memory": "2048Mi"}, "limits": {"cpu": "1000m", "memory": "2Gi"}}
    kubectl.apply(example("iris-autoscaling", spec__resources=resources))
    ready(kubectl, "iris-autoscaled")
    time.sleep(10)  # let the last status refresh and events land
    before = len(_operator_writes(kubectl.namespace or ""))
    time.sleep(60)  # three passes of the safety-net resync, and every watch event of the children
    after = _operator_writes(kubectl.namespace or "")
    extra = [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}: "
        f"{json.dumps(e.get('requestObject'))[:1500]}"
        for e in after[before:]
    ]
    assert extra == [], f"the operator wrote in steady state: {extra}"
