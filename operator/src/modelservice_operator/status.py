"""PURE: observed children -> the ModelService status.

**For testability,** nothing here reads the clock or the API: the caller passes what it observed (the
Deployment, its pods, the Service and its EndpointSlices), the previous status and ``now``. Table tests in
tests/unit/operator drive it.

**Ready means clients are served:** the pods are ready AND the Service selects them (its EndpointSlices
list them as ready endpoints). A selector edited by hand, or endpoints not yet published, keep Ready
False with a reason that says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import conditions as c
from .api import ModelServiceSpec
from .naming import REVISION_LABEL, child_name, selector_labels, selector_string
from .render.service import service_url

WAITING_REASONS = {
    "ImagePullBackOff": c.IMAGE_PULL,
    "ErrImagePull": c.IMAGE_PULL,
    "InvalidImageName": c.IMAGE_PULL,
    "CrashLoopBackOff": c.CRASH_LOOP,
    "CreateContainerConfigError": c.CONTAINER_CONFIG,
    "CreateContainerError": c.CONTAINER_CONFIG,
}


@dataclass(frozen=True)
class Observed:
    deployment: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = field(default_factory=list)
    service: Mapping[str, Any] | None = None
    endpoint_slices: Sequence[Mapping[str, Any]] = field(default_factory=list)


def ready_endpoints(slices: Sequence[Mapping[str, Any]]) -> int:
    """Distinct ready endpoints (pods) across the Service's EndpointSlices."""
    seen: set[str] = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            target = (endpoint.get("targetRef") or {}).get("name") or ",".join(
                endpoint.get("addresses") or []
            )
            seen.add(str(target))
    return len(seen)


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def service_problem(spec: ModelServiceSpec, observed: Observed, ready: int) -> Problem | None:
    """Why clients cannot reach ``ready`` ready pods through the Service, or None when they can."""
    name = child_name(spec.name)
    if observed.service is None:
        return Problem(c.ENDPOINTS_PENDING, f"Waiting for Service {name}")
    selector: Mapping[str, Any] = (observed.service.get("spec") or {}).get("selector") or {}
    if dict(selector) != selector_labels(spec.name):
        matching = sum(
            1
            for pod in observed.pods
            if _pod_ready(pod)
            and all((pod.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in selector.items())
        )
        return Problem(
            c.SERVICE_NOT_SELECTING,
            f"Service {name} selects {selector_string(selector)}, which matches {matching} of {ready} ready "
            "pods; the operator restores its selector",
        )
    endpoints = ready_endpoints(observed.endpoint_slices)
    if endpoints < ready:
        return Problem(
            c.ENDPOINTS_PENDING, f"{endpoints}/{ready} ready pods are endpoints of Service {name} so far"
        )
    return None


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> Problem | None:
    """The most telling problem among the pods: unschedulable, image pull, crash loop ..."""
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "pod")
        for condition in pod.get("status", {}).get("conditions", []) or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                return Problem(
                    c.UNSCHEDULABLE, f"Pod {name} cannot be scheduled: {condition.get('message', '')}"
                )
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = WAITING_REASONS.get(waiting.get("reason", ""))
            if reason:
                detail = waiting.get("message") or waiting.get("reason")
                return Problem(
                    reason, f"Pod {name} container {status.get('name')}: {waiting.get('reason')}: {detail}"
                )
    return None


def _deployment_condition(deployment: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    found: Mapping[str, Any] | None = next(
        (
            cond
            for cond in deployment.get("status", {}).get("conditions", []) or []
            if cond.get("type") == type_
        ),
        None,
    )
    return found


def _base(spec: ModelServiceSpec | None, generation: int, observed: Observed) -> dict[str, Any]:
    deployment = observed.deployment or {}
    dep_status = deployment.get("status", {}) or {}
    desired = spec.replicas if spec else int(deployment.get("spec", {}).get("replicas", 0) or 0)
    ready = int(dep_status.get("readyReplicas", 0) or 0)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": int(dep_status.get("replicas", 0) or 0),
        "readyReplicas": ready,
        "replicaSummary": f"{ready}/{desired}",
    }
    if spec is not None:
        status["selector"] = selector_string(selector_labels(spec.name))
        status["url"] = service_url(spec)
        status["modelVersion"] = spec.model.version or spec.model.policy.runtime_flag().replace(":", " ")
        status["deployment"] = child_name(spec.name)
    revision = deployment.get("metadata", {}).get("labels", {}).get(REVISION_LABEL)
    if revision:
        status["revision"] = revision
    return status


def invalid_status(
    previous: Mapping[str, Any], generation: int, reason: str, message: str, now: str, observed: Observed
) -> dict[str, Any]:
    """Status for a spec the operator will not act on (InvalidSpec)."""
    status = _base(None, generation, observed)
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    conds = c.set_condition(conds, c.READY, c.FALSE, reason, message, generation, now)
    conds = c.set_condition(
        conds, c.PROGRESSING, c.FALSE, reason, "Nothing will change until the spec is fixed", generation, now
    )
    conds = c.set_condition(conds, c.DEGRADED, c.TRUE, reason, message, generation, now)
    status["conditions"] = conds
    return status


