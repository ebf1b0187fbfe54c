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
from dataclasses import dataclass, field, replace
from typing import Any

from . import conditions as c
from .api import ModelServiceSpec
from .naming import REVISION_LABEL, STORAGE_INITIALIZER, child_name, selector_labels, selector_string
from .render.service import service_url
from .rollout import DEGRADED, HEALTHY, PAUSED, Plan, Workload

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
    deployments: Sequence[Mapping[str, Any]] = field(default_factory=list)  # every revision's Deployment
    pods: Sequence[Mapping[str, Any]] = field(default_factory=list)
    service: Mapping[str, Any] | None = None  # <name>, what clients call
    endpoint_slices: Sequence[Mapping[str, Any]] = field(default_factory=list)  # of <name>

    def deployment(self, name: str) -> Mapping[str, Any] | None:
        return next((d for d in self.deployments if d.get("metadata", {}).get("name") == name), None)


def workload(deployment: Mapping[str, Any]) -> Workload:
    """A Deployment as the planner sees it."""
    meta = deployment.get("metadata", {}) or {}
    spec = deployment.get("spec", {}) or {}
    status = deployment.get("status", {}) or {}
    containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or [{}]
    return Workload(
        name=str(meta.get("name", "")),
        revision=str((meta.get("labels") or {}).get(REVISION_LABEL, "")),
        replicas=int(spec.get("replicas", 0) or 0),
        available=int(status.get("availableReplicas", 0) or 0),
        ready=int(status.get("readyReplicas", 0) or 0),
        pods=int(status.get("replicas", 0) or 0),
        settled=int(status.get("observedGeneration", 0) or 0) >= int(meta.get("generation", 0) or 0),
        image=str(containers[0].get("image", "")),
    )


def serving_workloads(
    deployments: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
) -> list[Workload]:
    """The Deployments as the planner sees them, a revision's ``available`` counting only pods that some
    Service of ours lists as a ready endpoint: a Deployment reports a pod available before the
    EndpointSlice controller has published it, and scaling an old revision down on that word would leave
    clients fewer pods than ``replicas`` for a moment. Without any EndpointSlice observed (an API server
    without the controller), the Deployments' word stands."""
    workloads = [workload(d) for d in deployments]
    if not slices:
        return workloads
    ready = ready_targets(slices)
    by_revision: dict[str, int] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("name") in ready and not meta.get("deletionTimestamp"):
            revision = str((meta.get("labels") or {}).get(REVISION_LABEL, ""))
            by_revision[revision] = by_revision.get(revision, 0) + 1
    return [replace(w, available=min(w.available, by_revision.get(w.revision, 0))) for w in workloads]


