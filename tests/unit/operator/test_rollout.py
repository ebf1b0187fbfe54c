"""The rollout planner: replica maths as tables (Argo Rollouts' cases, our numbers), then step machines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from modelservice_operator.analysis import Measurement
from modelservice_operator.api import parse_spec
from modelservice_operator.capacity import Free
from modelservice_operator.rollout import (
    PAUSED,
    Plan,
    RolloutObserved,
    State,
    Workload,
    approximate_counts,
    basic_canary_counts,
    due_analyses,
    fenceposts,
    plan,
    timestamp,
)

NOW = 1_800_000_000.0

# name, N, weight, surge, unavailable, (stable spec, stable available), (canary spec, canary available),
# older (spec, available) or None, expected (stable, canary)
BASIC_CANARY_CASES = [
    ("extra_available_pods_above_spec_are_not_counted", 10, 100, 3, 0, (7, 8), (6, 3), None, (7, 6)),
    ("surge_pods_scale_the_canary_up", 10, 20, 2, 0, (10, 10), (0, 0), None, (10, 2)),
    ("surge_percentage_scales_the_canary_up", 10, 20, "20%", 0, (10, 10), (0, 0), None, (10, 2)),
    ("extra_stable_pods_scale_down_once_the_canary_is_up", 10, 20, "20%", 0, (10, 10), (2, 2), None, (8, 2)),
    ("never_past_max_surge", 10, 30, 2, 0, (10, 10), (0, 0), None, (10, 2)),
    ("max_unavailable_scales_the_stable_down_first", 10, 20, 0, 2, (10, 10), (0, 0), None, (8, 0)),
    ("max_unavailable_percentage", 10, 20, 0, "20%", (10, 10), (0, 0), None, (8, 0)),
    ("never_past_max_unavailable", 10, 30, 0, 2, (10, 10), (0, 0), None, (8, 0)),
    ("surge_and_unavailable_together", 10, 50, 2, 1, (10, 10), (0, 0), None, (9, 2)),
    ("weight_zero_scales_the_canary_to_zero", 10, 0, 1, 1, (10, 10), (1, 1), None, (10, 0)),
    ("weight_hundred_scales_the_stable_to_zero", 10, 100, 1, 1, (1, 1), (10, 10), None, (0, 10)),
    ("one_replica_small_weight_still_gets_a_canary_pod", 1, 20, 1, 0, (1, 1), (0, 0), None, (1, 1)),
    ("one_replica_large_weight_keeps_a_stable_pod", 1, 90, 1, 0, (1, 1), (0, 0), None, (1, 1)),
    ("one_replica_no_surge_below_half_keeps_all_on_stable", 1, 49, 0, 1, (1, 1), (0, 0), None, (1, 0)),
    ("one_replica_no_surge_above_half_moves_the_pod", 1, 51, 0, 1, (1, 1), (0, 0), None, (0, 0)),
    ("one_replica_no_surge_no_stable_pods_scales_the_canary", 1, 51, 0, 1, (0, 0), (0, 0), None, (0, 1)),
    ("stable_scales_up_before_the_canary", 10, 30, 1, 0, (1, 1), (0, 0), (3, 3), (7, 1)),
    ("canary_and_stable_scale_down_together", 10, 30, 0, 3, (8, 5), (4, 4), None, (7, 3)),
    ("unavailable_stable_pods_still_scale_down", 10, 100, 1, 0, (10, 2), (10, 8), None, (2, 9)),
    ("older_revisions_drain_before_anything_else_scales_down", 10, 30, 0, 1, (8, 6), (4, 2), (3, 3), (8, 4)),
]


@pytest.mark.parametrize(
    "n, weight, surge, unavailable, stable, canary, older, expected",
    [case[1:] for case in BASIC_CANARY_CASES],
    ids=[case[0] for case in BASIC_CANARY_CASES],
)
def test_basic_canary_counts_follow_argo_rollouts(
    n: int, weight: int, surge: int | str, unavailable: int | str, stable: tuple[int, int],
    canary: tuple[int, int], older: tuple[int, int] | None, expected: tuple[int, int],
) -> None:  # fmt: skip
    surge_pods, unavailable_pods = fenceposts(surge, unavailable, n)
    canary_count, stable_count = basic_canary_counts(
        n, weight, surge_pods, unavailable_pods,
        Workload("c", "c", canary[0], available=canary[1], pods=canary[0]),
        Workload("s", "s", stable[0], available=stable[1], pods=stable[0]),
        [Workload("o", "o", older[0], available=older[1], pods=older[0])] if older else [],
    )  # fmt: skip
    assert (stable_count, canary_count) == expected


@pytest.mark.parametrize(
    "n, weight, surge, expected",
    [
        (10, 10, 0, (1, 9)),
        (4, 10, 0, (1, 3)),  # never 0 for 0 < w < 100 with 2+ pods
        (4, 90, 0, (3, 1)),  # ... on either side
        (3, 50, 0, (2, 1)),  # a tie rounds the canary up
        (3, 50, 1, (2, 2)),  # surge allows the exact ratio with one more pod
        (2, 0, 1, (0, 2)),
        (2, 100, 1, (2, 0)),
        (0, 50, 1, (0, 0)),
    ],
)
def test_weights_map_to_the_closest_canary_and_stable_counts(
    n: int, weight: int, surge: int, expected: tuple[int, int]
) -> None:
    assert approximate_counts(n, weight, surge) == expected


def test_fenceposts_round_surge_up_and_unavailable_down_and_never_both_zero() -> None:
    assert fenceposts("25%", 0, 3) == (1, 0)
    assert fenceposts(0, "25%", 3) == (0, 1)  # 0.75 rounds down to 0, which would stall: 1
    assert fenceposts(2, 5, 3) == (2, 3)


# ------------------------------------------------------------------------------------ step machines


def ms(strategy: str = "canary", replicas: int = 4, image: str = "runtime:1", **rollout: Any) -> Any:
    body = {
        "metadata": {"name": "iris", "namespace": "default"},
        "spec": {"model": {"storageUri": "pvc://models/iris"}, "replicas": replicas,
                 "runtime": {"image": image}, "rollout": {"strategy": strategy, "maxSurge": 1, **rollout}},
    }  # fmt: skip
    return parse_spec(body)


class Cluster:
    """Deployments that do what the plan says; pods become available at once unless a revision is broken."""

    def __init__(self, *workloads: Workload) -> None:
        self.workloads = {w.name: w for w in workloads}
        self.status: dict[str, Any] = {}
        self.broken: set[str] = set()
        self.route_weight: int | None = None
        self.now = NOW
        self.plans: list[Plan] = []

    def step(self, spec: Any, revision: str, advance: float = 1.0) -> Plan:
        self.now += advance
        name = f"iris-{revision}"
        result = plan(spec, self.observed(spec, name, revision), self.now)
        self.apply(result, revision)
        if result.route_weight is not None:
            self.route_weight = result.route_weight
        s = result.state
        self.status = {"stable": {"deployment": s.stable, "revision": s.stable_revision},
                       "rollout": s.rollout_status() or {}, "history": list(s.history)}  # fmt: skip
        if result.capacity is not None:
            self.status["capacity"] = {"mode": result.capacity.mode}
        self.plans.append(result)
        return result

    def observed(self, spec: Any, name: str, revision: str) -> RolloutObserved:
        return RolloutObserved(list(self.workloads.values()), name, revision, self.status, self.route_weight)

    def apply(self, result: Plan, revision: str) -> None:
        for deployment, count in result.replicas.items():
            rev = self.workloads[deployment].revision if deployment in self.workloads else revision
            ready = 0 if rev in self.broken else count
            self.workloads[deployment] = Workload(
                deployment, rev, count, available=ready, ready=ready, pods=count
            )
        for deployment in result.delete:
            del self.workloads[deployment]

    def settle(self, spec: Any, revision: str, limit: int = 30, advance: float = 1.0) -> Plan:
        """Reconcile until nothing changes (a pause, a promotion wait, or done)."""
        last = self.step(spec, revision, advance)
        for _ in range(limit):
            before = (dict(self.workloads), last.state.step, last.phase, last.message, self.route_weight)
            last = self.step(spec, revision, advance)
            if (dict(self.workloads), last.state.step, last.phase, last.message, self.route_weight) == before:
                return last
        return last

    def counts(self) -> dict[str, int]:
        return {name: w.replicas for name, w in sorted(self.workloads.items())}


def stable_cluster(revision: str = "a", n: int = 4) -> Cluster:
    cluster = Cluster(Workload(f"iris-{revision}", revision, n, available=n, ready=n, pods=n))
    cluster.status = {"stable": {"deployment": f"iris-{revision}", "revision": revision}}
    return cluster


STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "60s"}}]


def test_canary_walks_its_steps_holds_at_pause_until_promoted_and_retires_the_old_revision() -> None:
    cluster = stable_cluster()
    spec = ms(canary={"steps": STEPS})
    paused = cluster.settle(spec, "b")
    assert cluster.counts() == {"iris-a": 3, "iris-b": 1}
    assert (paused.phase, paused.state.step, paused.desired_weight, paused.actual_weight) == (
        PAUSED,
        1,
        25,
        25,
    )
    assert "step 2/4 pause: paused until promoted" in paused.message
    for _ in range(5):  # time passes: still paused
        assert cluster.step(spec, "b", advance=600).state.step == 1

    promoted = ms(canary={"steps": STEPS}, promote={"revision": "b", "step": 1})
    timed = cluster.settle(promoted, "b")
    assert cluster.counts() == {"iris-a": 2, "iris-b": 2}
    assert (timed.state.step, timed.phase) == (3, PAUSED)
    left = timed.requeue_after or 0
    assert 0 < left <= 60 and timed.message == f"step 4/4 pause 1m: {int(left)}s left"

    # The same promote applied again does not approve the later pause; only time does.
    done = cluster.settle(promoted, "b", advance=61)
    assert cluster.counts() == {"iris-b": 4}
    assert done.stable_revision == "b" and not done.rolling_out
    assert [h["outcome"] for h in done.state.history] == ["Promoted"]
    reasons = [e.reason for p in cluster.plans for e in p.events]
    assert reasons.count("StepCompleted") == 4 and reasons.count("RolloutPromoted") == 1


def test_never_more_than_max_surge_extra_pods_and_never_fewer_available_than_allowed() -> None:
    cluster = stable_cluster(n=10)
    spec = ms(
        replicas=10, maxSurge=2, maxUnavailable=1, canary={"steps": [{"setWeight": 30}, {"setWeight": 80}]}
    )
    cluster.settle(spec, "b")
    for p in cluster.plans:
        assert sum(p.replicas.values()) <= 12
    assert cluster.counts() == {"iris-b": 10}


def test_abort_returns_every_pod_to_stable_and_a_retry_starts_the_steps_again() -> None:
    cluster = stable_cluster()
    cluster.settle(ms(canary={"steps": STEPS}), "b")
    aborted = cluster.settle(ms(canary={"steps": STEPS}, abort={"revision": "b"}), "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 0}
    assert (aborted.phase, aborted.reason, aborted.desired_weight) == ("Degraded", "RolloutAborted", 0)
    assert aborted.canary_service_revision == "a"  # <name>-canary back on stable too

    retried = cluster.settle(
        ms(canary={"steps": STEPS}, abort={"revision": "b"}, retry={"revision": "b", "attempt": 1}), "b"
    )
    assert (retried.state.attempt, retried.state.step, retried.phase) == (1, 1, PAUSED)
    assert cluster.counts() == {"iris-a": 3, "iris-b": 1}


def test_controls_for_another_revision_do_nothing() -> None:
    cluster = stable_cluster()
    result = cluster.settle(ms(canary={"steps": STEPS}, abort={"revision": "old"},
                               promote={"revision": "old", "full": True}), "b")  # fmt: skip
    assert (result.phase, result.state.step) == (PAUSED, 1)


def test_full_promotion_skips_the_remaining_steps() -> None:
    cluster = stable_cluster()
    cluster.settle(ms(canary={"steps": STEPS}), "b")
    cluster.settle(ms(canary={"steps": STEPS}, promote={"revision": "b", "full": True}), "b")
    assert cluster.counts() == {"iris-b": 4}


def test_a_new_revision_mid_rollout_supersedes_the_canary_and_starts_over() -> None:
    cluster = stable_cluster()
    cluster.settle(ms(canary={"steps": STEPS}), "b")
    result = cluster.settle(ms(canary={"steps": STEPS}, image="runtime:3"), "c")
    assert cluster.counts() == {"iris-a": 3, "iris-c": 1}
    assert (result.canary_revision, result.state.step) == ("c", 1)
    assert [h["outcome"] for h in result.state.history] == ["Superseded"]


def test_reverting_the_spec_to_stable_mid_rollout_drains_the_canary() -> None:
    cluster = stable_cluster()
    cluster.settle(ms(canary={"steps": STEPS}), "b")
    result = cluster.settle(ms(canary={"steps": STEPS}), "a")
    assert cluster.counts() == {"iris-a": 4}
    assert result.phase == "Healthy" and not result.rolling_out


def test_hpa_scaling_during_a_canary_keeps_the_ratio() -> None:
    cluster = stable_cluster()
    cluster.settle(ms(canary={"steps": STEPS}, promote={"revision": "b", "step": 1}), "b")
    assert cluster.counts() == {"iris-a": 2, "iris-b": 2}
    cluster.settle(ms(replicas=8, canary={"steps": STEPS}, promote={"revision": "b", "step": 1}), "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 4}


def test_rolling_is_a_canary_without_steps() -> None:
    cluster = stable_cluster()
    result = cluster.settle(ms(strategy="rolling"), "b")
    assert cluster.counts() == {"iris-b": 4} and result.phase == "Healthy"
    assert all(sum(p.replicas.values()) <= 5 for p in cluster.plans)


def test_the_previous_operators_single_deployment_is_adopted_without_steps() -> None:
    cluster = Cluster(Workload("iris", "b", 4, available=4, ready=4, pods=4))
    cluster.status = {"deployment": "iris", "revision": "b"}  # what the previous version wrote
    result = cluster.settle(ms(canary={"steps": STEPS}), "b")
    assert cluster.counts() == {"iris-b": 4} and result.phase == "Healthy"
    for p in cluster.plans:  # never fewer than 4 available pods on the way
        assert sum(min(c, 4) for c in p.replicas.values()) >= 4


def test_first_revision_of_a_new_object_gets_every_pod_at_once() -> None:
    result = Cluster().settle(ms(canary={"steps": STEPS}), "a")
    assert (result.replicas, result.phase) == ({"iris-a": 4}, "Healthy")


def test_canary_pods_that_never_become_ready_hit_the_progress_deadline_and_abort_when_asked() -> None:
    cluster = stable_cluster()
    cluster.broken.add("b")
    spec = ms(canary={"steps": STEPS}, progressDeadlineSeconds=120, progressDeadlineAbort=True)
    waiting = cluster.step(spec, "b")
    assert "waiting for 1 canary pod to become ready" in waiting.message
    assert (waiting.requeue_after or 0) <= 120
    result = cluster.step(spec, "b", advance=121)
    assert result.state.aborted == "ProgressDeadlineExceeded" and result.phase == "Degraded"
    cluster.settle(spec, "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 0}


def test_blue_green_previews_then_switches_at_once_and_retires_the_old_revision_after_the_delay() -> None:
    cluster = stable_cluster()
    spec = ms("blueGreen", blueGreen={"previewReplicas": 1, "autoPromotionEnabled": False})
    waiting = cluster.settle(spec, "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 1}
    assert (waiting.phase, waiting.main_revision, waiting.canary_service_revision) == (PAUSED, "a", "b")

    promote = ms("blueGreen", blueGreen={"previewReplicas": 1, "autoPromotionEnabled": False},
                 promote={"revision": "b", "full": True})  # fmt: skip
    switched = cluster.settle(promote, "b")
    assert (switched.main_revision, switched.stable_service_revision) == ("b", "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 4}  # the old one waits out scaleDownDelaySeconds
    assert 25 <= (cluster.step(promote, "b").requeue_after or 0) <= 30
    cluster.settle(promote, "b", advance=31)
    assert cluster.counts() == {"iris-b": 4}


def test_blue_green_auto_promotes_after_the_configured_seconds() -> None:
    cluster = stable_cluster()
    spec = ms("blueGreen", blueGreen={"autoPromotionSeconds": 120})
    waiting = cluster.settle(spec, "b")
    assert waiting.phase == PAUSED and "auto-promotion in" in waiting.message
    switched = cluster.settle(spec, "b", advance=121)
    assert switched.main_revision == "b"


def test_gateway_canary_moves_the_route_weight_only_once_canary_pods_are_ready() -> None:
    cluster = stable_cluster()
    cluster.route_weight = 0
    cluster.broken.add("b")
    spec = ms(
        canary={
            "steps": [{"setWeight": 25}, {"pause": {}}],
            "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
        }
    )
    first = cluster.step(spec, "b")
    assert first.route_weight == 0 and cluster.counts() == {"iris-a": 4, "iris-b": 1}
    cluster.broken.clear()
    result = cluster.settle(spec, "b")
    assert cluster.route_weight == 25 and result.phase == PAUSED
    assert cluster.counts() == {"iris-a": 3, "iris-b": 1}  # the stable shrank after the weight moved


def test_state_survives_the_round_trip_through_the_status() -> None:
    state = State(stable="iris-a", stable_revision="a", revision="b", canary="iris-b", attempt=2, step=3,
                  step_started_at=NOW, aborted="RolloutAborted", abort_message="m")  # fmt: skip
    status: Mapping[str, Any] = {
        "stable": {"deployment": "iris-a", "revision": "a"},
        "rollout": state.rollout_status(),
    }
    again = State.from_status(status)
    assert (again.step, again.attempt, again.step_started_at, again.aborted) == (3, 2, NOW, "RolloutAborted")
    assert timestamp(NOW) == "2027-01-15T08:00:00Z"


def test_gateway_abort_keeps_canary_pods_until_the_route_moved_traffic_back() -> None:
    cluster = stable_cluster()
    cluster.route_weight = 0
    routed = {
        "steps": [{"setWeight": 50}, {"pause": {}}],
        "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
    }
    cluster.settle(ms(canary=routed), "b")
    assert cluster.route_weight == 50 and cluster.counts() == {"iris-a": 2, "iris-b": 2}
    aborting = cluster.step(ms(canary=routed, abort={"revision": "b"}), "b")
    assert aborting.route_weight == 0 and aborting.replicas == {"iris-a": 4, "iris-b": 2}
    cluster.settle(ms(canary=routed, abort={"revision": "b"}), "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 0}


# ------------------------------------------------------------------------------------- GPU capacity


class GpuCluster(Cluster):
    """Every pod needs one GPU; pods beyond the cluster's ``gpus`` stay Pending (not available)."""

    def __init__(self, gpus: int, *workloads: Workload) -> None:
        super().__init__(*workloads)
        self.gpus = gpus
        self.bound = {w.name: w.replicas for w in workloads}
        self.lowest_available = min((sum(w.available for w in workloads),), default=0)

    def step(self, spec: Any, revision: str, advance: float = 1.0) -> Plan:
        used = sum(self.bound.values())
        self.route_weight = None
        self._free = Free(pods=self.gpus - used, gpus=self.gpus - used, nodes=1)
        return super().step(spec, revision, advance)

    def observed(self, spec: Any, name: str, revision: str) -> RolloutObserved:
        return RolloutObserved(list(self.workloads.values()), name, revision, self.status, None,
                               gpu_free=self._free, scheduled_pods=sum(self.bound.values()))  # fmt: skip

    def apply(self, result: Plan, revision: str) -> None:
        for name in list(self.bound):
            self.bound[name] = min(self.bound[name], result.replicas.get(name, 0))
        for name, count in result.replicas.items():  # new pods get the GPUs left, in plan order
            free = self.gpus - sum(self.bound.values())
            self.bound[name] = min(count, self.bound.get(name, 0) + free)
        for name, count in result.replicas.items():
            rev = self.workloads[name].revision if name in self.workloads else revision
            bound = self.bound[name]
            self.workloads[name] = Workload(name, rev, count, available=bound, ready=bound, pods=count)
        for name in result.delete:
            self.workloads.pop(name, None)
            self.bound.pop(name, None)
        self.lowest_available = min(self.lowest_available, sum(w.available for w in self.workloads.values()))