def blocked_status(
    spec: ModelServiceSpec, previous: Mapping[str, Any], generation: int, reason: str, message: str, now: str,
    observed: Observed,
) -> dict[str, Any]:  # fmt: skip
    """Status when the API server refused or failed a call: the problem and when we try again.

    The replica counts stay those last observed; Progressing stays True because the operator keeps
    retrying (RBAC granted, quota raised, the server back) without a spec change.
    """
    status = _base(spec, generation, observed)
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    conds = c.set_condition(conds, c.READY, c.FALSE, reason, message, generation, now)
    conds = c.set_condition(
        conds, c.PROGRESSING, c.TRUE, reason,
        "Retrying with backoff; no spec change is needed once the cause is fixed", generation, now,
    )  # fmt: skip
    conds = c.set_condition(conds, c.DEGRADED, c.TRUE, reason, message, generation, now)
    status["conditions"] = conds
    return status


def compute_status(
    spec: ModelServiceSpec, generation: int, observed: Observed, previous: Mapping[str, Any], now: str
) -> dict[str, Any]:
    status = _base(spec, generation, observed)
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    deployment = observed.deployment
    if deployment is None:
        for type_ in c.TYPES:
            conds = c.set_condition(
                conds, type_, c.UNKNOWN, c.RECONCILING, "Creating the Deployment", generation, now
            )
        status["conditions"] = conds
        return status

    dep_status = deployment.get("status", {}) or {}
    desired = spec.replicas
    updated = int(dep_status.get("updatedReplicas", 0) or 0)
    available = int(dep_status.get("availableReplicas", 0) or 0)
    total = int(dep_status.get("replicas", 0) or 0)
    ready = int(dep_status.get("readyReplicas", 0) or 0)
    dep_generation = int(deployment.get("metadata", {}).get("generation", 0) or 0)
    seen = int(dep_status.get("observedGeneration", 0) or 0) >= dep_generation
    complete = seen and updated >= desired and available >= desired and total <= desired

    problem = pod_problem(observed.pods)
    progress = _deployment_condition(deployment, "Progressing")
    if problem is None and progress and progress.get("reason") == "ProgressDeadlineExceeded":
        problem = Problem(c.PROGRESS_DEADLINE, str(progress.get("message", "")))

    unreachable = service_problem(spec, observed, min(ready, desired)) if desired > 0 else None
    if unreachable is not None and unreachable.reason == c.SERVICE_NOT_SELECTING and problem is None:
        problem = unreachable
    if complete and ready >= desired and unreachable is None:
        reason = c.SCALED_TO_ZERO if desired == 0 else c.AVAILABLE
        message = (
            "Scaled to zero replicas"
            if desired == 0
            else f"{ready}/{desired} replicas ready, serving {status['url']}"
        )
        conds = c.set_condition(conds, c.READY, c.TRUE, reason, message, generation, now)
    elif complete and ready >= desired and unreachable is not None:
        conds = c.set_condition(
            conds, c.READY, c.FALSE, unreachable.reason, unreachable.message, generation, now
        )
    elif problem is not None:
        conds = c.set_condition(conds, c.READY, c.FALSE, problem.reason, problem.message, generation, now)
    else:
        reason = c.ROLLING_OUT if not complete else c.PODS_NOT_READY
        conds = c.set_condition(
            conds, c.READY, c.FALSE, reason,
            f"{ready}/{desired} replicas ready ({updated} updated); waiting for the model to load", generation, now,
        )  # fmt: skip

    if complete:
        conds = c.set_condition(
            conds, c.PROGRESSING, c.FALSE, c.ROLLOUT_COMPLETE, f"Revision {status.get('revision', '')} rolled out",
            generation, now,
        )  # fmt: skip
    else:
        conds = c.set_condition(
            conds, c.PROGRESSING, c.TRUE, c.ROLLING_OUT,
            f"{updated}/{desired} replicas updated, {available} available", generation, now,
        )  # fmt: skip

    if problem is not None:
        conds = c.set_condition(conds, c.DEGRADED, c.TRUE, problem.reason, problem.message, generation, now)
    else:
        conds = c.set_condition(
            conds, c.DEGRADED, c.FALSE, c.AS_EXPECTED, "No problems observed", generation, now
        )
    status["conditions"] = conds
    return status


def without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status minus timestamps, to tell whether anything but time changed."""
    result = dict(status)
    result["conditions"] = [
        {k: v for k, v in cond.items() if k != "lastTransitionTime"}
        for cond in status.get("conditions") or []
    ]
    return result
