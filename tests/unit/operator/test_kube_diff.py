"""Comparing only what we own, as the server stores it: server defaults and canonical quantities never
cause writes; foreign keys in our selectors do."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_operator.kube.client import object_path
from modelservice_operator.kube.diff import drifted_fields, owned_fields_match, take_back


def test_server_defaults_and_other_fields_do_not_count_as_drift() -> None:
    desired = {
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "runtime", "image": "a"}]}}}
    }
    observed = {
        "metadata": {"resourceVersion": "7"},
        "spec": {"replicas": 2, "progressDeadlineSeconds": 600,
                 "template": {"spec": {"containers": [{"name": "runtime", "image": "a", "terminationMessagePath": "/dev/x"}],
                                       "dnsPolicy": "ClusterFirst"}}},
    }  # fmt: skip
    assert owned_fields_match(desired, observed)


def test_a_changed_owned_field_is_drift() -> None:
    assert not owned_fields_match({"spec": {"replicas": 2}}, {"spec": {"replicas": 3}})
    assert not owned_fields_match({"spec": {"args": ["a", "b"]}}, {"spec": {"args": ["a"]}})
    assert not owned_fields_match({"metadata": {"labels": {"x": "1"}}}, {"metadata": {"labels": {}}})


def resources(**values: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"resources": {"requests": values}}]}}


@pytest.mark.parametrize(
    ("ours", "servers"),
    [
        ("0.5", "500m"),
        ("2048Mi", "2Gi"),
        ("1000m", "1"),
        (1, "1"),
        ("1e3", "1k"),
        ("0.1", "100m"),
        ("1.5Gi", "1536Mi"),
    ],
)
def test_quantities_compare_by_value_as_the_server_canonicalises_them(ours: Any, servers: str) -> None:
    assert owned_fields_match(resources(cpu=ours), resources(cpu=servers))


def test_a_different_quantity_is_drift() -> None:
    assert not owned_fields_match(resources(memory="2Gi"), resources(memory="2G"))
    assert not owned_fields_match(resources(cpu="1"), resources(cpu="999m"))


def test_hpa_target_values_are_quantities_too() -> None:
    desired = {"target": {"type": "AverageValue", "averageValue": "0.5"}}
    assert owned_fields_match(desired, {"target": {"type": "AverageValue", "averageValue": "500m"}})


def test_quantity_like_strings_elsewhere_are_compared_as_strings() -> None:
    assert not owned_fields_match({"args": ["--x=0.5"]}, {"args": ["--x=500m"]})
    assert not owned_fields_match(
        {"metadata": {"labels": {"v": "0.5"}}}, {"metadata": {"labels": {"v": "500m"}}}
    )


def test_booleans_are_not_strings() -> None:
    assert not owned_fields_match({"readOnly": True}, {"readOnly": "True"})


def test_a_foreign_key_in_a_service_selector_is_drift() -> None:
    desired = {"spec": {"selector": {"app": "iris"}}}
    tampered = {"spec": {"selector": {"app": "iris", "extra": "x"}}}
    assert not owned_fields_match(desired, tampered)
    assert drifted_fields(desired, tampered) == ["spec.selector"]
    # ... but extra labels on the object itself are someone else's business.
    assert owned_fields_match(
        {"metadata": {"labels": {"a": "1"}}}, {"metadata": {"labels": {"a": "1", "b": "2"}}}
    )


def test_take_back_sets_our_fields_whole_and_keeps_the_rest() -> None:
    observed = {
        "metadata": {"name": "iris", "resourceVersion": "9", "managedFields": [{"manager": "kubectl"}],
                     "labels": {"a": "1", "theirs": "x"}},
        "spec": {"clusterIP": "10.96.0.7", "selector": {"app": "iris", "extra": "x"},
                 "ports": [{"name": "http", "port": 9999, "targetPort": "http"}]},
    }  # fmt: skip
    desired = {
        "metadata": {"name": "iris", "labels": {"a": "1"}},
        "spec": {
            "selector": {"app": "iris"},
            "ports": [{"name": "http", "port": 8501, "targetPort": "http"}],
        },
    }
    body = take_back(observed, desired)
    assert body["spec"] == {
        "clusterIP": "10.96.0.7",
        "selector": {"app": "iris"},
        "ports": desired["spec"]["ports"],
    }
    assert body["metadata"]["resourceVersion"] == "9"  # a concurrent write makes the update a 409
    assert body["metadata"]["labels"] == {"a": "1", "theirs": "x"}
    assert "managedFields" not in body["metadata"]
    assert observed["spec"]["ports"][0]["port"] == 9999  # the input is not modified


def test_paths_for_core_group_and_cluster_wide_lists() -> None:
    assert object_path("v1", "Service", "ml", "iris") == "/api/v1/namespaces/ml/services/iris"
    assert object_path("apps/v1", "Deployment", "ml") == "/apis/apps/v1/namespaces/ml/deployments"
    assert object_path("v1", "Pod", None) == "/api/v1/pods"
