"""A rate-limited work queue of object keys, client-go's shape, on asyncio.

**Why not Kopf's handlers:** a watch event of any child (a pod turning Ready, a Deployment edited) must
reconcile its ModelService within a second or two, and reconciles of one object must never overlap.
Every source (the ModelService's own events, its children's, the safety-net resync, a retry) only adds
the key here: a key queued twice is queued once, a key added while it is being processed is processed
again right after, never at the same time; failures come back after an exponential backoff.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, base_delay: float = 1.0, max_delay: float = 60.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: deque[K] = deque()
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        """Process ``key`` as soon as a worker is free (once, however often it is added)."""
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds; an earlier pending time wins over a later one."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, loop.call_at(due, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def backoff(self, key: K) -> float:
        """The next retry delay for ``key``: base, 2 x base, 4 x base ... up to max_delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return float(min(self.max_delay, self.base_delay * (2**failures)))

    def failing(self, key: K) -> bool:
        """``key`` failed last time and waits for its backoff."""
        return key in self._failures

    def forget(self, key: K) -> None:
        """``key`` succeeded: its next failure starts the backoff again."""
        self._failures.pop(key, None)

    def discard(self, key: K) -> None:
        """The object is gone: drop its timers and history."""
        self.forget(key)
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    async def get(self) -> K:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
