"""PURE analysis: from the runtime's own /metrics to a verdict on a canary, with no Prometheus needed.

**For testability,** nothing here does I/O: the metrics source hands in scraped text and the time of the
scrape; this module turns two scrapes of each pod into rates over the window (counter deltas, where a
counter that went down means the pod restarted and counts from zero again), sums the pods of a revision,
computes the p99 from histogram buckets exactly as Prometheus' ``histogram_quantile`` interpolates, and
judges a measurement against absolute and stable-relative thresholds. ``verdict`` applies Argo Rollouts'
limits (failureLimit, inconclusiveLimit, consecutiveErrorLimit, count) to the measurements so far.

Few requests are Inconclusive, never Failed: an idle canary is not a broken one (Flagger rolls back on
"no values found"; we do not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "modelservice_requests"
LATENCY = "modelservice_request_duration_seconds"

SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR, RUNNING = "Successful", "Failed", "Inconclusive", "Error", "Running"


@dataclass(frozen=True)
class Scrape:
    """Cumulative counters of one pod: requests by HTTP status, latency buckets by upper bound."""

    requests: Mapping[str, float] = field(default_factory=dict)
    buckets: Mapping[float, float] = field(default_factory=dict)  # le -> cumulative count


def parse_scrape(text: str, model: str = "") -> Scrape:
    """The runtime's Prometheus text, summed over APIs, versions and workers (of ``model`` if given)."""
    requests: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if model and labels.get("model", model) != model:
                continue
            if sample.name == f"{REQUESTS}_total":
                status = labels.get("status", "")
                requests[status] = requests.get(status, 0.0) + sample.value
            elif sample.name == f"{LATENCY}_bucket":
                le = float(labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return Scrape(requests, buckets)


def _delta(now: float, before: float) -> float:
    return now if now < before else now - before  # a counter that went down: the pod restarted


@dataclass(frozen=True)
class Sample:
    """What a check needs of one revision over one window, from whichever provider."""

    requests: float = 0.0
    success_rate: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True)
class Window:
    """One revision's traffic between two scrapes of each of its pods."""

    requests: float = 0.0
    successes: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)
    pods: int = 0

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.requests if self.requests else None

    @property
    def p99_ms(self) -> float | None:
        value = histogram_quantile(0.99, self.buckets)
        return None if value is None else value * 1000


def _successful(status: str) -> bool:
    """2xx and 3xx succeed; any 4xx or 5xx is a request the revision did not serve (a model that rejects
    the clients' inputs fails too, and the stable-relative check keeps bad clients from blaming it)."""
    return status[:1] in ("2", "3")


def window(before: Mapping[str, Scrape], after: Mapping[str, Scrape]) -> Window:
    """Sum over the pods scraped both times (a pod seen once is only a baseline)."""
    total = successes = 0.0
    buckets: dict[float, float] = {}
    pods = 0
    for pod, now in after.items():
        then = before.get(pod)
        if then is None:
            continue
        pods += 1
        for status, value in now.requests.items():
            change = _delta(value, then.requests.get(status, 0.0))
            total += change
            successes += change if _successful(status) else 0.0
        for le, value in now.buckets.items():
            buckets[le] = buckets.get(le, 0.0) + _delta(value, then.buckets.get(le, 0.0))
    return Window(total, successes, buckets, pods)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank; the
    lowest bucket starts at 0; a rank in the +Inf bucket answers the highest finite bound."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][0] != math.inf or ordered[-1][1] <= 0:
        return None
    # Cumulative counts must not go down (a scrape mid-update); Prometheus fixes them the same way.
    fixed: list[tuple[float, float]] = []
    for le, count in ordered:
        fixed.append((le, max(count, fixed[-1][1] if fixed else 0.0)))
    total = fixed[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in fixed:
        if count >= rank:
            if le == math.inf:
                return fixed[-2][0] if len(fixed) > 1 else None
            if count == below:
                return le
            if le <= 0:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 50
    success_rate: float = 0.99
    max_success_rate_drop: float | None = 0.01  # vs stable over the same window
    latency_p99_ms: float | None = None
    max_latency_ratio: float | None = 1.5  # canary p99 / stable p99
    # Below this many milliseconds a p99 difference is noise at any ratio (2 ms vs 4 ms is "2x").
    min_latency_delta_ms: float = 25.0


@dataclass(frozen=True)
class Measurement:
    phase: str  # Successful | Failed | Inconclusive | Error
    message: str
    at: str = ""
    canary_requests: int = 0
    canary_success_rate: float | None = None
    canary_p99_ms: float | None = None
    stable_success_rate: float | None = None
    stable_p99_ms: float | None = None

    def to_status(self) -> dict[str, object]:
        out: dict[str, object] = {"phase": self.phase, "message": self.message, "at": self.at,
                                  "canaryRequests": self.canary_requests}  # fmt: skip
        for key, value in (("canarySuccessRate", self.canary_success_rate), ("canaryP99Ms", self.canary_p99_ms),
                           ("stableSuccessRate", self.stable_success_rate), ("stableP99Ms", self.stable_p99_ms)):  # fmt: skip
            if value is not None:
                out[key] = round(value, 4)
        return out


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}ms"