def gpu_ms(**rollout: Any) -> Any:
    body = {"metadata": {"name": "iris", "namespace": "default"},
            "spec": {"model": {"storageUri": "pvc://models/iris"}, "replicas": 4, "gpu": {"count": 1},
                     "runtime": {"image": "runtime:2"}, "rollout": {"strategy": "rolling", "maxSurge": 1, **rollout}}}  # fmt: skip
    return parse_spec(body)


def test_without_free_gpus_and_without_max_unavailable_the_rollout_waits_and_says_what_unblocks_it() -> None:
    cluster = GpuCluster(4, Workload("iris-a", "a", 4, available=4, ready=4, pods=4))
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    result = cluster.settle(gpu_ms(maxUnavailable=0), "b")
    assert result.capacity is not None and result.capacity.mode == "Wait"
    assert result.capacity.reason == ("needs 1 nvidia.com/gpu per pod, 0 free; allow maxUnavailable >= 1 "
                                      "or free a GPU")  # fmt: skip
    assert cluster.counts() == {"iris-a": 4, "iris-b": 0} and "waiting for GPU capacity" in result.message
    decisions = [e for p in cluster.plans for e in p.events if e.reason == "GPUCapacity"]
    assert [(e.type, e.message.split(":")[0]) for e in decisions] == [
        ("Warning", "Wait")
    ]  # once, not per pass


