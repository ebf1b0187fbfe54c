"""Renderers against golden files and against the Kubernetes 1.34 OpenAPI schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelservice_operator.api import parse_spec
from modelservice_operator.render import RenderOptions, render_children

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).parent / "golden"
CRD = yaml.safe_load((ROOT / "crds" / "modelservice.yaml").read_text())
K8S_VERSION = "1.34"


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    doc["metadata"].setdefault("namespace", "default")
    doc["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    return doc


def test_every_example_is_covered() -> None:
    assert {p.stem for p in EXAMPLES} >= {"iris-cpu", "digits-gpu", "iris-autoscaling"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_children_match_golden_files(example: Path, update_golden: bool) -> None:
    rendered = yaml.safe_dump_all(
        render_children(parse_spec(load(example)), RenderOptions()), sort_keys=False
    )
    golden = GOLDEN / f"{example.stem}.yaml"
    if update_golden:
        golden.write_text(rendered)
    assert golden.exists(), f"missing {golden}: run pytest --update-golden"
    assert rendered == golden.read_text(), (
        f"{golden} differs: review the change, then run pytest --update-golden"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_children_are_valid_kubernetes_objects(example: Path) -> None:
    for child in render_children(parse_spec(load(example)), RenderOptions()):
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_the_crd_is_a_valid_apiextensions_object() -> None:
    kubernetes_validate.validate(CRD, K8S_VERSION, strict=True)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_satisfy_the_crd_schema(example: Path) -> None:
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(yaml.safe_load(example.read_text()), schema)


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if schema.get("description") or path.endswith("metadata") else [path]
    for name, child in (schema.get("properties") or {}).items():
        missing += _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict) and schema["items"].get("properties"):
        missing += _walk(schema["items"], f"{path}[]")
    return missing


def test_every_crd_field_has_a_description_for_kubectl_explain() -> None:
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema, "modelservice") == []


def test_children_get_a_controller_owner_reference() -> None:
    for child in render_children(parse_spec(load(EXAMPLES[0])), RenderOptions()):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["kind"] == "ModelService" and owner["controller"] is True


def test_gpu_sugar_sets_limit_node_selector_and_toleration() -> None:
    spec = parse_spec(load(ROOT / "examples" / "digits-gpu.yaml"))
    pod = render_children(spec)[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_plain_scheduling_fields_win_over_the_gpu_sugar() -> None:
    body = load(ROOT / "examples" / "digits-gpu.yaml")
    body["spec"]["scheduling"] = {
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "shared", "effect": "NoSchedule"}
        ],
        "runtimeClassName": "nvidia",
    }
    pod = render_children(parse_spec(body))[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert pod["tolerations"] == body["spec"]["scheduling"]["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"


def test_security_context_is_restricted() -> None:
    pod = render_children(parse_spec(load(EXAMPLES[0])))[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert container == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "scratch", "emptyDir": {}} in pod["volumes"]


def test_http_workers_follow_the_pods_cpu_unless_set() -> None:
    doc = load(EXAMPLES[0])
    container = render_children(parse_spec(doc))[0]["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--workers=") for a in container["args"])  # the runtime sizes them
    assert container["env"][0] == {
        "name": "MODELSERVICE_CPU_REQUEST",
        "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1"}},
    }
    doc["spec"].setdefault("runtime", {})["workers"] = 3
    container = render_children(parse_spec(doc))[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--workers=3" in container["args"]


def test_tensorflow_threads_are_the_runtimes_defaults_unless_set() -> None:
    doc = load(EXAMPLES[0])
    container = render_children(parse_spec(doc))[0]["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--tensorflow_") for a in container["args"])
    doc["spec"].setdefault("runtime", {})["tensorflow"] = {"intraOpParallelism": 1, "interOpParallelism": 0}
    container = render_children(parse_spec(doc))[0]["spec"]["template"]["spec"]["containers"][0]
    flags = [a for a in container["args"] if a.startswith("--tensorflow_")]
    assert flags == ["--tensorflow_intra_op_parallelism=1"]  # inter-op 0: the runtime's default
    doc["spec"]["runtime"]["tensorflow"] = {"interOpParallelism": -1}
    container = render_children(parse_spec(doc))[0]["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in container["args"] if a.startswith("--tensorflow_")] == [
        "--tensorflow_inter_op_parallelism=-1"
    ]


def test_grpc_is_off_on_pods_and_services_unless_enabled() -> None:
    doc = load(EXAMPLES[0])
    doc["spec"].setdefault("runtime", {})["grpc"] = {"enabled": False}
    children = render_children(parse_spec(doc))
    container = children[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--port=0" in container["args"] and [p["name"] for p in container["ports"]] == ["http"]
    service = next(c for c in children if c["kind"] == "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    doc["spec"]["runtime"]["grpc"] = {"enabled": True}
    children = render_children(parse_spec(doc))
    container = children[0]["spec"]["template"]["spec"]["containers"][0]
    assert (
        "--port=8500" in container["args"]
        and {"name": "grpc", "containerPort": 8500, "protocol": "TCP"} in container["ports"]
    )
    service = next(c for c in children if c["kind"] == "Service")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8501), ("grpc", 8500)]


def test_revision_changes_with_the_pod_template_only() -> None:
    body = load(ROOT / "examples" / "iris-cpu.yaml")
    first = render_children(parse_spec(body))[0]
    body["spec"]["replicas"] = 5
    scaled = render_children(parse_spec(body))[0]
    body["spec"]["model"]["versionPolicy"] = {"latest": 2}
    changed = render_children(parse_spec(body))[0]
    label = "serving.modelservice.io/revision"
    assert first["metadata"]["labels"][label] == scaled["metadata"]["labels"][label]
    assert first["metadata"]["labels"][label] != changed["metadata"]["labels"][label]
    # Each revision has its own Deployment, selecting only its own pods.
    assert first["metadata"]["name"] == f"iris-{first['metadata']['labels'][label]}"
    assert first["spec"]["selector"]["matchLabels"][label] == first["metadata"]["labels"][label]


def test_hpa_targets_the_modelservice_scale_subresource_and_pdb_needs_two_replicas() -> None:
    children = {
        c["kind"]: c for c in render_children(parse_spec(load(ROOT / "examples" / "iris-autoscaling.yaml")))
    }
    assert children["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {
        "apiVersion": "serving.modelservice.io/v1alpha1", "kind": "ModelService", "name": "iris-autoscaled"}  # fmt: skip
    assert "PodDisruptionBudget" in children
    single = {c["kind"] for c in render_children(parse_spec(load(ROOT / "examples" / "digits-gpu.yaml")))}
    assert single == {"Deployment", "Service"}


def test_long_names_are_cut_to_valid_dns_labels_with_a_hash() -> None:
    body = load(ROOT / "examples" / "iris-cpu.yaml")
    body["metadata"]["name"] = "a" * 100
    for child in render_children(parse_spec(body)):
        assert len(child["metadata"]["name"]) <= 63
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def _with_storage(uri: str, storage: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = load(EXAMPLES[0])
    doc["spec"]["model"] = {"name": "iris", "storageUri": uri, **({"storage": storage} if storage else {})}
    return doc


def test_an_s3_model_is_downloaded_by_an_init_container_into_an_empty_dir() -> None:
    doc = _with_storage(
        "s3://models/iris",
        {"secretRef": {"name": "s3-creds"}, "endpoint": "http://minio.storage:9000", "region": "eu-west-1"},
    )
    children = render_children(parse_spec(doc))
    pod = children[0]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == "storage-initializer" and init["image"] == pod["containers"][0]["image"]
    assert init["command"] == ["modelservice-storage-initializer"]
    assert init["args"] == ["s3://models/iris", "/mnt/models/model"]
    assert init["env"] == [
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"},
        {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "AWS_SESSION_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SESSION_TOKEN", "optional": True}}},
    ]  # fmt: skip
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert init["securityContext"] == pod["containers"][0]["securityContext"]
    assert {"name": "model-store", "emptyDir": {}} in pod["volumes"]
    assert {"name": "model-store", "mountPath": "/mnt/models"} in init["volumeMounts"]
    runtime = pod["containers"][0]
    assert {"name": "model-store", "mountPath": "/mnt/models", "readOnly": True} in runtime["volumeMounts"]
    assert "--model_base_path=/mnt/models/model" in runtime["args"]
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_an_http_archive_takes_its_authorization_header_from_the_secret() -> None:
    doc = _with_storage("https://models.example/iris.tar.gz", {"secretRef": {"name": "web-token"}})
    init = render_children(parse_spec(doc))[0]["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"] == ["https://models.example/iris.tar.gz", "/mnt/models/model"]
    assert init["env"] == [
        {"name": "MODELSERVICE_HTTP_AUTHORIZATION",
         "valueFrom": {"secretKeyRef": {"name": "web-token", "key": "Authorization"}}},
    ]  # fmt: skip
    anonymous = render_children(parse_spec(_with_storage("http://h/m.zip")))[0]["spec"]["template"]["spec"]
    assert "env" not in anonymous["initContainers"][0]


def test_pvc_and_file_models_have_no_init_container() -> None:
    for doc in (load(EXAMPLES[0]), _with_storage("file:///models/iris")):
        pod = render_children(parse_spec(doc))[0]["spec"]["template"]["spec"]
        assert "initContainers" not in pod


def test_api_keys_rate_limits_and_the_cache_become_runtime_flags_and_a_secret_volume() -> None:
    doc = load(EXAMPLES[0])
    doc["spec"].setdefault("runtime", {}).update({
        "auth": {"apiKeys": {"secretRef": {"name": "iris-keys"}}},
        "rateLimit": {"requestsPerSecond": 2.5, "burst": 10},
        "cache": {"maxBytes": 67108864, "ttlSeconds": 300},
    })  # fmt: skip
    children = render_children(parse_spec(doc))
    pod = children[0]["spec"]["template"]["spec"]
    runtime = pod["containers"][0]
    assert [a for a in runtime["args"] if a.startswith(("--api_keys", "--rate_limit", "--response_cache"))] == [
        "--api_keys_dir=/etc/modelservice/api-keys", "--rate_limit_requests_per_second=2.5",
        "--rate_limit_burst=10", "--response_cache_bytes=67108864", "--response_cache_ttl_seconds=300",
    ]  # fmt: skip
    assert {"name": "api-keys", "mountPath": "/etc/modelservice/api-keys", "readOnly": True} in runtime[
        "volumeMounts"
    ]
    assert {"name": "api-keys", "secret": {"secretName": "iris-keys", "defaultMode": 0o440}} in pod["volumes"]
    # Probes need no key: they stay on the open health paths.
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_tls_mounts_the_secret_and_probes_over_https() -> None:
    doc = load(EXAMPLES[0])
    doc["spec"].setdefault("runtime", {})["tls"] = {"secretRef": {"name": "iris-tls"}}
    children = render_children(parse_spec(doc))
    template = children[0]["spec"]["template"]
    runtime = template["spec"]["containers"][0]
    assert "--tls_cert_file=/etc/modelservice/tls/tls.crt" in runtime["args"]
    assert "--tls_key_file=/etc/modelservice/tls/tls.key" in runtime["args"]
    assert {"name": "tls", "secret": {"secretName": "iris-tls", "defaultMode": 0o440}} in template["spec"][
        "volumes"
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert runtime[probe]["httpGet"]["scheme"] == "HTTPS"
    assert template["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
