"""Token buckets per (client, model) on an injected clock."""

from __future__ import annotations

import pytest

from modelservice_runtime.ratelimit import RateLimited, RateLimiter, build_rate_limiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_served_then_requests_wait_for_the_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    decisions = [limiter.take("team-a", "iris") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.retry_after_s == pytest.approx(0.5) and refused.reset_s == pytest.approx(1.5)
    assert refused.headers() == [("RateLimit-Limit", "3"), ("RateLimit-Remaining", "0"),
                                 ("RateLimit-Reset", "2"), ("Retry-After", "1")]  # fmt: skip
    clock.now += 0.5
    assert limiter.take("team-a", "iris").allowed
    assert not limiter.take("team-a", "iris").allowed
    clock.now += 60
    assert limiter.take("team-a", "iris").remaining == 2  # refilled up to the burst, not beyond


def test_each_client_and_each_model_has_its_own_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.take("team-a", "iris").allowed and not limiter.take("team-a", "iris").allowed
    assert limiter.take("team-b", "iris").allowed
    assert limiter.take("team-a", "digits").allowed


def test_a_refusal_names_the_client_the_model_and_the_limit() -> None:
    limiter = RateLimiter(rate=0.5, burst=1, clock=Clock())
    limiter.check("ci", "iris")
    with pytest.raises(RateLimited) as raised:
        limiter.check("ci", "iris")
    assert raised.value.status == 429
    assert raised.value.message == (
        "Rate limit exceeded for client 'ci' on model 'iris': 0.5 requests per second, bursts of 1; retry in 2.00s"
    )


def test_idle_buckets_are_forgotten_beyond_the_bound() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock, max_buckets=2)
    for client in ("a", "b", "c"):
        limiter.take(client, "m")
    assert limiter.take("a", "m").allowed  # forgotten, so full again
    assert not limiter.take("c", "m").allowed


def test_no_rate_is_no_limiter_and_the_burst_defaults_to_the_rate() -> None:
    assert build_rate_limiter(0, 0) is None
    limiter = build_rate_limiter(2.5, 0)
    assert limiter is not None and limiter.burst == 3
    with pytest.raises(ValueError, match="positive rate"):
        RateLimiter(rate=1.0, burst=0)