def test_without_free_gpus_a_rollout_swaps_within_max_unavailable_and_completes() -> None:
    cluster = GpuCluster(4, Workload("iris-a", "a", 4, available=4, ready=4, pods=4))
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    first = cluster.step(gpu_ms(maxUnavailable=1), "b")
    assert first.capacity is not None and first.capacity.mode == "Swap"
    cluster.settle(gpu_ms(maxUnavailable=1), "b")
    assert cluster.counts() == {"iris-b": 4}
    assert cluster.lowest_available >= 3  # never more than maxUnavailable pods short


def test_free_gpus_are_used_to_surge() -> None:
    cluster = GpuCluster(6, Workload("iris-a", "a", 4, available=4, ready=4, pods=4))
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    first = cluster.step(gpu_ms(maxUnavailable=0), "b")
    assert first.capacity is not None and first.capacity.mode == "Surge" and first.replicas["iris-b"] == 1
    cluster.settle(gpu_ms(maxUnavailable=0), "b")
    assert cluster.counts() == {"iris-b": 4} and cluster.lowest_available >= 4


def test_a_pending_surge_pod_turns_the_rollout_into_a_swap() -> None:
    """Another tenant took the GPU: our canary pod is Pending, so only bound pods count."""
    cluster = GpuCluster(4, Workload("iris-a", "a", 4, available=4, ready=4, pods=4),
                         Workload("iris-b", "b", 1, available=0, ready=0, pods=1))  # fmt: skip
    cluster.bound["iris-b"] = 0
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"},
                      "rollout": {"revision": "b", "deployment": "iris-b", "step": 0, "stepsHash": ""}}  # fmt: skip
    result = cluster.step(gpu_ms(maxUnavailable=1), "b")
    assert result.capacity is not None and result.capacity.mode == "Swap"
    assert result.replicas == {"iris-a": 3, "iris-b": 1}


