"""Analysis maths: counter deltas with restarts, Prometheus' histogram_quantile, thresholds, Argo's limits."""

from __future__ import annotations

import math

import pytest

from modelservice_operator.analysis import (
    ERROR,
    FAILED,
    INCONCLUSIVE,
    RUNNING,
    SUCCESSFUL,
    Limits,
    Scrape,
    Thresholds,
    Window,
    evaluate,
    histogram_quantile,
    parse_scrape,
    verdict,
    window,
)

RUNTIME_TEXT = """\
# HELP modelservice_requests_total Requests by model, version, API and HTTP status.
# TYPE modelservice_requests_total counter
modelservice_requests_total{api="predict",model="iris",status="200",version="1"} 90.0
modelservice_requests_total{api="v2_infer",model="iris",status="200",version="1"} 10.0
modelservice_requests_total{api="predict",model="iris",status="400",version="1"} 5.0
modelservice_requests_total{api="predict",model="other",status="500",version="1"} 7.0
# HELP modelservice_request_duration_seconds Request latency.
# TYPE modelservice_request_duration_seconds histogram
modelservice_request_duration_seconds_bucket{api="predict",le="0.01",model="iris"} 50.0
modelservice_request_duration_seconds_bucket{api="predict",le="0.1",model="iris"} 95.0
modelservice_request_duration_seconds_bucket{api="predict",le="+Inf",model="iris"} 105.0
modelservice_request_duration_seconds_count{api="predict",model="iris"} 105.0
modelservice_request_duration_seconds_sum{api="predict",model="iris"} 3.2
"""


def test_a_scrape_sums_apis_and_versions_of_one_model() -> None:
    scrape = parse_scrape(RUNTIME_TEXT, model="iris")
    assert scrape.requests == {"200": 100.0, "400": 5.0}
    assert scrape.buckets == {0.01: 50.0, 0.1: 95.0, math.inf: 105.0}


def test_windows_take_counter_deltas_and_a_counter_that_went_down_is_a_restart() -> None:
    before = {"a": Scrape({"200": 100, "500": 1}, {0.1: 90, math.inf: 101}), "b": Scrape({"200": 500})}
    after = {"a": Scrape({"200": 160, "500": 5}, {0.1: 150, math.inf: 165}), "b": Scrape({"200": 20}),
             "new": Scrape({"200": 1000})}  # fmt: skip
    got = window(before, after)
    # a: 60 ok + 4 failed; b restarted: its 20 since the restart; "new" is only a baseline.
    assert (got.requests, got.successes, got.pods) == (84, 80, 2)
    assert got.buckets == {0.1: 60, math.inf: 64}
    assert got.success_rate == pytest.approx(80 / 84)


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {0.1: 50, 0.2: 100, math.inf: 100}, 0.1),  # exactly at a bound
        (0.75, {0.1: 50, 0.2: 100, math.inf: 100}, 0.15),  # interpolated inside (0.1, 0.2]
        (0.25, {0.1: 50, 0.2: 100, math.inf: 100}, 0.05),  # the first bucket starts at 0
        (0.99, {0.1: 50, 0.2: 90, math.inf: 100}, 0.2),  # in +Inf: the highest finite bound
        (0.99, {0.1: 0, math.inf: 0}, None),  # no observations
        (0.5, {0.1: 10}, None),  # no +Inf bucket
        (0.5, {0.1: 60, 0.2: 50, math.inf: 100}, 0.1 * 50 / 60),  # non-monotonic counts are fixed up first
    ],
)
def test_histogram_quantile_interpolates_as_prometheus_does(
    q: float, buckets: dict[float, float], expected: float | None
) -> None:
    got = histogram_quantile(q, buckets)
    assert got == (pytest.approx(expected) if expected is not None else None)


LIMITS = Thresholds(min_requests=50, success_rate=0.99, max_success_rate_drop=0.01, latency_p99_ms=500,
                    max_latency_ratio=1.5)  # fmt: skip
