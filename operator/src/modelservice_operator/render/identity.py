"""The runtime's own identity when it authenticates clients with Kubernetes: a ServiceAccount per
ModelService, and a ClusterRoleBinding of it to ``system:auth-delegator`` (TokenReview and
SubjectAccessReview, the rights kube-rbac-proxy needs) that the operator creates and deletes itself:
a cluster-scoped object cannot be owned by a namespaced one."""

from __future__ import annotations

from typing import Any

from ..api import ModelServiceSpec
from ..naming import child_name, common_labels
from .common import metadata

AUTH_DELEGATOR = "system:auth-delegator"
NAMESPACE_LABEL = "serving.modelservice.io/namespace"


def runtime_account(spec: ModelServiceSpec) -> str:
    return child_name(spec.name, "runtime")


def render_service_account(spec: ModelServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(spec, runtime_account(spec)),
        "automountServiceAccountToken": False,  # the pod asks for its token itself
    }


def binding_name(namespace: str, name: str) -> str:
    """The runtime's ClusterRoleBinding of ModelService ``namespace/name``."""
    return f"modelservice:auth-delegator:{namespace}:{child_name(name, 'runtime')}"


def auth_delegator_binding_name(spec: ModelServiceSpec) -> str:
    return binding_name(spec.namespace, spec.name)


def render_auth_delegator_binding(spec: ModelServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": auth_delegator_binding_name(spec),
            "labels": {**common_labels(spec.name), NAMESPACE_LABEL: spec.namespace},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AUTH_DELEGATOR},
        "subjects": [{"kind": "ServiceAccount", "name": runtime_account(spec), "namespace": spec.namespace}],
    }