def test_capacity_policy_surge_ignores_free_gpus() -> None:
    cluster = GpuCluster(4, Workload("iris-a", "a", 4, available=4, ready=4, pods=4))
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    result = cluster.step(gpu_ms(maxUnavailable=0, capacityPolicy="Surge"), "b")
    assert result.capacity is not None and result.capacity.mode == "Surge" and result.replicas["iris-b"] == 1


def test_blue_green_with_two_free_gpus_previews_two_pods_then_promotes_in_batches() -> None:
    cluster = GpuCluster(6, Workload("iris-a", "a", 4, available=4, ready=4, pods=4))
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    bg = {"strategy": "blueGreen", "maxUnavailable": 1, "blueGreen": {"autoPromotionEnabled": False}}
    previewing = cluster.settle(gpu_ms(**bg), "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 2} and previewing.main_revision == "a"
    assert previewing.capacity is not None and previewing.capacity.reason.startswith("preview at 2 of 4 pods")
    promote = gpu_ms(**bg, promote={"revision": "b", "full": True})
    batch = cluster.step(promote, "b")
    assert batch.main_revision is None  # both revisions serve while the old one hands over its GPUs
    assert batch.capacity is not None and batch.capacity.mode == "Swap"
    started = len(cluster.plans)
    done = cluster.settle(promote, "b")
    assert cluster.counts() == {"iris-b": 4} and done.phase == "Healthy" and done.main_revision == "b"
    assert cluster.lowest_available >= 3
    # The handover only goes one way: the old revision never gets pods (or clients) back meanwhile.
    old_pods = [p.replicas["iris-a"] for p in cluster.plans[started - 1 :] if "iris-a" in p.replicas]
    assert old_pods == sorted(old_pods, reverse=True), old_pods
    assert all(p.main_revision != "a" for p in cluster.plans[started - 1 :])


# ----------------------------------------------------------------------------------------- analysis


class AnalysedCluster(Cluster):
    """Scrapes what is due, as the reconcile does; ``verdicts`` says what each measurement finds."""

    def __init__(self, *workloads: Workload, verdicts: list[str]) -> None:
        super().__init__(*workloads)
        self.verdicts = list(verdicts)
        self.baselines: set[str] = set()

    def observed(self, spec: Any, name: str, revision: str) -> RolloutObserved:
        measured: dict[str, Measurement | None] = {}
        for key in due_analyses(self.status, self.now):
            if key not in self.baselines:
                self.baselines.add(key)
                measured[key] = None
            else:
                phase = self.verdicts.pop(0) if self.verdicts else "Successful"
                rate = {"Successful": 1.0, "Failed": 0.91}.get(phase)
                measured[key] = Measurement(phase, f"canary success rate {rate} over 30s (412 requests)"
                                            if rate else "canary got 3 requests in 30s", canary_requests=412)  # fmt: skip
        return RolloutObserved(list(self.workloads.values()), name, revision, self.status, None,
                               measurements=measured)  # fmt: skip


ANALYSED = [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}]


