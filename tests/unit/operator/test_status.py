"""Status and conditions as tables: (observed children, previous status) -> status."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_operator import conditions as c
from modelservice_operator.api import parse_spec
from modelservice_operator.rollout import RolloutObserved, plan
from modelservice_operator.status import Observed, compute_status, invalid_status, without_times, workload

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
SPEC = parse_spec(
    {
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"model": {"storageUri": "pvc://m/iris"}, "replicas": 2},
    }
)


def deployment(replicas: int = 2, ready: int = 2, updated: int = 2, available: int = 2, total: int | None = None,
               generation: int = 3, observed_generation: int = 3, conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": "iris-abc", "generation": generation, "labels": {"serving.modelservice.io/revision": "abc"}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed_generation, "replicas": replicas if total is None else total,
            "readyReplicas": ready, "updatedReplicas": updated, "availableReplicas": available,
            "conditions": conditions or [],
        },
    }  # fmt: skip


def pod(
    name: str = "iris-1", *, unschedulable: str = "", waiting: str = "", message: str = ""
) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [], "containerStatuses": []}
    if unschedulable:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        )
    if waiting:
        status["containerStatuses"].append(
            {"name": "runtime", "state": {"waiting": {"reason": waiting, "message": message}}}
        )
    return {"metadata": {"name": name}, "status": status}


SELECTOR = {"serving.modelservice.io/name": "iris", "app.kubernetes.io/component": "predictor"}


def ready_pod(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"iris-{i}", "labels": dict(SELECTOR)},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip


def serving(dep: dict[str, Any], endpoints: int = 2, selector: dict[str, str] | None = None) -> Observed:
    """The Deployment plus its two ready pods behind the Service, with ``endpoints`` of them published."""
    pods = [ready_pod(i) for i in range(2)]
    service = {"metadata": {"name": "iris"}, "spec": {"selector": selector or SELECTOR}}
    slices = [{"endpoints": [{"conditions": {"ready": True}, "targetRef": {"name": p["metadata"]["name"]}}
                             for p in pods[:endpoints]]}]  # fmt: skip
    return Observed(deployments=[dep], pods=pods, service=service, endpoint_slices=slices)


def status_of(spec: Any, generation: int, observed: Observed, previous: dict[str, Any] | None = None,
              now: str = NOW) -> dict[str, Any]:  # fmt: skip
    """compute_status with the plan the reconcile would make from the same observations."""
    rollout_plan = plan(spec, RolloutObserved([workload(d) for d in observed.deployments], "iris-abc", "abc",
                                              previous or {}), 1_767_225_600.0)  # fmt: skip
    return compute_status(spec, generation, observed, previous or {}, now, rollout_plan)


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {cond["type"]: (cond["status"], cond["reason"]) for cond in status["conditions"]}


GPU_MESSAGE = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available"


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        pytest.param(Observed(), {"Ready": ("Unknown", c.RECONCILING), "Progressing": ("Unknown", c.RECONCILING),
                                  "Degraded": ("Unknown", c.RECONCILING)}, id="first-visit-is-unknown"),
        pytest.param(serving(deployment()), {"Ready": ("True", c.AVAILABLE), "Progressing": ("False", c.ROLLOUT_COMPLETE),
                                             "Degraded": ("False", c.AS_EXPECTED)}, id="all-ready"),
        pytest.param(serving(deployment(), endpoints=1), {"Ready": ("False", c.ENDPOINTS_PENDING),
                     "Progressing": ("False", c.ROLLOUT_COMPLETE), "Degraded": ("False", c.AS_EXPECTED)},
                     id="pods-ready-but-not-yet-endpoints"),
        pytest.param(Observed([deployment()]), {"Ready": ("False", c.ENDPOINTS_PENDING)}, id="service-not-created-yet"),
        pytest.param(serving(deployment(), endpoints=0, selector={**SELECTOR, "tampered": "yes"}),
                     {"Ready": ("False", c.SERVICE_NOT_SELECTING), "Degraded": ("True", c.SERVICE_NOT_SELECTING)},
                     id="service-selector-edited-by-hand"),
        pytest.param(Observed([deployment(ready=0, available=0)]), {"Ready": ("False", c.ROLLING_OUT),
                     "Progressing": ("True", c.ROLLING_OUT), "Degraded": ("False", c.AS_EXPECTED)}, id="model-loading"),
        pytest.param(Observed([deployment(ready=1, available=1, updated=1, total=3)], [pod()]),
                     {"Ready": ("False", c.ROLLING_OUT), "Progressing": ("True", c.ROLLING_OUT)}, id="rolling-update"),
        pytest.param(Observed([deployment(observed_generation=2)]), {"Progressing": ("True", c.ROLLING_OUT)},
                     id="deployment-controller-has-not-seen-the-change"),
        pytest.param(Observed([deployment(ready=0, available=0)], [pod(unschedulable=GPU_MESSAGE)]),
                     {"Ready": ("False", c.UNSCHEDULABLE), "Degraded": ("True", c.UNSCHEDULABLE)}, id="no-gpu-node"),
        pytest.param(Observed([deployment(ready=0, available=0)], [pod(waiting="ImagePullBackOff", message="not found")]),
                     {"Ready": ("False", c.IMAGE_PULL), "Degraded": ("True", c.IMAGE_PULL)}, id="image-pull"),
        pytest.param(Observed([deployment(ready=0, available=0)], [pod(waiting="CrashLoopBackOff", message="back-off")]),
                     {"Ready": ("False", c.CRASH_LOOP)}, id="crash-loop"),
        pytest.param(Observed([deployment(ready=0, available=0, conditions=[{"type": "Progressing", "status": "False",
                     "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet iris-1 has timed out progressing."}])]),
                     {"Degraded": ("True", c.PROGRESS_DEADLINE)}, id="probes-never-pass"),
        pytest.param(Observed([deployment(replicas=0, ready=0, updated=0, available=0)]), {"Ready": ("True", c.SCALED_TO_ZERO)},
                     id="scaled-to-zero"),
    ],
)  # fmt: skip
def test_conditions_follow_what_is_observed(observed: Observed, expected: dict[str, tuple[str, str]]) -> None:
    spec = SPEC if not observed.deployments or observed.deployments[0]["spec"]["replicas"] else parse_spec(
        {"metadata": {"name": "iris", "namespace": "ml"}, "spec": {"model": {"storageUri": "pvc://m/iris"}, "replicas": 0}})  # fmt: skip
    status = status_of(spec, 3, observed)
    got = conds(status)
    for type_, value in expected.items():
        assert got[type_] == value, f"{type_}: {got[type_]} != {value}"
    assert all(cond["observedGeneration"] == 3 for cond in status["conditions"])


def test_unschedulable_condition_carries_the_schedulers_message() -> None:
    status = status_of(
        SPEC, 1, Observed([deployment(ready=0, available=0)], [pod(unschedulable=GPU_MESSAGE)])
    )
    ready = next(cond for cond in status["conditions"] if cond["type"] == "Ready")
    assert GPU_MESSAGE in ready["message"]


def test_status_has_the_scale_subresource_fields_and_the_url() -> None:
    status = status_of(SPEC, 3, Observed([deployment(ready=1)]))
    assert status["observedGeneration"] == 3
    assert (status["replicas"], status["readyReplicas"], status["replicaSummary"]) == (2, 1, "1/2")
    assert status["selector"] == "app.kubernetes.io/component=predictor,serving.modelservice.io/name=iris"
    assert status["url"] == "http://iris.ml.svc:8501"
    assert status["revision"] == "abc" and status["modelVersion"] == "latest 1"


def test_a_tampered_selector_says_how_many_ready_pods_it_still_matches() -> None:
    observed = serving(deployment(), endpoints=0, selector={**SELECTOR, "tampered": "yes"})
    ready = next(cond for cond in status_of(SPEC, 3, observed)["conditions"] if cond["type"] == "Ready")
    assert "Service iris selects" in ready["message"] and "tampered=yes" in ready["message"]
    assert "matches 0 of 2 ready pods" in ready["message"]


def test_last_transition_time_moves_only_when_the_status_changes() -> None:
    first = status_of(SPEC, 3, serving(deployment()))
    same = status_of(SPEC, 3, serving(deployment()), first, LATER)
    assert [cond["lastTransitionTime"] for cond in same["conditions"]] == [NOW] * 3
    assert without_times(first) == without_times(same)
    broken = status_of(
        SPEC, 3, Observed([deployment(ready=0, available=0)], [pod(waiting="CrashLoopBackOff")]), same, LATER
    )
    times = {cond["type"]: cond["lastTransitionTime"] for cond in broken["conditions"]}
    assert times == {"Ready": LATER, "Progressing": LATER, "Degraded": LATER}


def test_invalid_spec_status_says_why_and_that_nothing_will_change() -> None:
    status = invalid_status(
        {}, 4, c.INVALID_SPEC, "spec.model.storageUri: gs:// is not supported", NOW, Observed()
    )
    assert conds(status) == {"Ready": ("False", c.INVALID_SPEC), "Progressing": ("False", c.INVALID_SPEC),
                             "Degraded": ("True", c.INVALID_SPEC)}  # fmt: skip
    assert status["observedGeneration"] == 4


S3_SPEC = parse_spec({"metadata": {"name": "iris", "namespace": "ml"},
                      "spec": {"model": {"storageUri": "s3://models/iris"}, "replicas": 2}})  # fmt: skip
FORBIDDEN = (
    "downloading model: 403 Forbidden from s3 endpoint http://minio:9000 for s3://models/iris: "
    "SignatureDoesNotMatch (The request signature we calculated does not match the signature you provided.)"
)


def downloading_pod(state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    init = {"name": "storage-initializer", "state": state, **({"lastState": last} if last else {})}
    return {
        "metadata": {"name": "iris-1"},
        "spec": {"initContainers": [{"name": "storage-initializer", "args": ["s3://models/iris", "/mnt/models/model"]}]},
        "status": {"conditions": [], "initContainerStatuses": [init],
                   "containerStatuses": [{"name": "runtime", "state": {"waiting": {"reason": "PodInitializing"}}}]},
    }  # fmt: skip


def ready_condition(status: dict[str, Any]) -> tuple[str, str, str]:
    ready = next(cond for cond in status["conditions"] if cond["type"] == "Ready")
    return ready["status"], ready["reason"], ready["message"]


def test_a_running_download_is_why_pods_are_not_ready_and_not_a_fault() -> None:
    status = status_of(
        S3_SPEC, 1, Observed([deployment(ready=0, available=0)], [downloading_pod({"running": {}})])
    )
    assert ready_condition(status) == (
        "False",
        c.DOWNLOADING_MODEL,
        "Pod iris-1: downloading model from s3://models/iris",
    )
    assert conds(status)["Degraded"] == ("False", c.AS_EXPECTED)


@pytest.mark.parametrize(
    ("state", "last", "retry"),
    [
        ({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
         {"terminated": {"exitCode": 1, "reason": "Error", "message": FORBIDDEN + "\n"}}, "retrying with back-off"),
        ({"running": {}}, {"terminated": {"exitCode": 1, "reason": "Error", "message": FORBIDDEN}}, "retrying"),
        ({"terminated": {"exitCode": 1, "reason": "Error", "message": "starting\n" + FORBIDDEN}}, None,
         "retrying with back-off"),
    ],
)  # fmt: skip
def test_a_failed_download_names_its_reason_while_the_kubelet_retries(
    state: dict[str, Any], last: dict[str, Any] | None, retry: str
) -> None:
    status = status_of(
        S3_SPEC, 1, Observed([deployment(ready=0, available=0)], [downloading_pod(state, last)])
    )
    assert ready_condition(status) == ("False", c.MODEL_DOWNLOAD_FAILED, f"Pod iris-1: {FORBIDDEN}; {retry}")
    assert conds(status)["Degraded"] == ("True", c.MODEL_DOWNLOAD_FAILED)


def test_a_missing_secret_stops_the_download_before_it_starts() -> None:
    missing = {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}}
    status = status_of(S3_SPEC, 1, Observed([deployment(ready=0, available=0)], [downloading_pod(missing)]))
    assert ready_condition(status) == (
        "False", c.CONTAINER_CONFIG,
        'Pod iris-1 container storage-initializer: CreateContainerConfigError: secret "s3-creds" not found',
    )  # fmt: skip


def test_a_finished_download_leaves_the_runtime_containers_state_to_report() -> None:
    done = downloading_pod({"terminated": {"exitCode": 0, "reason": "Completed"}},
                           {"terminated": {"exitCode": 1, "message": FORBIDDEN}})  # fmt: skip
    done["status"]["containerStatuses"] = [{"name": "runtime", "state": {"running": {}}}]
    status = status_of(S3_SPEC, 1, Observed([deployment(ready=0, available=0)], [done]))
    assert ready_condition(status)[1] == c.ROLLING_OUT


def test_the_planner_counts_a_revisions_pods_available_only_once_a_service_lists_them() -> None:
    from modelservice_operator.status import serving_workloads

    old, new = deployment(), deployment()
    new["metadata"] = {
        **new["metadata"],
        "name": "iris-new",
        "labels": {"serving.modelservice.io/revision": "new"},
    }
    pods = [{"metadata": {"name": f"{rev}-{i}", "labels": {"serving.modelservice.io/revision": rev}}}
            for rev in ("abc", "new") for i in range(2)]  # fmt: skip
    published = [{"endpoints": [{"conditions": {"ready": True}, "targetRef": {"name": n}}
                                for n in ("abc-0", "abc-1", "new-0")]}]  # fmt: skip
    counted = {w.name: w.available for w in serving_workloads([old, new], pods, published)}
    assert counted == {"iris-abc": 2, "iris-new": 1}  # new-1 is available but not an endpoint yet
    # No EndpointSlice at all (an API server without the controller): the Deployments' word stands.
    assert {w.name: w.available for w in serving_workloads([old, new], pods, [])} == {
        "iris-abc": 2,
        "iris-new": 2,
    }
