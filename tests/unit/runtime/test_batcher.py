"""The batcher: the pure queue under a fake clock, merge/split, and the threaded scheduler end to end."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import types
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from modelservice_runtime.batcher import (
    QUEUE_FULL,
    BatchingConfigError,
    BatchingParameters,
    BatchQueue,
    BatchScheduler,
    Runner,
    merge,
    split,
)
from modelservice_runtime.errors import DeadlineExceeded, InvalidArgument, ServingError, Unavailable


def rows(start: int, count: int, width: int = 2) -> dict[str, np.ndarray]:
    """Distinct rows: row i is [i, i, ...], so a mix-up between requests cannot go unnoticed."""
    return {"x": np.repeat(np.arange(start, start + count, dtype=np.float32)[:, None], width, axis=1)}


def params(**overrides: object) -> BatchingParameters:
    base: dict[str, object] = {"max_batch_size": 4, "batch_timeout_micros": 1000, "max_enqueued_batches": 4}
    base.update(overrides)
    return BatchingParameters(**base)  # type: ignore[arg-type]


def run_batch(queue: BatchQueue, now: float, model: object = None) -> int:
    """Take one ready batch and run it through an identity-like model (y = 2x); return its padded size."""
    batch, _ = queue.take(now)
    assert batch is not None
    inputs, padded = merge(batch.tasks, queue.params)
    outputs = {"y": inputs["x"] * 2}
    for task, result in zip(batch.tasks, split(outputs, batch.tasks, padded), strict=True):
        task.pending.set_part(task.part, result)
    return padded


def blocking_runner() -> tuple[Runner, threading.Event, threading.Event]:
    """A model call that signals ``entered`` and holds its batch thread until ``release`` is set."""
    entered, release = threading.Event(), threading.Event()

    def runner(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        release.wait(5)
        return {"y": inputs["x"]}

    return runner, entered, release


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.01)


def wait_until_queued(scheduler: BatchScheduler, key: object) -> None:
    wait_until(
        lambda: key in scheduler._queues and scheduler._queues[key].queue.enqueued_tasks > 0, "task queued"
    )


def wait_for_answers(answers: list[object], count: int) -> None:
    wait_until(lambda: len(answers) >= count, f"{count} answers")


# ----------------------------------------------------------------------------------- flush rules


def test_a_batch_that_is_not_full_waits_for_its_timeout() -> None:
    queue = BatchQueue(params(batch_timeout_micros=1000))
    queue.submit(rows(0, 1), None, now=10.0)
    assert queue.take(10.0009)[0] is None
    assert queue.next_ready_at() == pytest.approx(10.001)
    batch, _ = queue.take(10.001)
    assert batch is not None and batch.size == 1


def test_a_full_batch_is_ready_at_once() -> None:
    queue = BatchQueue(params(batch_timeout_micros=10_000_000))
    queue.submit(rows(0, 3), None, now=0.0)
    assert queue.take(0.0)[0] is None
    queue.submit(rows(3, 1), None, now=0.0)
    batch, _ = queue.take(0.0)
    assert batch is not None and [t.size for t in batch.tasks] == [3, 1]


def test_zero_timeout_runs_whatever_is_queued_when_a_thread_asks() -> None:
    queue = BatchQueue(params(batch_timeout_micros=0))
    queue.submit(rows(0, 1), None, now=0.0)
    queue.submit(rows(1, 2), None, now=0.0)
    batch, _ = queue.take(0.0)
    assert batch is not None and batch.size == 3


def test_with_zero_timeout_a_partial_batch_gathers_while_the_queue_has_one_running() -> None:
    queue = BatchQueue(params(batch_timeout_micros=0, max_batch_size=8))
    queue.submit(rows(0, 1), None, now=0.0)
    running, _ = queue.take(0.0)
    assert running is not None and running.size == 1
    for i in range(1, 4):
        queue.submit(rows(i, 1), None, now=0.0)
        assert queue.take(5.0)[0] is None  # no time makes it ready: the running batch's end does
        assert queue.next_ready_at() is None
    queue.finished()
    gathered, _ = queue.take(5.0)
    assert gathered is not None and gathered.size == 3


def test_a_full_batch_runs_beside_a_running_one() -> None:
    queue = BatchQueue(params(batch_timeout_micros=0, max_batch_size=2))
    queue.submit(rows(0, 1), None, now=0.0)
    assert queue.take(0.0)[0] is not None
    queue.submit(rows(1, 2), None, now=0.0)
    full, _ = queue.take(0.0)
    assert full is not None and full.size == 2
    assert queue.running == 2


def test_a_timeout_still_bounds_the_wait_while_a_batch_runs() -> None:
    queue = BatchQueue(params(batch_timeout_micros=1000))
    queue.submit(rows(0, 1), None, now=0.0)
    assert queue.take(0.001)[0] is not None
    queue.submit(rows(1, 1), None, now=0.002)
    assert queue.next_ready_at() == pytest.approx(0.003)
    second, _ = queue.take(0.003)
    assert second is not None and second.size == 1


def test_incompatible_shapes_go_into_separate_batches() -> None:
    queue = BatchQueue(params())
    queue.submit(rows(0, 1, width=2), None, now=0.0)
    queue.submit(rows(1, 1, width=3), None, now=0.0)
    first, _ = queue.take(0.0)  # closed by the incompatible task, so ready before its timeout
    assert first is not None and first.tasks[0].inputs["x"].shape == (1, 2)
    assert queue.take(0.0)[0] is None
    second, _ = queue.take(1.0)
    assert second is not None and second.tasks[0].inputs["x"].shape == (1, 3)


# ------------------------------------------------------------------------------------------ split


def test_a_request_larger_than_max_batch_size_is_split_and_joined_in_order() -> None:
    queue = BatchQueue(params(max_batch_size=4))
    pending = queue.submit(rows(0, 10), None, now=0.0)
    assert [b.size for b in queue.batches] == [4, 4, 2]
    sizes = [run_batch(queue, now=1.0) for _ in range(3)]
    assert sizes == [4, 4, 2]
    result = pending.wait(0)
    np.testing.assert_array_equal(result["y"], rows(0, 10)["x"] * 2)


def test_a_split_request_first_fills_the_open_batch() -> None:
    queue = BatchQueue(params(max_batch_size=4))
    first = queue.submit(rows(0, 3), None, now=0.0)
    second = queue.submit(rows(100, 3), None, now=0.0)
    assert [b.size for b in queue.batches] == [4, 2]
    run_batch(queue, now=1.0)
    run_batch(queue, now=1.0)
    np.testing.assert_array_equal(first.wait(0)["y"], rows(0, 3)["x"] * 2)
    np.testing.assert_array_equal(second.wait(0)["y"], rows(100, 3)["x"] * 2)


# ---------------------------------------------------------------------------------------- padding


def test_a_batch_is_padded_to_the_next_allowed_size_with_its_first_row() -> None:
    queue = BatchQueue(params(max_batch_size=8, allowed_batch_sizes=(2, 4, 8)))
    queue.submit(rows(5, 1), None, now=0.0)
    queue.submit(rows(6, 2), None, now=0.0)
    batch, _ = queue.take(1.0)
    assert batch is not None
    inputs, padded = merge(batch.tasks, queue.params)
    assert padded == 4
    np.testing.assert_array_equal(inputs["x"][:, 0], [5, 6, 7, 5])
    results = split({"y": inputs["x"]}, batch.tasks, padded)
    assert [r["y"].shape[0] for r in results] == [1, 2]


def test_variable_length_inputs_are_padded_with_their_first_element_when_enabled() -> None:
    queue = BatchQueue(params(pad_variable_length_inputs=True))
    queue.submit({"ids": np.array([[7, 8]], dtype=np.int32)}, None, now=0.0)
    queue.submit({"ids": np.array([[3, 4, 5]], dtype=np.int32)}, None, now=0.0)
    batch, _ = queue.take(1.0)
    assert batch is not None and len(batch.tasks) == 2
    inputs, _ = merge(batch.tasks, queue.params)
    np.testing.assert_array_equal(inputs["ids"], [[7, 8, 7], [3, 4, 5]])


def test_outputs_without_the_batch_dimension_fail_every_request_in_the_batch() -> None:
    queue = BatchQueue(params())
    queue.submit(rows(0, 2), None, now=0.0)
    batch, _ = queue.take(1.0)
    assert batch is not None
    with pytest.raises(InvalidArgument, match="not equal to the batch size 2"):
        split({"y": np.zeros(3)}, batch.tasks, 2)


# ------------------------------------------------------------------------------ bounds and deadlines


def test_a_full_queue_refuses_at_once_and_keeps_what_it_holds() -> None:
    queue = BatchQueue(params(max_batch_size=2, max_enqueued_batches=2))
    queue.submit(rows(0, 2), None, now=0.0)
    queue.submit(rows(2, 2), None, now=0.0)
    with pytest.raises(Unavailable, match=QUEUE_FULL) as raised:
        queue.submit(rows(4, 1), None, now=0.0)
    assert raised.value.status == 503
    assert queue.enqueued_tasks == 2


def test_a_request_that_would_need_more_batches_than_are_free_is_refused_whole_with_503() -> None:
    queue = BatchQueue(params(max_batch_size=2, max_enqueued_batches=3))
    queue.submit(rows(0, 2), None, now=0.0)
    with pytest.raises(Unavailable, match=QUEUE_FULL):  # fits an empty queue: worth a retry
        queue.submit(rows(2, 5), None, now=0.0)
    assert queue.enqueued_tasks == 1


def test_a_request_larger_than_an_empty_queue_holds_is_a_400_naming_the_limit_not_a_503() -> None:
    queue = BatchQueue(params(max_batch_size=2, max_enqueued_batches=2))
    with pytest.raises(InvalidArgument) as raised:
        queue.submit(rows(0, 5), None, now=0.0)
    assert raised.value.status == 400
    assert raised.value.message == (
        "Task size 5 is larger than maximum input batch size 4 (max_batch_size 2 x max_enqueued_batches 2; "
        "--enable_batching=false serves requests of any size)"
    )
    assert not queue.batches
    queue.submit(rows(0, 4), None, now=0.0)  # at the limit: taken


def test_a_task_past_its_deadline_is_dropped_when_its_batch_forms() -> None:
    queue = BatchQueue(params(batch_timeout_micros=1_000_000))
    late = queue.submit(rows(0, 1), deadline=0.5, now=0.0)
    on_time = queue.submit(rows(1, 1), deadline=5.0, now=0.0)
    batch, expired = queue.take(1.0)
    assert batch is not None and [t.pending for t in batch.tasks] == [on_time]
    assert [t.pending for t in expired] == [late]


def test_a_request_that_stops_waiting_is_not_run() -> None:
    queue = BatchQueue(params())
    pending = queue.submit(rows(0, 1), None, now=0.0)
    with pytest.raises(DeadlineExceeded):
        pending.wait(0.0)
    batch, expired = queue.take(1.0)
    assert batch is None and len(expired) == 1


# ----------------------------------------------------------------------------------- parameters


def test_allowed_batch_sizes_must_end_at_max_batch_size() -> None:
    with pytest.raises(BatchingConfigError, match="last entry was 8; expected 16"):
        BatchingParameters(max_batch_size=16, allowed_batch_sizes=(4, 8))


def test_allowed_batch_sizes_must_increase() -> None:
    with pytest.raises(BatchingConfigError, match="increasing"):
        BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4, 2, 8))


@pytest.mark.parametrize("name", ["max_batch_size", "max_enqueued_batches", "num_batch_threads"])
def test_sizes_and_counts_must_be_positive(name: str) -> None:
    with pytest.raises(BatchingConfigError, match=name):
        BatchingParameters(**{name: 0})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- the scheduler


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_rows() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def runner(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate.wait(5)  # hold the first call so that the others queue up behind it
        calls.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}

    scheduler = BatchScheduler(params(max_batch_size=8, batch_timeout_micros=0, max_enqueued_batches=100))

    def one(i: int) -> None:
        size = 1 + i % 3
        result = scheduler.submit("k", runner, "m", runner, rows(i * 10, size), None)
        np.testing.assert_array_equal(result["y"], rows(i * 10, size)["x"] * 2)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(one, i) for i in range(64)]
        threading.Timer(0.2, gate.set).start()
        for future in futures:
            future.result(timeout=10)
    scheduler.close()
    assert sum(calls) == sum(1 + i % 3 for i in range(64))
    assert max(calls) > 3  # rows of several requests went through one call
    assert max(calls) <= 8


def test_a_request_with_no_rows_is_run_at_once_instead_of_waiting_forever() -> None:
    scheduler = BatchScheduler(params())
    empty = {"x": np.zeros((0, 2), np.float32)}
    assert scheduler.submit("k", None, "m", lambda inputs: {"y": inputs["x"]}, empty, None)["y"].shape == (
        0,
        2,
    )
    scheduler.close()


def test_a_reloaded_model_gets_its_own_queue_and_the_old_queue_still_runs() -> None:
    old_runner, entered, release = blocking_runner()
    old_model, new_model = object(), object()

    def new_runner(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 10}

    scheduler = BatchScheduler(params(batch_timeout_micros=0, max_enqueued_batches=8))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        running = pool.submit(scheduler.submit, "k", old_model, "m", old_runner, rows(0, 1), None)
        assert entered.wait(5)
        queued_on_old = pool.submit(scheduler.submit, "k", old_model, "m", old_runner, rows(1, 1), None)
        wait_until_queued(scheduler, ("k", id(old_model)))
        on_new = pool.submit(scheduler.submit, "k", new_model, "m", new_runner, rows(2, 1), None)
        wait_until(lambda: ("k", id(new_model)) in scheduler._queues, "queue for the new version")
        assert ("k", id(old_model)) in scheduler._queues  # not dropped while it holds a task
        release.set()
        np.testing.assert_array_equal(queued_on_old.result(5)["y"], rows(1, 1)["x"])
        np.testing.assert_array_equal(on_new.result(5)["y"], rows(2, 1)["x"] * 10)
        running.result(5)
    scheduler.close()


def test_a_failing_model_fails_its_batch_and_the_scheduler_keeps_serving() -> None:
    state = {"fail": True}

    def runner(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if state["fail"]:
            raise RuntimeError("kernel exploded")
        return {"y": inputs["x"]}

    scheduler = BatchScheduler(params(batch_timeout_micros=0))
    with pytest.raises(ServingError, match="kernel exploded") as raised:
        scheduler.submit("k", runner, "m", runner, rows(0, 1), None)
    assert raised.value.status == 500
    state["fail"] = False
    assert scheduler.submit("k", runner, "m", runner, rows(0, 1), None)["y"].shape == (1, 2)
    scheduler.close()


class _GaugeThatFailsOnce:
    """The queue-depth gauge, failing its first write: a bug around the model call, not in it."""

    def __init__(self) -> None:
        self.failed = False

    def labels(self, *names: str) -> _GaugeThatFailsOnce:
        return self

    def set(self, value: float) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("gauge file vanished")


def test_a_failure_around_the_model_call_fails_its_batch_at_once_and_the_thread_keeps_serving() -> None:
    def runner(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"]}

    scheduler = BatchScheduler(params(batch_timeout_micros=0, num_batch_threads=1))
    real = scheduler.metrics
    scheduler.metrics = types.SimpleNamespace(**{**vars(real), "BATCH_QUEUE_DEPTH": _GaugeThatFailsOnce()})  # type: ignore[assignment]
    with pytest.raises(ServingError, match="gauge file vanished") as raised:
        scheduler.submit("k", runner, "m", runner, rows(0, 1), scheduler.clock() + 5)
    assert raised.value.status == 500  # at once, not a 504 at the deadline
    answer = scheduler.submit("k", runner, "m", runner, rows(1, 1), scheduler.clock() + 5)
    assert answer["y"].tolist() == [[1.0, 1.0]]  # the one batch thread lives, and the queue is not stuck
    scheduler.close()


def test_a_request_gets_504_at_its_deadline_while_the_model_is_busy() -> None:
    release = threading.Event()

    def runner(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        release.wait(5)
        return {"y": inputs["x"]}

    scheduler = BatchScheduler(params(batch_timeout_micros=0))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(scheduler.submit, "k", runner, "m", runner, rows(0, 1), None)
        with pytest.raises(DeadlineExceeded):
            scheduler.submit("k", runner, "m", runner, rows(1, 1), scheduler.clock() + 0.05)
        release.set()
        assert blocker.result(5)["y"].shape == (1, 2)
    scheduler.close()


def test_closing_the_scheduler_answers_queued_requests_with_503() -> None:
    runner, entered, release = blocking_runner()
    scheduler = BatchScheduler(params(batch_timeout_micros=0))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(scheduler.submit, "k", runner, "m", runner, rows(0, 1), None)
        assert entered.wait(5)
        queued = pool.submit(scheduler.submit, "k", runner, "m", runner, rows(1, 1), None)
        wait_until_queued(scheduler, ("k", id(runner)))
        scheduler.close()
        with pytest.raises(Unavailable):
            queued.result(5)
        release.set()
        running.result(5)


def test_the_queue_depth_gauge_counts_the_tasks_left_waiting_when_a_batch_starts() -> None:
    from prometheus_client import REGISTRY

    started: list[int] = []
    entered, release = threading.Semaphore(0), threading.Semaphore(0)

    def runner(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started.append(int(inputs["x"][0, 0]))
        entered.release()
        assert release.acquire(timeout=5)
        return {"y": inputs["x"]}

    def depth() -> float | None:
        return REGISTRY.get_sample_value("modelservice_batch_queue_depth", {"model": "depth"})

    scheduler = BatchScheduler(params(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1))
    answers: list[object] = []
    scheduler.submit_async("k", runner, "depth", runner, rows(0, 1), None, answers.append)
    assert entered.acquire(timeout=5)
    for i in (1, 2, 3):  # queued behind the running batch
        scheduler.submit_async("k", runner, "depth", runner, rows(i, 1), None, answers.append)
    release.release()  # the first batch ends; the next one starts with two tasks still waiting
    assert entered.acquire(timeout=5)
    assert started == [0, 1]
    assert depth() == 2
    for _ in range(3):
        release.release()
    for _ in range(2):
        assert entered.acquire(timeout=5)
    wait_for_answers(answers, 4)
    assert len(answers) == 4
    assert depth() == 0
    scheduler.close()


def test_requests_that_arrive_while_a_model_call_runs_share_the_next_call_on_any_thread_count() -> None:
    runner, entered, release = blocking_runner()
    sizes: list[int] = []

    def counting(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(int(inputs["x"].shape[0]))
        return runner(inputs)

    scheduler = BatchScheduler(params(batch_timeout_micros=0, max_batch_size=100, num_batch_threads=2))
    answers: list[object] = []
    scheduler.submit_async("k", counting, "m", counting, rows(0, 1), None, answers.append)
    assert entered.wait(5)
    entered.clear()
    for i in range(1, 6):  # the second batch thread is free, but leaves these to gather
        scheduler.submit_async("k", counting, "m", counting, rows(i, 1), None, answers.append)
    assert not entered.wait(0.2)
    assert sizes == [1]
    release.set()
    wait_for_answers(answers, 6)
    scheduler.close()
    assert sizes == [1, 5]
    assert len(answers) == 6