def analysed(**rollout: Any) -> Any:
    return ms(
        canary={"steps": ANALYSED}, analysis={"interval": "30s", **rollout.pop("analysis", {})}, **rollout
    )


def test_an_analysis_step_passes_after_count_measurements_and_the_rollout_goes_on() -> None:
    cluster = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4), verdicts=[])
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    spec = analysed()
    first = cluster.settle(spec, "b")
    assert first.state.step == 1 and first.message.startswith("step 2/3 analysis: ")
    for _ in range(8):
        result = cluster.step(spec, "b", advance=30)
    assert result.state.step >= 2 or result.stable_revision == "b"
    messages = [e.message for p in cluster.plans for e in p.events]
    assert "Step 2/3 analysis passed (3 measurements)" in messages
    reasons = [e.reason for p in cluster.plans for e in p.events]
    assert reasons.count("AnalysisSuccessful") == 3 and "AnalysisFailed" not in reasons


def test_a_failed_measurement_rolls_back_with_the_numbers_in_the_reason() -> None:
    cluster = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4), verdicts=["Failed"])
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    spec = analysed()
    cluster.settle(spec, "b")
    for _ in range(3):
        result = cluster.step(spec, "b", advance=30)
    assert result.state.aborted == "AnalysisFailed" and result.phase == "Degraded"
    assert result.message.startswith(
        "Analysis at step 2 failed: canary success rate 0.91 over 30s (412 requests)"
    )
    cluster.settle(spec, "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 0}
    assert [h["outcome"] for h in cluster.plans[-1].state.history] == ["Aborted"]


def test_an_idle_canary_is_inconclusive_and_pauses_instead_of_failing() -> None:
    cluster = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4),
                              verdicts=["Inconclusive"] * 3)  # fmt: skip
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    spec = analysed()
    cluster.settle(spec, "b")
    for _ in range(4):
        result = cluster.step(spec, "b", advance=30)
    assert (result.phase, result.state.aborted) == (PAUSED, "")
    assert "inconclusive (canary got 3 requests in 30s)" in result.message
    passed = cluster.settle(analysed(promote={"revision": "b", "step": 1}), "b")
    assert passed.state.step >= 2 or passed.stable_revision == "b"


