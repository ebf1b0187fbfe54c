"""The work queue: one reconcile per key at a time, duplicates collapse, backoff grows and resets."""

from __future__ import annotations

import asyncio

import pytest

from modelservice_operator.workqueue import WorkQueue

pytestmark = pytest.mark.asyncio


async def test_a_key_added_twice_is_processed_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert [await queue.get(), await queue.get()] == ["a", "b"]
    assert len(queue) == 0


async def test_a_key_added_while_processing_comes_back_after_done_never_alongside() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # e.g. a pod event during the reconcile
    assert len(queue) == 0, "a second worker must not get the key while it is being processed"
    queue.done(key)
    assert len(queue) == 1 and await queue.get() == "a"


async def test_add_after_keeps_the_earliest_due_time(looptime: bool) -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 300)
    queue.add_after("a", 2)
    queue.add_after("a", 100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await queue.get() == "a"
    assert loop.time() - start == pytest.approx(2, abs=0.01)


async def test_backoff_doubles_up_to_the_cap_and_resets_on_success() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=1, max_delay=10)
    assert [queue.backoff("a") for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    assert queue.backoff("b") == 1  # per key
    queue.forget("a")
    assert queue.backoff("a") == 1


async def test_discard_cancels_a_pending_retry(looptime: bool) -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("gone", 1)
    queue.discard("gone")
    queue.add_after("other", 5)
    assert await queue.get() == "other"