def evaluate(limits: Thresholds, canary: Window | Sample, stable: Window | Sample | None, seconds: float,
             at: str = "") -> Measurement:  # fmt: skip
    """Judge one window of the canary, against the absolute thresholds and against the stable."""
    stable_rate = stable.success_rate if stable else None
    stable_p99 = stable.p99_ms if stable else None
    rate, p99 = canary.success_rate, canary.p99_ms

    def measured(phase: str, message: str) -> Measurement:
        return Measurement(phase, message, at, int(canary.requests), rate, p99, stable_rate, stable_p99)

    over = f"over {seconds:.0f}s ({canary.requests:.0f} requests)"
    stable_note = f"; stable {_rate(stable_rate)}" if stable_rate is not None else ""
    if canary.requests < limits.min_requests:
        return measured(INCONCLUSIVE, f"canary got {canary.requests:.0f} requests in {seconds:.0f}s, fewer than "
                                      f"minRequests {limits.min_requests}")  # fmt: skip
    if rate is None:
        return measured(INCONCLUSIVE, f"the canary's success rate over {seconds:.0f}s is unknown")
    if rate < limits.success_rate:
        return measured(
            FAILED, f"canary success rate {rate:.2f} < {limits.success_rate:.2f} {over}{stable_note}"
        )
    comparable = stable is not None and stable.requests >= limits.min_requests
    drop = limits.max_success_rate_drop
    if comparable and stable_rate is not None and drop is not None and stable_rate - rate > drop:
        return measured(FAILED, f"canary success rate {rate:.2f} is {stable_rate - rate:.2f} below the stable's "
                                f"{stable_rate:.2f} (max drop {drop:.2f}) {over}")  # fmt: skip
    if limits.latency_p99_ms is not None and p99 is not None and p99 > limits.latency_p99_ms:
        return measured(FAILED, f"canary p99 latency {_ms(p99)} > {limits.latency_p99_ms:.0f}ms {over}")
    ratio = limits.max_latency_ratio
    slower = p99 is not None and stable_p99 is not None and p99 - stable_p99 > limits.min_latency_delta_ms
    if (
        comparable
        and ratio is not None
        and p99 is not None
        and stable_p99
        and slower
        and p99 > stable_p99 * ratio
    ):
        return measured(FAILED, f"canary p99 latency {_ms(p99)} is {p99 / stable_p99:.1f}x the stable's "
                                f"{_ms(stable_p99)} (max {ratio:.1f}x) {over}")  # fmt: skip
    return measured(SUCCESSFUL, f"canary success rate {rate:.2f}, p99 {_ms(p99)} {over}{stable_note}")


@dataclass(frozen=True)
class Limits:
    """Argo Rollouts' semantics: more failures than failureLimit fail the analysis, more inconclusive
    measurements than inconclusiveLimit make it Inconclusive, more consecutive errors than
    consecutiveErrorLimit make it an Error; ``count`` measurements without that succeed it."""

    count: int = 3
    failure_limit: int = 0
    inconclusive_limit: int = 2
    consecutive_error_limit: int = 4


def verdict(limits: Limits, phases: Sequence[str]) -> str:
    """Running, Successful, Failed, Inconclusive or Error for the measurement phases so far."""
    if sum(p == FAILED for p in phases) > limits.failure_limit:
        return FAILED
    streak = 0
    for phase in reversed(phases):
        if phase != ERROR:
            break
        streak += 1
    if streak > limits.consecutive_error_limit:
        return ERROR
    if sum(p == INCONCLUSIVE for p in phases) > limits.inconclusive_limit:
        return INCONCLUSIVE
    if sum(p in (SUCCESSFUL, FAILED, INCONCLUSIVE) for p in phases) >= limits.count:
        return SUCCESSFUL
    return RUNNING
