"""PURE rollout planner: ``plan(spec, observed, now) -> Plan``.

**For testability,** nothing here reads the clock or the API. The caller passes the Deployments it observed
(one per live revision), the rollout state the previous status recorded, and ``now``; the planner answers
how many pods each revision gets, which revision each Service selects, what weight the HTTPRoute carries,
the new rollout state, and when to look again. ``reconcile.py`` only carries the plan out.

The model (Argo Rollouts' canary and blue-green, on Deployments instead of ReplicaSets):

- Every live revision is a Deployment ``<name>-<revision>``. The *stable* one serves; the *desired* one
  (the revision the spec renders) is rolled out when it differs. Other Deployments (a canary superseded by
  a newer spec, the old stable after promotion) are scaled down within ``maxUnavailable`` and deleted.
- ``rolling`` is a canary with no steps; the first revision of a new object, and a revision equal to the
  stable one under another name (the previous operator's single Deployment ``<name>``), move without steps.
- Canary without a router: traffic follows the pod ratio behind ``<name>``; the counts are Argo's
  ``CalculateReplicaCountsForBasicCanary`` (closest ratio, never 0 on either side for 0 < w < 100, bounded
  by maxSurge/maxUnavailable, stable scaled up before anything scales down).
- Canary with Gateway API: the canary gets ``ceil(N*w/100)`` pods (or ``setCanaryScale``), the route's
  weight moves only once they are available, and the stable shrinks only after the weight moved.
- Blue-green: the new revision at ``previewReplicas`` (default N) behind ``<name>-preview``; promotion
  scales it to N, then switches ``<name>``/``<name>-stable`` at once; the old one goes after a delay.
- State lives in the status (step, attempt, when the step started, aborted ...). Controls are spec fields
  keyed to a revision and attempt (see ``api.Control``), so applying the same YAML again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from . import conditions as c
from .analysis import ERROR, FAILED, INCONCLUSIVE, RUNNING, SUCCESSFUL, Limits, Measurement, verdict
from .api import AnalysisSpec, CanaryStep, ModelServiceSpec, format_duration
from .capacity import Free

HEALTHY, PROGRESSING, PAUSED, DEGRADED = "Healthy", "Progressing", "Paused", "Degraded"

# Reasons the planner puts in the Progressing/Degraded conditions and in Events.
ROLLING_OUT = c.ROLLING_OUT
ROLLOUT_STARTED = c.ROLLOUT_STARTED
ROLLOUT_PAUSED = c.ROLLOUT_PAUSED
ROLLOUT_ABORTED = c.ROLLOUT_ABORTED
ROLLOUT_RETRIED = c.ROLLOUT_RETRIED
ROLLOUT_PROMOTED = c.ROLLOUT_PROMOTED
ROLLOUT_SUPERSEDED = c.ROLLOUT_SUPERSEDED
STEP_COMPLETED = c.STEP_COMPLETED
PROGRESS_DEADLINE = c.PROGRESS_DEADLINE
ANALYSIS_FAILED = c.ANALYSIS_FAILED
PROMOTING_IN_BATCHES = c.PROMOTING_IN_BATCHES

HISTORY_LIMIT = 10


# --------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Workload:
    """One observed Deployment of the ModelService."""

    name: str
    revision: str
    replicas: int  # spec.replicas: what was asked
    available: int = 0
    ready: int = 0
    pods: int = 0  # status.replicas: pods that exist (terminating ones excluded)
    settled: bool = True  # status.observedGeneration caught up with the spec
    image: str = ""


@dataclass(frozen=True)
class RolloutObserved:
    workloads: Sequence[Workload]
    desired_name: str  # the Deployment name of the revision the spec renders
    desired_revision: str
    previous: Mapping[str, Any] = field(default_factory=dict)  # the previous status
    route_weight: int | None = None  # the canary weight the HTTPRoute carries now (read back)
    measurements: Mapping[str, Measurement | None] = field(default_factory=dict)  # scraped now, by analysis
    gpu_free: Free | None = None  # room for more GPU pods; None: no GPUs asked for, or no GPU node known
    scheduled_pods: int = 0  # our pods bound to a node (holding their GPUs), whatever their revision


def _time(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AnalysisRun:
    """One analysis under way: an ``analysis`` step (key ``step-N``) or the background one."""

    key: str
    next_at: float  # when the next scrape is due (the first one is only a baseline)
    phases: tuple[str, ...] = ()
    last: tuple[Mapping[str, Any], ...] = ()  # the last measurements, as written to the status
    verdict: str = RUNNING

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> AnalysisRun:
        return cls(str(raw.get("key", "")), _time(raw.get("nextAt")) or 0.0, tuple(raw.get("phases") or ()),
                   tuple(raw.get("last") or ()), str(raw.get("verdict") or RUNNING))  # fmt: skip

    def to_status(self) -> dict[str, Any]:
        return {"key": self.key, "nextAt": timestamp(self.next_at), "phases": list(self.phases),
                "last": [dict(m) for m in self.last], "verdict": self.verdict,
                "runs": len(self.phases), "failures": self.phases.count(FAILED),
                "inconclusive": self.phases.count(INCONCLUSIVE)}  # fmt: skip


def due_analyses(status: Mapping[str, Any], now: float) -> list[str]:
    """Keys of the analyses whose scrape is due (the reconcile scrapes them before planning)."""
    rollout: Mapping[str, Any] = status.get("rollout") or {}
    if not rollout.get("revision") or rollout.get("aborted"):
        return []
    runs = [AnalysisRun.from_status(r) for r in (rollout.get("analysis") or {}).get("runs") or []]
    return [run.key for run in runs if run.verdict == RUNNING and run.next_at <= now]


@dataclass(frozen=True)
class State:
    """What the status remembers between reconciles (``status.rollout``, ``status.stable``, history)."""

    stable: str = ""  # Deployment name
    stable_revision: str = ""
    revision: str = ""  # the revision being rolled out; "" when none
    canary: str = ""  # its Deployment name
    attempt: int = 0
    step: int = 0
    step_started_at: float | None = None
    progress_at: float | None = None  # last time pod counts or the step moved
    progress_key: str = ""
    steps_hash: str = ""
    aborted: str = ""  # reason; "" when not aborted
    abort_message: str = ""
    promoting: bool = False  # promote full requested (canary) / promotion under way (blue-green)
    switched: bool = False  # blue-green: <name> already serves the new revision (post-promotion analysis)
    preview_ready_at: float | None = None
    scale_down: tuple[tuple[str, float], ...] = ()  # (Deployment, when) waiting out a scale-down delay
    history: tuple[Mapping[str, Any], ...] = ()
    analyses: tuple[AnalysisRun, ...] = ()

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> State:
        rollout: Mapping[str, Any] = status.get("rollout") or {}
        stable: Mapping[str, Any] = status.get("stable") or {}
        aborted: Mapping[str, Any] = rollout.get("aborted") or {}
        return cls(
            stable=str(stable.get("deployment") or status.get("deployment") or ""),
            stable_revision=str(stable.get("revision") or ""),
            revision=str(rollout.get("revision") or ""),
            canary=str(rollout.get("deployment") or ""),
            attempt=int(rollout.get("attempt") or 0),
            step=int(rollout.get("step") or 0),
            step_started_at=_time(rollout.get("stepStartedAt")),
            progress_at=_time(rollout.get("lastProgressAt")),
            progress_key=str(rollout.get("progressKey") or ""),
            steps_hash=str(rollout.get("stepsHash") or ""),
            aborted=str(aborted.get("reason") or ""),
            abort_message=str(aborted.get("message") or ""),
            promoting=bool(rollout.get("promoting")),
            switched=bool(rollout.get("switched")),
            preview_ready_at=_time(rollout.get("previewReadyAt")),
            scale_down=tuple(
                (str(item.get("deployment")), _time(item.get("at")) or 0.0)
                for item in rollout.get("scaleDown") or status.get("scaleDown") or []
            ),
            history=tuple(status.get("history") or ()),
            analyses=tuple(
                AnalysisRun.from_status(r) for r in (rollout.get("analysis") or {}).get("runs") or []
            ),
        )

    def rollout_status(self) -> dict[str, Any] | None:
        """``status.rollout``; None when no rollout is under way and nothing waits for a delay."""
        out: dict[str, Any] = {}
        if self.revision:
            out.update(revision=self.revision, deployment=self.canary, attempt=self.attempt, step=self.step,
                       stepsHash=self.steps_hash, progressKey=self.progress_key)  # fmt: skip
            if self.step_started_at is not None:
                out["stepStartedAt"] = timestamp(self.step_started_at)
            if self.progress_at is not None:
                out["lastProgressAt"] = timestamp(self.progress_at)
            if self.aborted:
                out["aborted"] = {"reason": self.aborted, "message": self.abort_message}
            if self.promoting:
                out["promoting"] = True
            if self.switched:
                out["switched"] = True
            if self.preview_ready_at is not None:
                out["previewReadyAt"] = timestamp(self.preview_ready_at)
            if self.analyses:
                out["analysis"] = {"runs": [run.to_status() for run in self.analyses]}
        if self.scale_down:
            out["scaleDown"] = [{"deployment": n, "at": timestamp(t)} for n, t in self.scale_down]
        return out or None


# -------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class CapacityDecision:
    """How a rollout of GPU pods makes room: Surge (new pods fit beside the old), Swap (a stable pod goes
    first, within maxUnavailable) or Wait (neither is possible)."""

    mode: str
    free_gpus: int
    reason: str

    @property
    def constrained(self) -> bool:
        return self.mode == WAIT


SURGE, SWAP, WAIT = "Surge", "Swap", "Wait"


def capacity_decision(spec: ModelServiceSpec, observed: RolloutObserved, surge: int,
                      unavailable: int) -> tuple[int, int, CapacityDecision | None]:  # fmt: skip
    """(surge, unavailable) the rollout may use given the free GPUs, and the decision to report."""
    gpu, free, n = spec.gpu, observed.gpu_free, spec.replicas
    if gpu is None or free is None:
        return surge, unavailable, None
    what = f"{gpu.count} {gpu.resource_name}" + (f" of {gpu.product}" if gpu.product else "")
    raw_unavailable = min(n, _percent_of(spec.rollout.max_unavailable, n, round_up=False))
    policy = spec.rollout.capacity_policy
    if policy == "Surge":
        return surge, unavailable, CapacityDecision(SURGE, free.gpus, "capacityPolicy Surge: new pods are "
                                                    "created whether or not a GPU is free")  # fmt: skip
    if policy == "Swap" or surge == 0:
        why = "capacityPolicy Swap" if policy == "Swap" else "maxSurge is 0"
        return 0, max(1, raw_unavailable), CapacityDecision(SWAP, free.gpus, f"{why}: a stable pod makes room "
                                                            "before each new one")  # fmt: skip
    # Pods beyond N that can run now: ours already bound plus what still fits, minus N.
    fits = max(0, observed.scheduled_pods + free.pods - n)
    if fits >= 1:
        return (
            min(surge, fits),
            unavailable,
            CapacityDecision(
                SURGE, free.gpus, f"{free.gpus} {gpu.resource_name} free for new pods ({what} each)"
            ),
        )
    if raw_unavailable >= 1:
        return 0, raw_unavailable, CapacityDecision(
            SWAP, free.gpus, f"needs {what} per pod, {free.gpus} free: a stable pod makes room first "
            f"(maxUnavailable {raw_unavailable})")  # fmt: skip
    return (
        0,
        0,
        CapacityDecision(
            WAIT,
            free.gpus,
            f"needs {what} per pod, {free.gpus} free; allow maxUnavailable >= 1 or free a GPU",
        ),
    )


@dataclass(frozen=True)
class Plan:
    replicas: Mapping[str, int]  # Deployment name -> spec.replicas, for every Deployment kept
    delete: tuple[str, ...]  # Deployments to delete
    stable: str
    stable_revision: str
    canary: str  # the Deployment being rolled out; "" when none
    canary_revision: str
    main_revision: str | None  # what <name> selects: one revision, or None for all of them
    stable_service_revision: str
    canary_service_revision: str  # <name>-canary (canary) or <name>-preview (blue-green)
    route_weight: int | None  # the canary weight to write into the HTTPRoute; None: no route
    desired_weight: int
    actual_weight: int
    state: State
    phase: str
    reason: str
    message: str
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()
    capacity: CapacityDecision | None = None

    @property
    def rolling_out(self) -> bool:
        return bool(self.canary)


# ----------------------------------------------------------------------------------- replica maths


def _percent_of(value: int | str, n: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    fraction = int(value.rstrip("%")) * n / 100
    return math.ceil(fraction) if round_up else math.floor(fraction)


def fenceposts(max_surge: int | str, max_unavailable: int | str, n: int) -> tuple[int, int]:
    """(surge, unavailable) in pods, as Kubernetes resolves them: surge rounds up, unavailable down.

    Both resolving to 0 (a percentage of few replicas) would stall everything: unavailable becomes 1.
    """
    surge = _percent_of(max_surge, n, round_up=True)
    unavailable = _percent_of(max_unavailable, n, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, n)


def _tied(weight: int, total: int) -> bool:
    return math.modf(total * weight / 100)[0] == 0.5


def approximate_counts(n: int, weight: int, surge: int) -> tuple[int, int]:
    """(canary, stable) whose ratio is closest to ``weight``; the total is n, or n+1 when surge allows.

    For 0 < weight < 100 with 2+ pods (surge included) neither side is 0; a tie rounds the canary up.
    """
    if n == 0:
        return 0, 0
    ceil_count = math.ceil(n * weight / 100)
    floor_count = math.floor(n * weight / 100)
    zero_allowed = weight in (0, 100) or (n == 1 and surge == 0)
    options: list[tuple[int, int]] = []
    if ceil_count < n or zero_allowed:
        options.append((ceil_count, n))
    if not _tied(weight, n) and (floor_count != 0 or zero_allowed):
        options.append((floor_count, n))
    if surge > 0:
        options.append((ceil_count, n + 1))
        if not _tied(weight, n + 1) and (floor_count != 0 or zero_allowed):
            options.append((floor_count, n + 1))
    if not options:
        return 0, n
    best = min(options, key=lambda o: abs(o[0] * 100 / o[1] - weight))  # first of equals wins
    return best[0], best[1] - best[0]


def _for_scale_down(w: Workload | None, ignore_availability: bool) -> int:
    if w is None:
        return 0
    if w.replicas < w.available or ignore_availability:
        return w.replicas  # pods above spec are going anyway; never count them as staying available
    return w.available


def _scale_down_to(w: Workload | None, desired: int, budget: int, current: int) -> int:
    if w is not None and w.replicas > desired:
        return max(desired, w.replicas - budget)
    return current


def _within_limits(drain: Workload | None, adjust: Workload | None, drain_count: int, adjust_count: int,
                   max_total: int, min_available: int) -> tuple[int, int]:  # fmt: skip
    """Trim ``adjust`` to the surge bound without taking availability below the floor (Argo's rule)."""
    over = max(0, adjust_count + drain_count - max_total)
    available = min(drain.available, drain_count) if drain is not None else 0
    if adjust is not None:
        adjust_count -= over
        available += min(adjust.available, adjust_count)
        lost = max(0, adjust.available - adjust_count)
        adjust_count += min(lost, max(0, min_available - available))
        drain_count -= max(0, adjust_count + drain_count - max_total)
    return drain_count, adjust_count


def basic_canary_counts(n: int, weight: int, surge: int, unavailable: int, canary: Workload,
                        stable: Workload | None, others: Sequence[Workload] = ()) -> tuple[int, int]:  # fmt: skip
    """(canary, stable) pod counts for one reconcile of a canary without a router.

    Moves toward :func:`approximate_counts` by at most what maxSurge and maxUnavailable allow now,
    scaling the stable up before the canary, and nothing down while other revisions still have pods.
    """
    desired_canary, desired_stable = approximate_counts(n, weight, surge)
    canary_count = canary.replicas
    stable_count = stable.replicas if stable is not None else 0
    if stable is None:
        desired_canary, desired_stable = n, 0
    max_total = n + surge
    total = sum(o.replicas for o in others) + canary.replicas + stable_count
    room = max_total - total
    if stable is not None and stable.replicas < desired_stable and room > 0:
        stable_count = min(desired_stable, stable.replicas + room)
        room -= stable_count - stable.replicas
    if canary.replicas < desired_canary and room > 0:
        canary_count = min(desired_canary, canary.replicas + room)
    if sum(o.replicas for o in others) > 0:
        return canary_count, stable_count  # older revisions go first
    min_available = n - unavailable
    increasing = desired_canary >= canary.replicas
    removable = _for_scale_down(canary, not increasing) + _for_scale_down(stable, increasing)
    if removable <= min_available:
        return canary_count, stable_count
    budget = removable - min_available
    if not increasing:
        canary_count = _scale_down_to(canary, desired_canary, budget, canary_count)
        canary_count, stable_count = _within_limits(
            canary, stable, canary_count, stable_count, max_total, min_available
        )
    elif stable is not None:
        stable_count = _scale_down_to(stable, desired_stable, budget, stable_count)
        stable_count, canary_count = _within_limits(
            stable, canary, stable_count, canary_count, max_total, min_available
        )
    return canary_count, stable_count


def weight_replicas(n: int, weight: int) -> int:
    return math.ceil(n * weight / 100)


def drain_others(others: Sequence[Workload], available_kept: int, min_available: int) -> dict[str, int]:
    """Replicas for revisions on their way out: unavailable pods go at once, available ones only while
    the pods that stay keep ``min_available`` available."""
    budget = max(0, available_kept + sum(o.available for o in others) - min_available)
    counts: dict[str, int] = {}
    for other in sorted(others, key=lambda o: o.available):
        keep = min(other.replicas, other.available)
        take = min(keep, budget)
        budget -= take
        counts[other.name] = keep - take
    return counts


# ------------------------------------------------------------------------------------------ steps


def set_weight_at(steps: Sequence[CanaryStep], index: int) -> int:
    """The weight in force at step ``index``: the last setWeight at or before it (100 past the end)."""
    if index >= len(steps):
        return 100
    for step in reversed(steps[: index + 1]):
        if step.set_weight is not None:
            return step.set_weight
    return 0


def steps_hash(steps: Sequence[CanaryStep]) -> str:
    return hashlib.sha256(json.dumps([repr(s) for s in steps]).encode()).hexdigest()[:10]


@dataclass
class _Draft:
    """The plan being worked out (mutable while ``plan`` runs)."""

    state: State
    replicas: dict[str, int] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    phase: str = PROGRESSING
    reason: str = ROLLING_OUT
    message: str = ""
    requeue: list[float] = field(default_factory=list)
    desired_weight: int = 0
    route_weight: int | None = None
    capacity: CapacityDecision | None = None
    batch: bool = False  # blue-green promotion in batches: <name> selects both revisions meanwhile

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def wait(self, seconds: float) -> None:
        self.requeue.append(max(1.0, seconds))


def _history(state: State, revision: str, outcome: str, now: float) -> State:
    entry = {"revision": revision, "outcome": outcome, "at": timestamp(now)}
    return replace(state, history=(*state.history, entry)[-HISTORY_LIMIT:])


def _pods_message(w: Workload, want: int, what: str) -> str:
    missing = max(0, want - w.available)
    return f"waiting for {missing} {what} pod{'s' if missing != 1 else ''} to become ready ({w.available}/{want})"


def _at(w: Workload | None, count: int) -> bool:
    """The Deployment has exactly ``count`` pods asked for, and that many available (or none exists at 0)."""
    if w is None:
        return count == 0
    return w.settled and w.replicas == count and w.available >= count and w.pods <= count


# ------------------------------------------------------------------------------------------- plan


def plan(spec: ModelServiceSpec, observed: RolloutObserved, now: float) -> Plan:
    n = spec.replicas
    rollout = spec.rollout
    surge, unavailable = fenceposts(rollout.max_surge, rollout.max_unavailable, n)
    min_available = n - unavailable
    by_name = {w.name: w for w in observed.workloads}
    desired = observed.desired_name
    state = State.from_status(observed.previous)

    # Which Deployment serves now: the recorded stable one; else (first reconcile, lost status, the
    # previous operator's single Deployment) the one with the most available pods; else the new one.
    stable_name = state.stable if state.stable in by_name else ""
    if not stable_name:
        candidates = [w for w in observed.workloads if w.name != desired]
        stable_name = max(candidates, key=lambda w: (w.available, w.replicas)).name if candidates else desired
    stable = by_name.get(stable_name)
    stable_revision = stable.revision if stable is not None else observed.desired_revision
    state = replace(state, stable=stable_name, stable_revision=stable_revision)
    draft = _Draft(state)
    # Old stables waiting out their scale-down delay keep their pods until then.
    waiting = {name: at for name, at in state.scale_down if name in by_name and name != desired}
    draft.state = replace(draft.state, scale_down=tuple(waiting.items()))

    if desired == stable_name:
        return _steady(spec, observed, now, draft, surge, min_available, waiting)

    canary = by_name.get(desired) or Workload(desired, observed.desired_revision, 0)
    state = draft.state
    if state.revision != observed.desired_revision or state.canary != desired:
        if state.revision and not state.aborted and state.canary in by_name:
            state = _history(state, state.revision, "Superseded", now)
            draft.event(
                "Normal",
                ROLLOUT_SUPERSEDED,
                f"Revision {state.revision} superseded by {observed.desired_revision}",
            )
        state = replace(state, revision=observed.desired_revision, canary=desired, attempt=0, step=0,
                        step_started_at=now, progress_at=now, progress_key="", aborted="", abort_message="",
                        promoting=False, switched=False, preview_ready_at=None, analyses=())  # fmt: skip
        draft.event("Normal", ROLLOUT_STARTED, f"Rolling out revision {observed.desired_revision} "
                    f"({rollout.strategy}) over stable revision {stable_revision}")  # fmt: skip

    # Moving onto an equal pod template under a new name (adoption) never needs steps or a preview.
    same_pods = stable_revision == observed.desired_revision
    strategy = "rolling" if same_pods else rollout.strategy
    steps = rollout.canary.steps if strategy == "canary" else ()
    digest = steps_hash(steps)
    if state.steps_hash and state.steps_hash != digest and strategy == "canary":
        state = replace(state, step=0, step_started_at=now)  # the steps changed: start them again
    state = replace(state, steps_hash=digest)

    # Controls from the spec, each acting once on the revision and attempt it names.
    retry, abort, promote = rollout.retry, rollout.abort, rollout.promote
    revision = observed.desired_revision
    if retry and retry.revision == revision and retry.attempt > state.attempt:
        state = replace(state, attempt=retry.attempt, step=0, step_started_at=now, progress_at=now,
                        aborted="", abort_message="", promoting=False, switched=False, preview_ready_at=None, analyses=())  # fmt: skip
        draft.event("Normal", ROLLOUT_RETRIED, f"Retrying revision {revision} (attempt {retry.attempt})")
    if abort and abort.revision == revision and abort.attempt == state.attempt and not state.aborted:
        state = replace(state, aborted=ROLLOUT_ABORTED, switched=False,
                        abort_message=f"Revision {revision} aborted by spec.rollout.abort; all traffic is back on "
                                      f"stable revision {stable_revision}")  # fmt: skip
        state = _history(state, revision, "Aborted", now)
        draft.event("Warning", ROLLOUT_ABORTED, state.abort_message)
    approved_step = -1
    if promote and promote.revision == revision and promote.attempt == state.attempt and not state.aborted:
        if promote.full and not state.promoting:
            state = replace(state, promoting=True)
            draft.event(
                "Normal", ROLLOUT_PROMOTED, f"Revision {revision} promoted fully by spec.rollout.promote"
            )
        approved_step = promote.step if promote.step is not None else -1
    draft.state = state

    if strategy == "blueGreen":
        _blue_green(spec, observed, now, draft, canary, stable, approved_step, waiting)
    else:
        if not (rollout.canary.http_route and steps):  # a routed canary sizes the stable by the weight
            surge, unavailable, draft.capacity = capacity_decision(spec, observed, surge, unavailable)
            _capacity_event(draft, observed)
        _canary(spec, observed, now, draft, canary, stable, steps, approved_step, surge, unavailable, waiting)
    return _finish(spec, observed, now, draft, by_name)


def _steady(spec: ModelServiceSpec, observed: RolloutObserved, now: float, draft: _Draft, surge: int,
            min_available: int, waiting: Mapping[str, float]) -> Plan:  # fmt: skip
    """No rollout: the stable revision at N; any other revision drains (a reverted canary, an old stable)."""
    n = spec.replicas
    state = draft.state
    by_name = {w.name: w for w in observed.workloads}
    abandoned = state.revision and state.canary != observed.desired_name and state.canary in by_name
    if abandoned and not state.aborted:
        state = _history(state, state.revision, "Superseded", now)
        draft.event("Normal", ROLLOUT_SUPERSEDED,
                    f"Revision {state.revision} abandoned: the spec is back on revision {state.stable_revision}")  # fmt: skip
    draft.state = replace(state, revision="", canary="", attempt=0, step=0, step_started_at=None, progress_at=None,
                          progress_key="", steps_hash="", aborted="", abort_message="", promoting=False,
                          switched=False, preview_ready_at=None, analyses=())  # fmt: skip
    stable = by_name.get(observed.desired_name)
    current = stable.replicas if stable is not None else 0
    others = [w for w in observed.workloads if w.name != observed.desired_name]
    total = current + sum(o.replicas for o in others)
    count = n if current >= n else min(n, current + max(0, n + surge - total))
    draft.replicas[observed.desired_name] = count
    _drain(spec, draft, others, min(count, stable.available if stable else 0), min_available, now, waiting)
    draft.desired_weight = 0
    if spec.rollout.strategy == "canary" and spec.rollout.canary.http_route:
        draft.route_weight = 0  # both Services select the stable revision; the route sends it everything
    if stable is not None and _at(stable, n) and not any(o.pods or o.replicas for o in others):
        draft.phase, draft.reason = HEALTHY, c.ROLLOUT_COMPLETE
        draft.message = f"Revision {state.stable_revision} serves all traffic"
    elif stable is None or not _at(stable, n):
        draft.message = _pods_message(stable or Workload("", "", 0), n, "stable")
    else:
        draft.message = f"Scaling down {', '.join(o.name for o in others if o.pods or o.replicas)}"
    return _finish(spec, observed, now, draft, by_name)


def _drain(spec: ModelServiceSpec, draft: _Draft, others: Sequence[Workload], available_kept: int,
           min_available: int, now: float, waiting: Mapping[str, float]) -> None:  # fmt: skip
    """Scale down and delete Deployments that no longer serve; those in a scale-down delay wait."""
    draining = []
    for other in others:
        at = waiting.get(other.name)
        if at is not None and at > now:
            draft.replicas[other.name] = other.replicas
            draft.wait(at - now)
            available_kept += other.available
            continue
        draining.append(other)
    for name, count in drain_others(draining, available_kept, min_available).items():
        other = next(o for o in draining if o.name == name)
        if count == 0 and other.pods == 0 and other.replicas == 0:
            draft.delete.append(name)
        else:
            draft.replicas[name] = count
    draft.state = replace(
        draft.state, scale_down=tuple((n, t) for n, t in draft.state.scale_down if n in draft.replicas)
    )


def _advance(draft: _Draft, steps: Sequence[CanaryStep], now: float, why: str) -> None:
    state = draft.state
    step = steps[state.step]
    draft.event("Normal", STEP_COMPLETED, f"Step {state.step + 1}/{len(steps)} {step.describe()} {why}")
    analyses = tuple(run for run in state.analyses if run.key != f"step-{state.step}")
    draft.state = replace(state, step=state.step + 1, step_started_at=now, progress_at=now, analyses=analyses)


def _analysis_limits(analysis: AnalysisSpec, background: bool) -> Limits:
    return Limits(count=sys.maxsize if background else analysis.count, failure_limit=analysis.failure_limit,
                  inconclusive_limit=analysis.inconclusive_limit,
                  consecutive_error_limit=analysis.consecutive_error_limit)  # fmt: skip


def _run_analysis(spec: ModelServiceSpec, observed: RolloutObserved, draft: _Draft, key: str, now: float,
                  background: bool = False) -> AnalysisRun:  # fmt: skip
    """Start or continue the analysis ``key``, folding in what was scraped for it in this reconcile
    (nothing the first time: that scrape is the baseline the next one is measured against)."""
    analysis = spec.rollout.analysis
    runs = {run.key: run for run in draft.state.analyses}
    run = runs.get(key) or AnalysisRun(key, next_at=now + analysis.initial_delay_seconds)
    if key in observed.measurements:
        measurement = observed.measurements[key]
        run = replace(run, next_at=now + analysis.interval_seconds)
        if measurement is not None:
            entry = {**measurement.to_status(), "at": timestamp(now)}
            run = replace(run, phases=(*run.phases, measurement.phase), last=(*run.last, entry)[-5:])
            kind = "Warning" if measurement.phase in (FAILED, ERROR) else "Normal"
            draft.event(kind, f"Analysis{measurement.phase}", f"{key}: {measurement.message}")
    run = replace(run, verdict=verdict(_analysis_limits(analysis, background), run.phases))
    runs[key] = run
    draft.state = replace(draft.state, analyses=tuple(runs.values()))
    if run.verdict == RUNNING:
        draft.wait(run.next_at - now)
    return run


def _analysis_stops(spec: ModelServiceSpec, run: AnalysisRun) -> bool:
    return run.verdict in (FAILED, ERROR) or (
        run.verdict == INCONCLUSIVE and spec.rollout.analysis.on_inconclusive == "Abort"
    )


def _abort_for_analysis(draft: _Draft, now: float, what: str, run: AnalysisRun) -> None:
    """Automatic rollback: the reason names the check, the numbers and the window."""
    state = draft.state
    telling = next(
        (m for m in reversed(run.last) if m.get("phase") != SUCCESSFUL), run.last[-1] if run.last else {}
    )
    message = (f"Analysis {what} {run.verdict.lower()}: {telling.get('message', 'no measurement')}; all traffic "
               f"is back on stable revision {state.stable_revision}")  # fmt: skip
    state = replace(state, aborted=ANALYSIS_FAILED, abort_message=message, switched=False)
    draft.state = _history(state, state.revision, "Aborted", now)
    draft.event("Warning", ANALYSIS_FAILED, message)


def _analysis_message(spec: ModelServiceSpec, run: AnalysisRun, now: float, background: bool) -> str:
    count = "" if background else f"/{spec.rollout.analysis.count}"
    last = f"; last: {run.last[-1].get('message', '')}" if run.last else ""
    when = "baseline scrape" if not run.phases and run.next_at <= now + spec.rollout.analysis.interval_seconds \
        and not run.last else f"measurement {len(run.phases) + 1}{count}"  # fmt: skip
    return f"{when} in {format_duration(max(0.0, run.next_at - now))}{last}"


def _canary(spec: ModelServiceSpec, observed: RolloutObserved, now: float, draft: _Draft, canary: Workload,
            stable: Workload | None, steps: Sequence[CanaryStep], approved_step: int, surge: int,
            unavailable: int, waiting: Mapping[str, float]) -> None:  # fmt: skip
    n = spec.replicas
    routed = bool(spec.rollout.canary.http_route) and bool(steps)
    others = [w for w in observed.workloads if w.name not in (canary.name, draft.state.stable)]

    def counts(weight: int, step: CanaryStep | None) -> tuple[int, int]:
        if draft.capacity is not None and draft.capacity.constrained:
            return canary.replicas, stable.replicas if stable is not None else 0  # no room: nothing moves
        if not routed:
            return basic_canary_counts(n, weight, surge, unavailable, canary, stable, others)
        scale = step.set_canary_scale if step is not None else None
        want = weight_replicas(n, weight)
        if scale is not None and scale.replicas is not None:
            want = min(scale.replicas, n)
        elif scale is not None and scale.weight is not None:
            want = weight_replicas(n, scale.weight)
        actual = observed.route_weight if observed.route_weight is not None else 0
        # The stable shrinks only after the route moved traffic off it.
        return want, max(weight_replicas(n, 100 - weight), weight_replicas(n, 100 - actual))

    def scale_step(index: int) -> CanaryStep | None:
        """The setCanaryScale in force: the last one at or before ``index``, until matchTrafficWeight;
        none once the steps are done (the canary goes to full size)."""
        if index >= len(steps):
            return None
        for step in reversed(steps[: index + 1]):
            if step.set_canary_scale is not None:
                return None if step.set_canary_scale.match_traffic_weight else step
        return None

    def abort_counts() -> tuple[int, int]:
        # With a route, the canary keeps its pods until the route has moved its traffic back.
        still_routed = (observed.route_weight or 0) > 0
        if routed:
            return canary.replicas if still_routed else 0, n
        return basic_canary_counts(n, 0, surge, unavailable, canary, stable, others)

    state = draft.state
    weight = 0
    if not state.aborted:
        if state.promoting:
            draft.state = state = replace(state, step=len(steps))
        while True:
            state = draft.state
            weight = set_weight_at(steps, state.step)
            canary_count, stable_count = counts(weight, scale_step(state.step))
            if state.step >= len(steps):
                break
            step = steps[state.step]
            label = f"step {state.step + 1}/{len(steps)} {step.describe()}"
            if approved_step >= state.step:
                _advance(draft, steps, now, "promoted by spec.rollout.promote")
                continue
            if step.set_weight is not None or step.set_canary_scale is not None:
                route_ok = not routed or observed.route_weight == weight
                if (
                    _at(canary, canary_count)
                    and _at(stable, stable_count)
                    and route_ok
                    and not _has_pods(others)
                ):
                    _advance(draft, steps, now, "reached")
                    continue
                draft.message = f"{label}: " + (
                    f"waiting for GPU capacity: {draft.capacity.reason}" if draft.capacity and draft.capacity.constrained
                    else _pods_message(canary, canary_count, "canary") if not _at(canary, canary_count)
                    else "waiting for the route's weight" if not route_ok
                    else "waiting for the stable revision to scale to "
                    f"{stable_count} and older revisions to drain"
                )  # fmt: skip
                break
            if step.pause and step.pause_seconds is not None:
                left = (state.step_started_at or now) + step.pause_seconds - now
                if left <= 0:
                    _advance(draft, steps, now, "elapsed")
                    continue
                draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
                draft.message = f"{label}: {format_duration(left)} left"
                draft.wait(left)
                break
            if step.analysis:
                run = _run_analysis(spec, observed, draft, f"step-{state.step}", now)
                if run.verdict == SUCCESSFUL:
                    _advance(draft, steps, now, f"passed ({len(run.phases)} measurements)")
                    continue
                if _analysis_stops(spec, run):
                    _abort_for_analysis(draft, now, f"at step {state.step + 1}", run)
                    break
                if run.verdict == INCONCLUSIVE:
                    draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
                    draft.message = (f"{label}: inconclusive ({run.last[-1].get('message', '')}); "
                                     f"kubectl modelservice promote {spec.name} passes it, abort fails it")  # fmt: skip
                    break
                draft.message = f"{label}: {_analysis_message(spec, run, now, background=False)}"
                break
            draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
            draft.message = f"{label}: paused until promoted (kubectl modelservice promote {spec.name})"
            break
        if spec.rollout.analysis.background and steps and draft.state.step >= 1 and not draft.state.aborted:
            run = _run_analysis(spec, observed, draft, "background", now, background=True)
            if _analysis_stops(spec, run):
                _abort_for_analysis(draft, now, "in the background", run)
            elif run.verdict == INCONCLUSIVE and draft.phase != PAUSED:
                draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
                draft.message = (f"background analysis inconclusive ({run.last[-1].get('message', '')}); "
                                 f"kubectl modelservice promote {spec.name} --full or abort")  # fmt: skip
        if routed:
            # Traffic moves only to canary pods that are ready for it.
            current = observed.route_weight if observed.route_weight is not None else 0
            ready_for = weight if canary.available >= weight_replicas(n, weight) else min(current, weight)
            draft.route_weight = ready_for
    state = draft.state
    if state.aborted:
        weight = 0
        canary_count, stable_count = abort_counts()
        draft.phase, draft.reason, draft.message = DEGRADED, state.aborted, state.abort_message
        draft.route_weight = 0 if routed else None

    draft.desired_weight = weight
    draft.replicas[canary.name] = canary_count
    if stable is not None:
        draft.replicas[stable.name] = stable_count
    kept_available = min(canary_count, canary.available) + (
        min(stable_count, stable.available) if stable else 0
    )
    _drain(spec, draft, others, kept_available, n - unavailable, now, waiting)

    state = draft.state
    if not state.aborted and state.step >= len(steps):
        label = "promotion" if steps else "rolling update"
        routed_done = not routed or observed.route_weight == 100
        if _at(canary, n) and routed_done:
            _promote(spec, draft, now, canary, stable, routed)
        elif not draft.message:
            draft.message = f"{label}: " + (
                f"waiting for GPU capacity: {draft.capacity.reason}" if draft.capacity and draft.capacity.constrained
                else _pods_message(canary, n, "new") if not _at(canary, n) else "waiting for the route's weight"
            )  # fmt: skip


def _capacity_event(draft: _Draft, observed: RolloutObserved) -> None:
    """An Event when the capacity decision changes (Surge -> Swap -> Wait ...), so it stays on record."""
    decision = draft.capacity
    previous = (observed.previous.get("capacity") or {}).get("mode")
    if decision is not None and decision.mode != previous:
        kind = "Warning" if decision.constrained else "Normal"
        draft.event(kind, c.GPU_CAPACITY, f"{decision.mode}: {decision.reason}")


def _has_pods(workloads: Sequence[Workload]) -> bool:
    return any(w.pods or w.replicas for w in workloads)


def _promote(spec: ModelServiceSpec, draft: _Draft, now: float, new: Workload, old: Workload | None,
             delayed: bool) -> None:  # fmt: skip
    """The new revision becomes stable; the old one drains now or after the scale-down delay."""
    state = draft.state
    delay = (
        spec.rollout.blue_green.scale_down_delay_seconds if spec.rollout.strategy == "blueGreen"
        else spec.rollout.canary.scale_down_delay_seconds
    )  # fmt: skip
    scale_down = state.scale_down
    if old is not None and delayed and delay > 0 and old.replicas > 0:
        scale_down = (*scale_down, (old.name, now + delay))
        draft.wait(delay)
    state = _history(state, state.revision, "Promoted", now)
    draft.event("Normal", ROLLOUT_PROMOTED, f"Revision {state.revision} is stable"
                + (f"; revision {state.stable_revision} scales down" if old is not None else ""))  # fmt: skip
    draft.state = replace(state, stable=new.name, stable_revision=new.revision, revision="", canary="",
                          attempt=0, step=0, step_started_at=None, progress_at=None, progress_key="",
                          steps_hash="", promoting=False, switched=False, preview_ready_at=None, scale_down=scale_down,
                          analyses=())  # fmt: skip
    draft.phase, draft.reason = PROGRESSING, ROLLING_OUT
    draft.message = f"Revision {new.revision} promoted" + (
        f"; scaling down {old.name}" if old is not None else ""
    )
    draft.route_weight = 0 if draft.route_weight is not None else None  # both Services now select it
    draft.desired_weight = 0
    if old is not None and not delayed:
        draft.replicas[old.name] = min(draft.replicas.get(old.name, old.replicas), old.replicas)
    draft.wait(1.0)  # look again at once: the Services switch on the next pass


def _blue_green(spec: ModelServiceSpec, observed: RolloutObserved, now: float, draft: _Draft,
                preview: Workload, active: Workload | None, approved_step: int,
                waiting: Mapping[str, float]) -> None:  # fmt: skip
    n = spec.replicas
    bg = spec.rollout.blue_green
    state = draft.state
    others = [w for w in observed.workloads if w.name not in (preview.name, state.stable)]
    if active is not None:
        draft.replicas[active.name] = max(n, 0)
    if state.aborted:
        draft.replicas[preview.name] = 0
        draft.phase, draft.reason, draft.message = DEGRADED, state.aborted, state.abort_message
    else:
        size = min(bg.preview_replicas or n, n)
        room = _preview_room(spec, observed, active)
        if room is not None and room < size:
            # Too few GPUs for the whole preview: preview what fits, promote in batches later.
            wanted, size = size, room
            draft.capacity = CapacityDecision(
                WAIT if size == 0 else SURGE, observed.gpu_free.gpus if observed.gpu_free else 0,
                f"preview at {size} of {wanted} pods: no GPU free for more; promotion will move the rest in "
                "batches of maxUnavailable",
            )  # fmt: skip
        ready = size > 0 and (_at(preview, size) or (state.promoting and preview.available >= size))
        if ready and state.preview_ready_at is None:
            state = replace(state, preview_ready_at=now, progress_at=now)
        promote_now = approved_step >= 0 or state.promoting
        draft.state = state
        held = ready and not promote_now and bg.pre_promotion_analysis
        if held:
            # The preview must pass before it may be promoted (a promote by hand passes it too).
            held = _pre_promotion_holds(spec, observed, draft, preview, size, now)
            state = draft.state
        if not held:
            if ready and not promote_now and bg.auto_promotion_enabled:
                left = (state.preview_ready_at or now) + bg.auto_promotion_seconds - now
                if left <= 0:
                    promote_now = True
                    draft.event("Normal", ROLLOUT_PROMOTED, f"Revision {state.revision} auto-promoted")
                else:
                    draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
                    draft.message = f"preview ready; auto-promotion in {format_duration(left)}"
                    draft.wait(left)
            if promote_now and not state.promoting:
                state = replace(state, promoting=True)
            draft.state = state
            target = n if state.promoting else size
            draft.replicas[preview.name] = target
            # Once the old revision has started handing its GPUs over, the batches go on to the end even
            # when the GPUs it freed would now fit a full preview: switching back would take them away again.
            handing_over = active is not None and active.replicas < n
            if state.promoting and not _at(preview, n) and ((room is not None and room < n) or handing_over):
                _promote_in_batches(spec, observed, draft, preview, active)
            elif state.promoting and _at(preview, n) and bg.post_promotion_analysis and active is not None:
                # Clients move to the new revision now; the old one stays at full size until it passes.
                draft.state = replace(draft.state, switched=True)
                run = _run_analysis(spec, observed, draft, "post-promotion", now)
                if run.verdict == SUCCESSFUL or approved_step >= 1:
                    _promote(spec, draft, now, preview, active, delayed=bool(active.replicas))
                elif _analysis_stops(spec, run):
                    _abort_for_analysis(draft, now, "after promotion", run)
                    draft.replicas[preview.name] = 0  # clients are back on the old revision at once
                    draft.phase, draft.reason, draft.message = (
                        DEGRADED,
                        draft.state.aborted,
                        draft.state.abort_message,
                    )
                elif run.verdict == INCONCLUSIVE:
                    draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
                    draft.message = (f"post-promotion analysis inconclusive ({run.last[-1].get('message', '')}); "
                                     f"kubectl modelservice promote {spec.name} passes it, abort switches back")  # fmt: skip
                else:
                    draft.message = (
                        f"post-promotion analysis: {_analysis_message(spec, run, now, background=False)}"
                    )
            elif state.promoting and _at(preview, n):
                _promote(spec, draft, now, preview, active, delayed=bool(active and active.replicas))
            elif state.promoting:
                draft.message = "promotion: " + _pods_message(preview, n, "new")
            elif not ready:
                draft.message = "preview: " + _pods_message(preview, size, "preview")
            elif not bg.auto_promotion_enabled:
                draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
                draft.message = f"preview ready behind its Service; paused until promoted (kubectl modelservice promote {spec.name})"
    kept = preview.available + (active.available if active else 0)
    _drain(spec, draft, others, kept, n, now, waiting)


def _pre_promotion_holds(spec: ModelServiceSpec, observed: RolloutObserved, draft: _Draft, preview: Workload,
                         size: int, now: float) -> bool:  # fmt: skip
    """Run the pre-promotion analysis of a ready preview; True while (or because) it stops the promotion."""
    run = _run_analysis(spec, observed, draft, "pre-promotion", now)
    if run.verdict == SUCCESSFUL:
        return False
    if _analysis_stops(spec, run):
        _abort_for_analysis(draft, now, "before promotion", run)
        draft.replicas[preview.name] = 0
        draft.phase, draft.reason, draft.message = DEGRADED, draft.state.aborted, draft.state.abort_message
    elif run.verdict == INCONCLUSIVE:
        draft.replicas[preview.name] = size
        draft.phase, draft.reason = PAUSED, ROLLOUT_PAUSED
        draft.message = (f"pre-promotion analysis inconclusive ({run.last[-1].get('message', '')}); "
                         f"kubectl modelservice promote {spec.name} passes it, abort fails it")  # fmt: skip
    else:
        draft.replicas[preview.name] = size
        draft.message = f"pre-promotion analysis: {_analysis_message(spec, run, now, background=False)}"
    return True


def _needs(spec: ModelServiceSpec, observed: RolloutObserved) -> str:
    gpu = spec.gpu
    assert gpu is not None
    what = f"{gpu.count} {gpu.resource_name}" + (f" of {gpu.product}" if gpu.product else "")
    free = observed.gpu_free.gpus if observed.gpu_free else 0
    return f"needs {what} per pod, {free} free; allow maxUnavailable >= 1 or free a GPU"


def _preview_room(spec: ModelServiceSpec, observed: RolloutObserved, active: Workload | None) -> int | None:
    """How many preview pods can hold a GPU now (None: not limited by GPUs)."""
    if spec.gpu is None or observed.gpu_free is None or spec.rollout.capacity_policy != "Auto":
        return None
    bound_active = min(active.replicas, active.available) if active is not None else 0
    return max(0, observed.scheduled_pods + observed.gpu_free.pods - bound_active)


def _promote_in_batches(spec: ModelServiceSpec, observed: RolloutObserved, draft: _Draft, preview: Workload,
                        active: Workload | None) -> None:  # fmt: skip
    """Promotion without GPUs for a full-size preview: both revisions serve behind <name> while the old
    one gives up maxUnavailable pods at a time and the new one takes their GPUs."""
    n = spec.replicas
    unavailable = min(n, _percent_of(spec.rollout.max_unavailable, n, round_up=False))
    free = observed.gpu_free.gpus if observed.gpu_free else 0
    if unavailable < 1:
        draft.capacity = CapacityDecision(WAIT, free, _needs(spec, observed))
        draft.replicas[preview.name] = preview.replicas
        draft.message = f"promotion: waiting for GPU capacity: {draft.capacity.reason}"
        return
    preview_count, active_count = basic_canary_counts(n, 100, 0, unavailable, preview, active)
    if preview_count != preview.replicas:
        draft.event("Normal", PROMOTING_IN_BATCHES, f"Revision {draft.state.revision}: {preview_count}/{n} pods "
                    f"(GPUs handed over {unavailable} at a time)")  # fmt: skip
    draft.replicas[preview.name] = preview_count
    if active is not None:
        draft.replicas[active.name] = active_count
    draft.batch = True
    draft.capacity = CapacityDecision(
        SWAP, free, f"not enough GPUs for a full-size preview: promoting in batches of {unavailable}, both "
        "revisions serving meanwhile")  # fmt: skip
    draft.message = f"promotion in batches of {unavailable}: " + _pods_message(preview, n, "new")


def _finish(spec: ModelServiceSpec, observed: RolloutObserved, now: float, draft: _Draft,
            by_name: Mapping[str, Workload]) -> Plan:  # fmt: skip
    state = draft.state
    stable = by_name.get(state.stable)
    canary = by_name.get(state.canary) if state.canary else None
    # Progress: pod counts or the step moved; a pause or an abort is not "no progress".
    if state.revision:
        measured = sum(len(run.phases) for run in state.analyses)
        key = (
            f"{state.step}/{canary.available if canary else 0}/{stable.available if stable else 0}/{measured}"
        )
        if key != state.progress_key:
            state = replace(state, progress_key=key, progress_at=now)
        deadline = spec.rollout.progress_deadline_seconds
        stalled = draft.phase == PROGRESSING and (state.progress_at or now) + deadline <= now
        if stalled and not state.aborted:
            message = (f"Revision {state.revision} made no progress for {format_duration(deadline)}: "
                       f"{draft.message}")  # fmt: skip
            if spec.rollout.progress_deadline_abort:
                state = _history(replace(state, aborted=PROGRESS_DEADLINE, abort_message=message + "; aborted", switched=False),
                                 state.revision, "Aborted", now)  # fmt: skip
                draft.event("Warning", PROGRESS_DEADLINE, state.abort_message)
                draft.wait(1.0)
            draft.phase, draft.reason, draft.message = DEGRADED, PROGRESS_DEADLINE, message
        elif draft.phase == PROGRESSING and not state.aborted:
            draft.wait((state.progress_at or now) + deadline - now)
    draft.state = state

    strategy = spec.rollout.strategy
    canary_revision = state.revision if state.revision else ""
    in_flight = canary_revision if canary_revision and not state.aborted else ""
    canary_ready = canary.ready if canary else 0
    stable_ready = stable.ready if stable else 0
    if strategy == "blueGreen":
        main = None if draft.batch else state.stable_revision
        if state.switched and not state.aborted:
            main = state.revision  # post-promotion analysis: clients already on the new revision
        actual = 0
    else:
        main = None
        total = canary_ready + stable_ready
        actual = round(100 * canary_ready / total) if (total and in_flight) else 0
    if draft.route_weight is not None and observed.route_weight is not None:
        actual = observed.route_weight
    if draft.phase == PROGRESSING and not draft.message:
        draft.message = "rolling out"
    return Plan(
        replicas=dict(draft.replicas),
        delete=tuple(draft.delete),
        stable=state.stable,
        stable_revision=state.stable_revision,
        canary=state.canary,
        canary_revision=canary_revision,
        main_revision=main,
        stable_service_revision=state.stable_revision,
        canary_service_revision=in_flight or state.stable_revision,
        route_weight=draft.route_weight if spec.rollout.canary.http_route and strategy == "canary" else None,
        desired_weight=draft.desired_weight if in_flight else 0,
        actual_weight=actual,
        state=state,
        phase=draft.phase,
        reason=draft.reason,
        message=draft.message,
        requeue_after=min(draft.requeue) if draft.requeue else None,
        events=tuple(draft.events),
        capacity=draft.capacity if state.revision else None,
    )
