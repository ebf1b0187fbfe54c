"""Metadata shared by every child: labels, namespace and the controller ownerReference."""

from __future__ import annotations

from typing import Any

from ..api import ModelServiceSpec
from ..naming import common_labels

API_VERSION = "serving.modelservice.io/v1alpha1"
KIND = "ModelService"
RUNTIME_PORT = 8501
GRPC_PORT = 8500  # TF Serving's gRPC port, served when spec.runtime.grpc.enabled


def metadata(spec: ModelServiceSpec, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": spec.namespace,
        "labels": {**common_labels(spec.name), **(extra_labels or {})},
    }
    if spec.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": spec.name,
                "uid": spec.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta
