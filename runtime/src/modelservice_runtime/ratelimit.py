"""Per-client, per-model rate limits: token buckets kept in the model process, so a limit holds for the
pod as a whole whatever its number of HTTP workers.

``--rate_limit_requests_per_second`` refills each (client, model) bucket, ``--rate_limit_burst`` is its
size. A client is an API key's name (``security.py``), else "-" (every anonymous caller shares one bucket
per model). A refusal is 429 with ``Retry-After`` and the ``RateLimit-Limit`` / ``RateLimit-Remaining`` /
``RateLimit-Reset`` fields of the IETF draft (draft-ietf-httpapi-ratelimit-headers); allowed answers carry
the same fields. Pure: time is injected.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import ServingError

MAX_BUCKETS = 100_000  # idle buckets beyond this are forgotten, oldest first (a forgotten bucket is full)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # the burst: what a client may send at once
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # until the next request would be allowed (0 when allowed)
    rate: float = 0.0  # tokens per second

    def refusal(self, client: str, model: str) -> RateLimited:
        """The 429 of a refused request (REST and gRPC say the same)."""
        return RateLimited(
            f"Rate limit exceeded for client '{client}' on model '{model}': {self.rate:g} requests per "
            f"second, bursts of {self.limit}; retry in {self.retry_after_s:.2f}s",
            self,
            client,
        )

    def headers(self) -> list[tuple[str, str]]:
        fields = [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(math.ceil(self.reset_s))),
        ]
        if not self.allowed:
            fields.append(("Retry-After", str(max(1, math.ceil(self.retry_after_s)))))
        return fields


class RateLimited(ServingError):
    """429: the client's bucket for this model is empty."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, decision: Decision, client: str = "-") -> None:
        super().__init__(message)
        self.decision = decision
        self.client = client


class Limiter(Protocol):
    def take(self, client: str, model: str) -> Decision: ...


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(
                f"a rate limit needs a positive rate and a burst of at least 1, got {rate}/{burst}"
            )
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, model: str) -> Decision:
        """Take one token from the (client, model) bucket if there is one."""
        key = (client, model)
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        return Decision(
            allowed=allowed,
            limit=self.burst,
            remaining=int(tokens),
            reset_s=(self.burst - tokens) / self.rate,
            retry_after_s=0.0 if allowed else (1.0 - tokens) / self.rate,
            rate=self.rate,
        )

    def check(self, client: str, model: str) -> Decision:
        """``take``, raising 429 when refused."""
        decision = self.take(client, model)
        if not decision.allowed:
            raise decision.refusal(client, model)
        return decision


def build_rate_limiter(rate: float, burst: int) -> RateLimiter | None:
    if rate <= 0:
        return None
    return RateLimiter(rate, burst or max(1, math.ceil(rate)))


def admit(plane: Any, client: str, model: str) -> Decision | None:
    """In an HTTP worker: take a token from the model process's bucket for (client, model), or raise 429."""
    decision: Decision | None = plane.admit(client, model)
    if decision is not None and not decision.allowed:
        raise decision.refusal(client, model)
    return decision