FAST = {0.05: 99, 0.1: 100, math.inf: 100}


@pytest.mark.parametrize(
    ("canary", "stable", "phase", "words"),
    [
        (
            Window(412, 375, FAST),
            Window(1000, 1000, FAST),
            FAILED,
            "canary success rate 0.91 < 0.99 over 30s (412 requests); stable 1.00",
        ),
        (
            Window(12, 0, FAST),
            Window(1000, 1000, FAST),
            INCONCLUSIVE,
            "12 requests in 30s, fewer than minRequests 50",
        ),
        (Window(0, 0, {}), None, INCONCLUSIVE, "0 requests"),
        (Window(1000, 991, FAST), Window(1000, 1000, FAST), SUCCESSFUL, "canary success rate 0.99"),
        (Window(1000, 995, FAST), Window(1000, 1000 * 1.0, FAST), SUCCESSFUL, "p99"),
        (Window(1000, 1000, {0.4: 10, 0.8: 1000, math.inf: 1000}), None, FAILED, "p99 latency 796ms > 500ms"),
        (
            Window(1000, 1000, {0.1: 10, 0.2: 1000, math.inf: 1000}),
            Window(1000, 1000, FAST),
            FAILED,
            "is 4.0x the stable's 50ms (max 1.5x)",
        ),
        (
            Window(1000, 1000, {0.1: 10, 0.2: 1000, math.inf: 1000}),
            Window(10, 10, FAST),
            SUCCESSFUL,
            "canary success rate 1.00",
        ),  # too little stable traffic to compare with
    ],
)
def test_measurements_judge_absolute_and_stable_relative_thresholds(
    canary: Window, stable: Window | None, phase: str, words: str
) -> None:
    got = evaluate(LIMITS, canary, stable, 30)
    assert got.phase == phase and words in got.message, got.message


def test_a_drop_against_the_stable_fails_even_above_the_absolute_floor() -> None:
    lenient = Thresholds(min_requests=50, success_rate=0.9, max_success_rate_drop=0.02)
    got = evaluate(lenient, Window(1000, 950, FAST), Window(1000, 1000, FAST), 30)
    assert got.phase == FAILED and "0.05 below the stable's 1.00 (max drop 0.02)" in got.message


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        ([], RUNNING),
        ([SUCCESSFUL], RUNNING),
        ([SUCCESSFUL] * 3, SUCCESSFUL),
        ([SUCCESSFUL, FAILED], FAILED),  # failureLimit 0: the first failure fails it
        ([INCONCLUSIVE, INCONCLUSIVE], RUNNING),
        ([INCONCLUSIVE] * 3, INCONCLUSIVE),  # more than inconclusiveLimit 2
        ([ERROR] * 4, RUNNING),
        ([ERROR] * 5, ERROR),  # more than consecutiveErrorLimit 4
        ([ERROR, ERROR, SUCCESSFUL, ERROR, ERROR, ERROR], RUNNING),  # errors must be consecutive
        ([SUCCESSFUL, INCONCLUSIVE, SUCCESSFUL], SUCCESSFUL),
    ],
)
def test_verdicts_follow_argo_rollouts_limits(phases: list[str], expected: str) -> None:
    assert verdict(Limits(), phases) == expected


def test_a_failure_limit_tolerates_that_many_failures() -> None:
    assert verdict(Limits(failure_limit=1), [FAILED, SUCCESSFUL]) == RUNNING
    assert verdict(Limits(failure_limit=1), [FAILED, FAILED]) == FAILED


def test_a_small_absolute_latency_difference_is_noise_at_any_ratio() -> None:
    cold = {0.001: 50, 0.01: 99, 0.025: 100, math.inf: 100}  # p99 10 ms
    hot = {0.001: 99, 0.0025: 100, math.inf: 100}  # p99 1 ms
    got = evaluate(LIMITS, Window(1000, 1000, cold), Window(1000, 1000, hot), 30)
    assert got.phase == SUCCESSFUL, got.message
