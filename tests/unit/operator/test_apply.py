"""Comparing only what we own: server defaults never cause writes."""

from __future__ import annotations

from modelservice_operator.apply import ApiError, object_path, owned_fields_match


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


def test_quantities_compare_as_the_server_writes_them() -> None:
    assert owned_fields_match({"limits": {"nvidia.com/gpu": 1}}, {"limits": {"nvidia.com/gpu": "1"}})
    assert not owned_fields_match({"readOnly": True}, {"readOnly": "True"})


def test_paths_for_core_and_group_resources() -> None:
    assert object_path("v1", "Service", "ml", "iris") == "/api/v1/namespaces/ml/services/iris"
    assert object_path("apps/v1", "Deployment", "ml") == "/apis/apps/v1/namespaces/ml/deployments"


def test_client_errors_are_permanent_but_conflicts_and_throttling_are_not() -> None:
    assert ApiError(422, "invalid").permanent
    assert not ApiError(409, "conflict").permanent
    assert not ApiError(503, "unavailable").permanent