def test_background_analysis_aborts_a_canary_paused_at_a_later_step() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}]
    spec = ms(canary={"steps": steps}, analysis={"interval": "30s", "background": True})
    cluster = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4),
                              verdicts=["Successful", "Failed"])  # fmt: skip
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    cluster.settle(spec, "b")
    for _ in range(4):
        result = cluster.step(spec, "b", advance=30)
    assert result.state.aborted == "AnalysisFailed"
    assert "in the background failed" in result.message


def test_blue_green_pre_promotion_analysis_gates_auto_promotion_and_a_failure_drops_the_preview() -> None:
    spec = ms("blueGreen", blueGreen={"prePromotionAnalysis": True}, analysis={"interval": "30s"})
    passing = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4), verdicts=[])
    passing.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    waiting = passing.settle(spec, "b")
    assert waiting.main_revision == "a" and waiting.message.startswith("pre-promotion analysis: ")
    for _ in range(6):
        result = passing.step(spec, "b", advance=30)
    assert result.stable_revision == "b" or result.main_revision == "b"

    failing = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4), verdicts=["Failed"])
    failing.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    failing.settle(spec, "b")
    for _ in range(3):
        result = failing.step(spec, "b", advance=30)
    assert result.state.aborted == "AnalysisFailed" and "before promotion failed" in result.message
    failing.settle(spec, "b")
    assert failing.counts() == {"iris-a": 4, "iris-b": 0}


