"""The runtime Deployment: GPU scheduling, probes, a restricted security context, model storage."""

from __future__ import annotations

import copy
from typing import Any

from ..api import GPU_PRODUCT_LABEL, ModelServiceSpec
from ..naming import (
    REVISION_LABEL,
    STORAGE_INITIALIZER,
    child_name,
    common_labels,
    revision_of,
    selector_labels,
)
from .common import GRPC_PORT, RUNTIME_PORT, metadata
from .identity import runtime_account
from .probes import render_probes

MODEL_MOUNT = "/mnt/models"
DOWNLOADED_MODEL = f"{MODEL_MOUNT}/model"  # where the storage initializer leaves s3:// and http(s):// models
RUNTIME_UID = 10001
API_KEYS_MOUNT = "/etc/modelservice/api-keys"
TLS_MOUNT = "/etc/modelservice/tls"
# The storage initializer streams to disk: a small request, and no CPU limit to slow a large download.
DOWNLOADER_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def model_base_path(spec: ModelServiceSpec) -> str:
    storage = spec.model.storage
    if storage.scheme == "pvc":
        return f"{MODEL_MOUNT}/{storage.path}".rstrip("/")
    if storage.downloaded:
        return DOWNLOADED_MODEL
    return storage.path


def _secret_env(secret: str, name: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _storage_initializer(spec: ModelServiceSpec, image: str, pull_policy: str) -> dict[str, Any]:
    """KServe's storage-initializer pattern: the runtime image downloads the model into the pod's model
    volume before the runtime starts; its one-line failure reason is the termination message the status
    shows. Credentials come from the Secret the spec names (keys as AWS and KServe name them)."""
    storage = spec.model.storage
    env: list[dict[str, Any]] = []
    if storage.scheme == "s3":
        if storage.endpoint:
            env.append({"name": "AWS_ENDPOINT_URL", "value": storage.endpoint})
        if storage.region:
            env.append({"name": "AWS_DEFAULT_REGION", "value": storage.region})
        if storage.secret_name:
            env += [
                _secret_env(storage.secret_name, "AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
                _secret_env(storage.secret_name, "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
                _secret_env(storage.secret_name, "AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN", optional=True),
            ]
    elif storage.secret_name:
        env.append(_secret_env(storage.secret_name, "MODELSERVICE_HTTP_AUTHORIZATION", "Authorization"))
    container: dict[str, Any] = {
        "name": STORAGE_INITIALIZER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["modelservice-storage-initializer"],
        "args": [storage.uri, DOWNLOADED_MODEL],
        "resources": copy.deepcopy(DOWNLOADER_RESOURCES),
        "securityContext": copy.deepcopy(SECURITY_CONTEXT),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "model-store", "mountPath": MODEL_MOUNT},
            {"name": "scratch", "mountPath": "/tmp"},
        ],
    }
    if env:
        container["env"] = env
    return container


def _resources(spec: ModelServiceSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {key: dict(values) for key, values in spec.resources.items()}
    if spec.gpu:
        # Extended resources are limits (requests default to them); an explicit value already agreed.
        resources.setdefault("limits", {})[spec.gpu.resource_name] = spec.gpu.count
    return resources


def _scheduling(spec: ModelServiceSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {}
    node_selector: dict[str, str] = {}
    tolerations = [dict(t) for t in spec.scheduling.tolerations]
    if spec.gpu:
        if spec.gpu.product:
            node_selector[GPU_PRODUCT_LABEL] = spec.gpu.product
        if not any(t.get("key") == spec.gpu.resource_name for t in tolerations):
            tolerations.append({"key": spec.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"})
    node_selector.update(spec.scheduling.node_selector)  # plain pod fields win over the gpu sugar
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    if spec.scheduling.affinity:
        pod["affinity"] = copy.deepcopy(dict(spec.scheduling.affinity))
    if spec.scheduling.topology_spread_constraints:
        pod["topologySpreadConstraints"] = [dict(c) for c in spec.scheduling.topology_spread_constraints]
    if spec.scheduling.runtime_class_name:
        pod["runtimeClassName"] = spec.scheduling.runtime_class_name
    if spec.scheduling.priority_class_name:
        pod["priorityClassName"] = spec.scheduling.priority_class_name
    return pod


def _container(spec: ModelServiceSpec, image: str, pull_policy: str) -> dict[str, Any]:
    args = [
        f"--model_name={spec.model.name}",
        f"--model_base_path={model_base_path(spec)}",
        f"--model_version_policy={spec.model.policy.runtime_flag()}",
        f"--rest_api_port={RUNTIME_PORT}",
        f"--threads={spec.runtime.threads}",
        f"--port={GRPC_PORT if spec.runtime.grpc else 0}",
    ]
    if spec.runtime.workers is not None:
        args.append(f"--workers={spec.runtime.workers}")
    if spec.runtime.batching is not None:
        args.extend(spec.runtime.batching.runtime_flags())
    if spec.runtime.api_keys_secret:
        args.append(f"--api_keys_dir={API_KEYS_MOUNT}")
    if spec.runtime.tls_secret:
        args += [f"--tls_cert_file={TLS_MOUNT}/tls.crt", f"--tls_key_file={TLS_MOUNT}/tls.key"]
    if spec.runtime.kubernetes_auth:
        args.append(f"--kubernetes_auth={spec.namespace}/{spec.name}")
    if spec.runtime.rate_limit is not None:
        args.extend(spec.runtime.rate_limit.runtime_flags())
    if spec.runtime.cache is not None:
        args.extend(spec.runtime.cache.runtime_flags())
    if spec.runtime.intra_op_parallelism is not None:
        args.append(f"--tensorflow_intra_op_parallelism={spec.runtime.intra_op_parallelism}")
    if spec.runtime.inter_op_parallelism is not None:
        args.append(f"--tensorflow_inter_op_parallelism={spec.runtime.inter_op_parallelism}")
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": "/tmp"}]
    if spec.model.storage.scheme == "pvc" or spec.model.storage.downloaded:
        mounts.append({"name": "model-store", "mountPath": MODEL_MOUNT, "readOnly": True})
    if spec.runtime.api_keys_secret:
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_MOUNT, "readOnly": True})
    if spec.runtime.tls_secret:
        mounts.append({"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": "runtime",
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": args,
        "ports": [{"name": "http", "containerPort": RUNTIME_PORT, "protocol": "TCP"}]
        + ([{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}] if spec.runtime.grpc else []),
        **render_probes(spec),
        "securityContext": copy.deepcopy(SECURITY_CONTEXT),
        "volumeMounts": mounts,
    }
    # The runtime sizes its HTTP workers by the cores the pod may use: the cgroup limit, and this (the CPU
    # request rounded up to whole cores), so that a pod without a limit does not fork one per node core.
    env: list[dict[str, Any]] = [
        {
            "name": "MODELSERVICE_CPU_REQUEST",
            "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1"}},
        }
    ]
    env.extend(dict(e) for e in spec.runtime.env)
    container["env"] = env
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    return container


def render_pod_template(spec: ModelServiceSpec, image: str, pull_policy: str) -> dict[str, Any]:
    """The pod template; its hash is the revision, added as a label afterwards."""
    volumes: list[dict[str, Any]] = [{"name": "scratch", "emptyDir": {}}]
    if spec.model.storage.scheme == "pvc":
        volumes.append(
            {
                "name": "model-store",
                "persistentVolumeClaim": {"claimName": spec.model.storage.claim, "readOnly": True},
            }
        )
    elif spec.model.storage.downloaded:
        volumes.append({"name": "model-store", "emptyDir": {}})
    if spec.runtime.tls_secret:  # cert-manager renews it in place; the runtime reloads it
        volumes.append(
            {"name": "tls", "secret": {"secretName": spec.runtime.tls_secret, "defaultMode": 0o440}}
        )
    if spec.runtime.api_keys_secret:
        # A Secret volume, not env: the kubelet updates it in place, and the runtime re-reads the keys.
        volumes.append(
            {"name": "api-keys", "secret": {"secretName": spec.runtime.api_keys_secret, "defaultMode": 0o440}}
        )
    template: dict[str, Any] = {
        "metadata": {
            "labels": common_labels(spec.name),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(RUNTIME_PORT),
                "prometheus.io/path": "/metrics",
                **({"prometheus.io/scheme": "https"} if spec.runtime.tls_secret else {}),
            },
        },
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUNTIME_UID,
                "runAsGroup": RUNTIME_UID,
                "fsGroup": RUNTIME_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            # The runtime needs its token only to review its clients' (spec.runtime.auth.kubernetes).
            **(
                {"serviceAccountName": runtime_account(spec), "automountServiceAccountToken": True}
                if spec.runtime.kubernetes_auth
                else {"automountServiceAccountToken": False}
            ),
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 45,
            **(
                {"initContainers": [_storage_initializer(spec, image, pull_policy)]}
                if spec.model.storage.downloaded
                else {}
            ),
            "containers": [_container(spec, image, pull_policy)],
            "volumes": volumes,
            **_scheduling(spec),
        },
    }
    return template


def render_deployment(
    spec: ModelServiceSpec, default_image: str, pull_policy: str = "IfNotPresent", replicas: int | None = None
) -> dict[str, Any]:
    """The Deployment of the revision the spec renders: ``<name>-<revision>``, selecting only its pods.

    Each revision keeps its own Deployment for its whole life, so a canary, a preview and a rollback are
    replica counts and Service selectors, never a restart. ``replicas`` comes from the rollout plan.
    """
    image = spec.runtime.image or default_image
    template = render_pod_template(spec, image, pull_policy)
    revision = revision_of(template)
    template["metadata"]["labels"][REVISION_LABEL] = revision
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(spec, child_name(spec.name, revision), {REVISION_LABEL: revision}),
        "spec": {
            "replicas": spec.replicas if replicas is None else replicas,
            "selector": {"matchLabels": {**selector_labels(spec.name), REVISION_LABEL: revision}},
            "revisionHistoryLimit": 3,
            # A rollout that has not made progress within the model-load budget is reported as failed.
            "progressDeadlineSeconds": spec.startup_timeout_seconds + 60,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": spec.rollout.max_surge,
                    "maxUnavailable": spec.rollout.max_unavailable,
                },
            },
            "template": template,
        },
    }