def _model_version(deployment: Mapping[str, Any] | None) -> str:
    containers = ((((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or [{}]
    for arg in containers[0].get("args") or []:
        if str(arg).startswith("--model_version_policy="):
            policy = str(arg).split("=", 1)[1]
            return policy.removeprefix("specific:") if policy.startswith("specific:") and "," not in policy \
                else policy.replace(":", " ")  # fmt: skip
    return ""


def ready_targets(slices: Sequence[Mapping[str, Any]]) -> set[str]:
    """The ready endpoints across EndpointSlices: their pods' names (their addresses when no pod)."""
    seen: set[str] = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            target = (endpoint.get("targetRef") or {}).get("name") or ",".join(
                endpoint.get("addresses") or []
            )
            seen.add(str(target))
    return seen


def ready_endpoints(slices: Sequence[Mapping[str, Any]]) -> int:
    """Distinct ready endpoints (pods) across the Service's EndpointSlices."""
    return len(ready_targets(slices))


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def service_problem(
    spec: ModelServiceSpec, observed: Observed, ready: int, expected: Mapping[str, str]
) -> Problem | None:
    """Why clients cannot reach ``ready`` ready pods through the Service, or None when they can."""
    name = child_name(spec.name)
    if observed.service is None:
        return Problem(c.ENDPOINTS_PENDING, f"Waiting for Service {name}")
    selector: Mapping[str, Any] = (observed.service.get("spec") or {}).get("selector") or {}
    if dict(selector) != dict(expected):
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
    degraded: bool = True  # False: a reason the pods are not ready yet that is not a fault (a download)


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
        downloading = download_problem(name, pod)
        if downloading is not None:
            return downloading
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = WAITING_REASONS.get(waiting.get("reason", ""))
            if reason:
                detail = waiting.get("message") or waiting.get("reason")
                return Problem(
                    reason, f"Pod {name} container {status.get('name')}: {waiting.get('reason')}: {detail}"
                )
    return None


def download_problem(name: str, pod: Mapping[str, Any]) -> Problem | None:
    """The storage initializer's state: downloading, failed (its one-line reason, the termination
    message, while the kubelet retries it with back-off), or stuck before it starts (a missing Secret)."""
    for status in pod.get("status", {}).get("initContainerStatuses", []) or []:
        if status.get("name") != STORAGE_INITIALIZER:
            continue
        state = status.get("state") or {}
        if "terminated" in state and state["terminated"].get("exitCode") == 0:
            return None
        failed = next(
            (t for t in (state.get("terminated"), (status.get("lastState") or {}).get("terminated"))
             if t and t.get("exitCode", 0) != 0),
            None,
        )  # fmt: skip
        if failed is not None:
            lines = str(failed.get("message") or "").strip().splitlines()
            reason = (
                lines[-1]
                if lines
                else f"exit code {failed.get('exitCode')} ({failed.get('reason', 'Error')})"
            )
            retry = "; retrying" if "running" in state else "; retrying with back-off"
            return Problem(c.MODEL_DOWNLOAD_FAILED, f"Pod {name}: {reason}{retry}")
        waiting = state.get("waiting") or {}
        blocked = WAITING_REASONS.get(waiting.get("reason", ""))
        if blocked:
            detail = waiting.get("message") or waiting.get("reason")
            return Problem(
                blocked, f"Pod {name} container {STORAGE_INITIALIZER}: {waiting.get('reason')}: {detail}"
            )
        if "running" in state:
            source = next(
                (str((i.get("args") or [""])[0]) for i in pod.get("spec", {}).get("initContainers", []) or []
                 if i.get("name") == STORAGE_INITIALIZER),
                "",
            )  # fmt: skip
            return Problem(
                c.DOWNLOADING_MODEL, f"Pod {name}: downloading model from {source}", degraded=False
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


def _revision_status(deployment: Mapping[str, Any] | None, revision: str) -> dict[str, Any]:
    w = workload(deployment) if deployment is not None else None
    return {
        "revision": revision,
        "deployment": w.name if w else "",
        "image": w.image if w else "",
        "modelVersion": _model_version(deployment),
        "replicas": w.replicas if w else 0,
        "readyReplicas": w.ready if w else 0,
    }


def _base(
    spec: ModelServiceSpec | None, generation: int, observed: Observed, plan: Plan | None
) -> dict[str, Any]:
    workloads = [workload(d) for d in observed.deployments]
    desired = spec.replicas if spec else sum(w.replicas for w in workloads)
    ready = sum(w.ready for w in workloads)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": sum(w.pods for w in workloads),
        "readyReplicas": ready,
        "replicaSummary": f"{ready}/{desired}",
    }
    if spec is not None:
        status["selector"] = selector_string(selector_labels(spec.name))
        status["url"] = service_url(spec)
        status["modelVersion"] = spec.model.version or spec.model.policy.runtime_flag().replace(":", " ")
    if plan is None:
        return status
    status["deployment"] = plan.stable
    status["revision"] = plan.stable_revision
    status["stable"] = _revision_status(observed.deployment(plan.stable), plan.stable_revision)
    if status["stable"]["modelVersion"]:
        status["modelVersion"] = status["stable"]["modelVersion"]  # what clients get, not what is coming
    if plan.canary:
        block = _revision_status(observed.deployment(plan.canary), plan.canary_revision)
        if spec is not None and spec.rollout.strategy == "blueGreen":
            status["preview"] = block
        else:
            block.update(desiredWeight=plan.desired_weight, actualWeight=plan.actual_weight)
            status["canary"] = block
    rollout = plan.state.rollout_status()
    if rollout is not None:
        if (
            spec is not None
            and plan.canary
            and spec.rollout.strategy == "canary"
            and spec.rollout.canary.steps
        ):
            rollout["stepSummary"] = (
                f"{min(plan.state.step, len(spec.rollout.canary.steps))}/{len(spec.rollout.canary.steps)}"
            )
        rollout["phase"] = plan.phase
        rollout["message"] = plan.message
        status["rollout"] = rollout
    if plan.state.history:
        status["history"] = [dict(h) for h in plan.state.history]
    if plan.capacity is not None:
        status["capacity"] = {"mode": plan.capacity.mode, "freeGPUs": plan.capacity.free_gpus,
                              "reason": plan.capacity.reason}  # fmt: skip
    return status


def _capacity_condition(spec: ModelServiceSpec, plan: Plan, conds: list[dict[str, Any]], generation: int,
                        now: str) -> list[dict[str, Any]]:  # fmt: skip
    """CapacityConstrained, on ModelServices that ask for GPUs: True while a rollout waits for one."""
    if spec.gpu is None:
        return [cond for cond in conds if cond.get("type") != c.CAPACITY_CONSTRAINED]
    if plan.capacity is not None and plan.capacity.constrained:
        return c.set_condition(conds, c.CAPACITY_CONSTRAINED, c.TRUE, c.INSUFFICIENT_GPU_CAPACITY,
                               plan.capacity.reason, generation, now)  # fmt: skip
    message = plan.capacity.reason if plan.capacity is not None else "No rollout is waiting for a GPU"
    return c.set_condition(conds, c.CAPACITY_CONSTRAINED, c.FALSE, c.GPU_CAPACITY_AVAILABLE, message,
                           generation, now)  # fmt: skip


def invalid_status(
    previous: Mapping[str, Any], generation: int, reason: str, message: str, now: str, observed: Observed
) -> dict[str, Any]:
    """Status for a spec the operator will not act on (InvalidSpec); the rollout state is kept."""
    status = _base(None, generation, observed, None)
    for key in ("stable", "canary", "preview", "rollout", "history", "deployment", "revision"):
        if key in previous:
            status[key] = previous[key]
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
    observed: Observed, plan: Plan | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Status when the API server refused or failed a call: the problem and when we try again.

    The replica counts stay those last observed; Progressing stays True because the operator keeps
    retrying (RBAC granted, quota raised, the server back) without a spec change. The rollout state of
    the plan is kept only when a plan was made (it may have recorded a step or a promotion).
    """
    status = _base(spec, generation, observed, plan)
    if plan is None:
        for key in ("stable", "canary", "preview", "rollout", "history", "deployment", "revision"):
            if key in previous:
                status[key] = previous[key]
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    conds = c.set_condition(conds, c.READY, c.FALSE, reason, message, generation, now)
    conds = c.set_condition(
        conds, c.PROGRESSING, c.TRUE, reason,
        "Retrying with backoff; no spec change is needed once the cause is fixed", generation, now,
    )  # fmt: skip
    conds = c.set_condition(conds, c.DEGRADED, c.TRUE, reason, message, generation, now)
    status["conditions"] = conds
    return status


def main_selector(spec: ModelServiceSpec, plan: Plan) -> dict[str, str]:
    selector = selector_labels(spec.name)
    if plan.main_revision:
        selector[REVISION_LABEL] = plan.main_revision
    return selector


def compute_status(
    spec: ModelServiceSpec, generation: int, observed: Observed, previous: Mapping[str, Any], now: str,
    plan: Plan,
) -> dict[str, Any]:  # fmt: skip
    status = _base(spec, generation, observed, plan)
    conds: list[dict[str, Any]] = list(previous.get("conditions") or [])
    if not observed.deployments:
        for type_ in c.TYPES:
            conds = c.set_condition(
                conds, type_, c.UNKNOWN, c.RECONCILING, "Creating the Deployment", generation, now
            )
        status["conditions"] = conds
        return status

    desired = spec.replicas
    workloads = [workload(d) for d in observed.deployments]
    # The pods clients reach through <name>: every revision, or (blue-green) the active one.
    serving = [w for w in workloads if plan.main_revision is None or w.revision == plan.main_revision]
    ready = sum(w.ready for w in serving)
    updated = next((w.available for w in workloads if w.name == (plan.canary or plan.stable)), 0)

    problem = pod_problem(observed.pods)
    for deployment in observed.deployments:
        progress = _deployment_condition(deployment, "Progressing")
        if problem is None and progress and progress.get("reason") == "ProgressDeadlineExceeded":
            problem = Problem(c.PROGRESS_DEADLINE, str(progress.get("message", "")))

    settled = plan.phase == HEALTHY or (spec.rollout.strategy != "rolling" and plan.phase != DEGRADED)
    unreachable = (
        service_problem(spec, observed, min(ready, desired), main_selector(spec, plan))
        if desired > 0
        else None
    )
    if unreachable is not None and unreachable.reason == c.SERVICE_NOT_SELECTING and problem is None:
        problem = unreachable
    rollout_note = f"; {plan.message}" if plan.rolling_out and plan.phase != HEALTHY else ""
    if desired == 0 and plan.phase == HEALTHY:
        conds = c.set_condition(
            conds, c.READY, c.TRUE, c.SCALED_TO_ZERO, "Scaled to zero replicas", generation, now
        )
    elif (
        ready >= desired
        and unreachable is None
        and (settled or (plan.phase == DEGRADED and plan.rolling_out))
    ):
        message = f"{ready}/{desired} replicas ready, serving {status['url']}{rollout_note}"
        conds = c.set_condition(conds, c.READY, c.TRUE, c.AVAILABLE, message, generation, now)
    elif ready >= desired and unreachable is not None:
        conds = c.set_condition(
            conds, c.READY, c.FALSE, unreachable.reason, unreachable.message, generation, now
        )
    elif problem is not None:
        conds = c.set_condition(conds, c.READY, c.FALSE, problem.reason, problem.message, generation, now)
    else:
        reason = c.ROLLING_OUT if plan.phase != HEALTHY else c.PODS_NOT_READY
        conds = c.set_condition(
            conds, c.READY, c.FALSE, reason,
            f"{ready}/{desired} replicas ready ({updated} updated); {plan.message or 'waiting for the model to load'}",
            generation, now,
        )  # fmt: skip

    if plan.phase == HEALTHY:
        conds = c.set_condition(conds, c.PROGRESSING, c.FALSE, c.ROLLOUT_COMPLETE,
                                f"Revision {plan.stable_revision} rolled out", generation, now)  # fmt: skip
    elif plan.phase == PAUSED:
        conds = c.set_condition(conds, c.PROGRESSING, c.UNKNOWN, plan.reason, plan.message, generation, now)
    elif plan.phase == DEGRADED:
        conds = c.set_condition(conds, c.PROGRESSING, c.FALSE, plan.reason, plan.message, generation, now)
    else:
        conds = c.set_condition(conds, c.PROGRESSING, c.TRUE, c.ROLLING_OUT, plan.message, generation, now)

    if plan.phase == DEGRADED:
        conds = c.set_condition(conds, c.DEGRADED, c.TRUE, plan.reason, plan.message, generation, now)
    elif problem is not None and problem.degraded:
        conds = c.set_condition(conds, c.DEGRADED, c.TRUE, problem.reason, problem.message, generation, now)
    else:
        conds = c.set_condition(
            conds, c.DEGRADED, c.FALSE, c.AS_EXPECTED, "No problems observed", generation, now
        )
    status["conditions"] = _capacity_condition(spec, plan, conds, generation, now)
    return status


def without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status minus timestamps, to tell whether anything but time changed."""
    result = dict(status)
    result["conditions"] = [
        {k: v for k, v in cond.items() if k != "lastTransitionTime"}
        for cond in status.get("conditions") or []
    ]
    return result