def test_blue_green_post_promotion_analysis_switches_back_when_it_fails() -> None:
    spec = ms("blueGreen", blueGreen={"postPromotionAnalysis": True}, analysis={"interval": "30s"})
    cluster = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4),
                              verdicts=["Successful", "Failed"])  # fmt: skip
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    switched = cluster.settle(spec, "b")
    assert switched.main_revision == "b" and switched.stable_revision == "a"  # clients on b, a kept at 4
    assert cluster.counts() == {"iris-a": 4, "iris-b": 4}
    for _ in range(3):
        result = cluster.step(spec, "b", advance=30)
    assert result.state.aborted == "AnalysisFailed" and "after promotion failed" in result.message
    assert result.main_revision == "a"  # switched back at once
    cluster.settle(spec, "b")
    assert cluster.counts() == {"iris-a": 4, "iris-b": 0}


def test_blue_green_post_promotion_analysis_that_passes_retires_the_old_revision() -> None:
    spec = ms("blueGreen", blueGreen={"postPromotionAnalysis": True, "scaleDownDelaySeconds": 0},
              analysis={"interval": "30s"})  # fmt: skip
    cluster = AnalysedCluster(Workload("iris-a", "a", 4, available=4, ready=4, pods=4), verdicts=[])
    cluster.status = {"stable": {"deployment": "iris-a", "revision": "a"}}
    cluster.settle(spec, "b")
    for _ in range(6):
        cluster.step(spec, "b", advance=30)
    done = cluster.settle(spec, "b")
    assert (done.stable_revision, done.phase) == ("b", "Healthy") and cluster.counts() == {"iris-b": 4}
