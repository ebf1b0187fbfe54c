"""Dynamic batching with TensorFlow Serving's parameters and semantics.

Concurrent requests to the same model version and signature are concatenated along the 0th dimension into
one model call and the outputs are sliced back, each request getting exactly its own rows.

**The parameters are TF Serving's** (``BatchingParameters`` in ``session_bundle_config.proto``) and mean
what they mean there:

- ``max_batch_size``: no model call sees more rows (a larger request is split across batches and its
  outputs are joined again, like TF Serving's large-batch splitting).
- ``batch_timeout_micros``: a batch that is not full is run at the latest this long after its first task
  arrived; 0 runs whatever is queued as soon as a batch thread is free and no other batch of the same
  queue is running (ours: the requests that arrive meanwhile join it, instead of a few rows running
  on a second thread at a model call's full fixed cost; full batches still run side by side).
- ``max_enqueued_batches``: the queue bound, in batches. A request that would need more answers at once
  with UNAVAILABLE (503) "The batch scheduling queue to which this task was submitted is full", instead of
  queueing without bound; one that even an empty queue cannot hold (more than ``max_batch_size`` x
  ``max_enqueued_batches`` rows) with INVALID_ARGUMENT (400) "Task size N is larger than maximum input
  batch size M", as TF Serving answers a task over its input limit: a retry cannot help it.
- ``num_batch_threads``: batches run at the same time, shared by every queue (TF's shared scheduler).
- ``allowed_batch_sizes``: a batch is padded up to the next allowed size, with copies of its first row;
  the padding rows' outputs are dropped.
- ``pad_variable_length_inputs``: inputs whose non-batch dimensions differ are padded to the largest
  size in the batch with their first element (TF Serving's ``AddPadding``); otherwise they go into
  separate batches.

**Time is injected.** ``BatchQueue`` is a pure state machine over ``now`` (formation, timeouts, bounds,
deadlines) and is unit-tested with a fake clock; ``BatchScheduler`` is the thin threaded driver. Each task
carries its deadline: a task whose deadline has passed is dropped when its batch forms, and the waiting
request gets DEADLINE_EXCEEDED (504).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DeadlineExceeded, Internal, InvalidArgument, ServingError, Unavailable
from .ipc import coalesced

log = logging.getLogger(__name__)

Tensors = Mapping[str, np.ndarray]
Runner = Callable[[Tensors], dict[str, np.ndarray]]
Clock = Callable[[], float]
# Called once with a request's outputs, or with the error that failed it, by the thread that finished it.
Done = Callable[["dict[str, np.ndarray] | ServingError"], None]

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


class BatchingConfigError(ValueError):
    """Parameters TF Serving would refuse; the message names the parameter."""


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's defaults where a parameter is left out (``SharedBatchScheduler::QueueOptions``)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise BatchingConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise BatchingConfigError(
                f"batch_timeout_micros must not be negative, got {self.batch_timeout_micros}"
            )
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
                raise BatchingConfigError(
                    f"allowed_batch_sizes entries must be positive and increasing, got {list(sizes)}"
                )
            if sizes[-1] != self.max_batch_size:
                raise BatchingConfigError(
                    "The last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                    f"{sizes[-1]}; expected {self.max_batch_size}"
                )

    @property
    def timeout_s(self) -> float:
        return self.batch_timeout_micros / 1e6

    def padded_size(self, size: int) -> int:
        """``RoundToLowestAllowedBatchSize``."""
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


# ------------------------------------------------------------------------------------------ requests


class Pending:
    """One request waiting for its rows: it may have been split into several tasks (parts).

    A caller either blocks in ``wait`` or, when it gave ``on_done``, is called back once with the outputs
    or the error (the model process answers that way: no thread waits per request)."""

    def __init__(self, parts: int, deadline: float | None, on_done: Done | None = None) -> None:
        self.deadline = deadline
        self.parts = parts
        self._results: list[dict[str, np.ndarray] | None] = [None] * parts
        self._remaining = parts
        self._error: ServingError | None = None
        self._finished = False
        # Only a blocking caller needs an Event; a callback caller (every request of the model process)
        # is spared building one (a Condition and two locks) per request.
        self._done = threading.Event() if on_done is None else None
        self._lock = threading.Lock()
        self._on_done = on_done
        self.cancelled = False

    def _joined(self) -> dict[str, np.ndarray]:
        parts = [p for p in self._results if p is not None]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def expired(self, now: float) -> bool:
        return self.cancelled or (self.deadline is not None and now >= self.deadline)

    def set_part(self, index: int, outputs: dict[str, np.ndarray]) -> None:
        with self._lock:
            if self._finished:
                return
            self._results[index] = outputs
            self._remaining -= 1
            if self._remaining != 0:
                return
            self._finish()
        if self._on_done is not None:
            self._on_done(self._joined())

    def fail(self, error: ServingError) -> None:
        with self._lock:
            if self._finished:
                return
            self._error = error
            self._finish()
        if self._on_done is not None:
            self._on_done(error)

    def _finish(self) -> None:
        self._finished = True
        if self._done is not None:
            self._done.set()

    def wait(self, timeout: float | None) -> dict[str, np.ndarray]:
        if self._done is None:
            raise TypeError("wait() on a request that reports through its callback")
        if not self._done.wait(timeout):
            self.cancelled = True  # the scheduler drops its tasks that have not run yet
            raise DeadlineExceeded("Deadline exceeded")
        if self._error is not None:
            raise self._error
        return self._joined()


@dataclass
class Task:
    """Rows of one request (all of them, or one part of a split request)."""

    inputs: dict[str, np.ndarray]
    size: int
    pending: Pending
    part: int
    enqueued_at: float


@dataclass
class Batch:
    key: Any
    opened_at: float
    tasks: list[Task] = field(default_factory=list)
    size: int = 0


def batch_size_of(inputs: Tensors) -> int:
    """The shared 0th dimension of the inputs, or TF Serving's error."""
    if not inputs:
        raise InvalidArgument("Batching Run() must have at least one input tensor")
    sizes: set[int] = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise InvalidArgument("Batching Run() input tensors must have at least one dimension")
        sizes.add(int(array.shape[0]))
    if len(sizes) != 1:
        raise InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def compatibility_key(inputs: Tensors, pad_variable_length: bool) -> tuple[Any, ...]:
    """Tasks with equal keys can be concatenated (after padding, when it is enabled)."""
    if pad_variable_length:
        return tuple(sorted((n, a.dtype.str, a.ndim) for n, a in inputs.items()))
    return tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items()))


def split_rows(inputs: Tensors, start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: array[start:stop] for name, array in inputs.items()}


# ----------------------------------------------------------------------------------- the pure queue


class BatchQueue:
    """Batches for one model version and signature, as a state machine over an injected ``now``.

    The last batch is open (tasks join it); every earlier one is closed (full, or cut by an incompatible
    task) and ready. ``take(now)`` hands out the first batch once it is ready.
    """

    def __init__(self, params: BatchingParameters) -> None:
        self.params = params
        self.batches: collections.deque[Batch] = collections.deque()
        self.running = 0  # batches taken and not finished yet

    @property
    def enqueued_tasks(self) -> int:
        return sum(len(b.tasks) for b in self.batches)

    def submit(
        self, inputs: Tensors, deadline: float | None, now: float, on_done: Done | None = None
    ) -> Pending:
        """Enqueue a request, split where it does not fit; all of it or none (UNAVAILABLE when full)."""
        size = batch_size_of(inputs)
        key = compatibility_key(inputs, self.params.pad_variable_length_inputs)
        limit = self.params.max_batch_size
        capacity = limit * self.params.max_enqueued_batches
        if size > capacity:  # not even an empty queue holds it: a retry cannot help (TF Serving: 400 too)
            raise InvalidArgument(
                f"Task size {size} is larger than maximum input batch size {capacity} (max_batch_size "
                f"{limit} x max_enqueued_batches {self.params.max_enqueued_batches}; "
                "--enable_batching=false serves requests of any size)"
            )
        open_batch = self.batches[-1] if self.batches else None
        room = limit - open_batch.size if open_batch is not None and open_batch.key == key else 0
        chunks = [min(room, size)] if room > 0 else []
        remaining = size - sum(chunks)
        while remaining > 0:
            chunks.append(min(limit, remaining))
            remaining -= chunks[-1]
        new_batches = len(chunks) - (1 if room > 0 else 0)
        if len(self.batches) + new_batches > self.params.max_enqueued_batches:
            raise Unavailable(QUEUE_FULL)
        pending = Pending(len(chunks), deadline, on_done)
        start = 0
        for part, rows in enumerate(chunks):
            rows_inputs = split_rows(inputs, start, start + rows) if len(chunks) > 1 else dict(inputs)
            start += rows
            if part > 0 or room == 0:
                self.batches.append(Batch(key=key, opened_at=now))
            batch = self.batches[-1]
            batch.tasks.append(Task(rows_inputs, rows, pending, part, now))
            batch.size += rows
        return pending

    def _gathering(self, batch: Batch) -> bool:
        """With timeout 0, the open batch waits while a batch of this queue runs: it gathers whatever
        arrives meanwhile, where a second thread would have run a few rows at a model call's full fixed
        cost. (On 2 cores, side by side: +4% served on a small model, 6-8 rows per batch instead of
        4-6, and less model-process CPU per request.)"""
        return (
            self.running > 0
            and self.params.timeout_s == 0
            and batch is self.batches[-1]
            and batch.size < self.params.max_batch_size
        )

    def _ready(self, batch: Batch, now: float) -> bool:
        if self._gathering(batch):
            return False
        return (
            batch is not self.batches[-1]
            or batch.size >= self.params.max_batch_size
            or now >= batch.opened_at + self.params.timeout_s
        )

    def next_ready_at(self) -> float | None:
        """When the first batch becomes ready by timeout (None when the queue is empty)."""
        if not self.batches:
            return None
        first = self.batches[0]
        if self._gathering(first):
            return None  # ready when the running batch finishes, not at a time
        if first is not self.batches[-1] or first.size >= self.params.max_batch_size:
            return first.opened_at
        return first.opened_at + self.params.timeout_s

    def take(self, now: float) -> tuple[Batch | None, list[Task]]:
        """The first batch if it is ready, and the tasks dropped from it because their deadline passed;
        a batch taken counts as running until ``finished()``."""
        while self.batches and self._ready(self.batches[0], now):
            batch = self.batches.popleft()
            live = [t for t in batch.tasks if not t.pending.expired(now)]
            expired = [t for t in batch.tasks if t.pending.expired(now)]
            if live:
                batch.tasks = live
                batch.size = sum(t.size for t in live)
                self.running += 1
                return batch, expired
            if expired:
                return None, expired
        return None, []

    def finished(self) -> None:
        """A batch taken from this queue has run."""
        self.running -= 1


# --------------------------------------------------------------------------------- merge and split


def _pad_to(array: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """Pad every non-batch dimension up to ``dims`` with the tensor's first element (``AddPadding``)."""
    if tuple(array.shape[1:]) == tuple(dims):
        return array
    if array.size == 0:
        raise InvalidArgument("Cannot pad an empty tensor to a common shape")
    out = np.full((array.shape[0], *dims), array.flat[0], dtype=array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def merge(tasks: Sequence[Task], params: BatchingParameters) -> tuple[dict[str, np.ndarray], int]:
    """Concatenate the tasks' inputs (padded when allowed) and pad the batch to an allowed size."""
    names = list(tasks[0].inputs)
    merged: dict[str, np.ndarray] = {}
    size = sum(t.size for t in tasks)
    padded = params.padded_size(size)
    for name in names:
        arrays = [t.inputs[name] for t in tasks]
        if params.pad_variable_length_inputs and len({a.shape[1:] for a in arrays}) > 1:
            dims = [max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim)]
            arrays = [_pad_to(a, dims) for a in arrays]
        if padded > size:
            arrays.append(np.repeat(arrays[0][:1], padded - size, axis=0))
        merged[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return merged, padded


def split(
    outputs: Mapping[str, np.ndarray], tasks: Sequence[Task], padded: int
) -> list[dict[str, np.ndarray]]:
    """Slice the batch's outputs back into each task's rows (padding rows are dropped)."""
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != padded:
            raise InvalidArgument(
                f"Batched output tensor '{name}' has 0th dimension "
                f"{array.shape[0] if array.ndim else 'none'}, which is not equal to the batch size {padded}"
            )
    results, start = [], 0
    for task in tasks:
        results.append({name: array[start : start + task.size] for name, array in outputs.items()})
        start += task.size
    return results


# ------------------------------------------------------------------------------------ the scheduler


@dataclass
class _Queue:
    queue: BatchQueue
    runner: Runner
    model: str
    owner: object


class BatchScheduler:
    """Runs the ready batches of every queue on ``num_batch_threads`` shared threads."""

    def __init__(self, params: BatchingParameters, clock: Clock = time.monotonic) -> None:
        # Imported here: config.py imports this module in the Gunicorn master, which must not import
        # prometheus_client before PROMETHEUS_MULTIPROC_DIR is set.
        from . import metrics

        self.metrics = metrics
        self.params = params
        self.clock = clock
        self._queues: dict[Any, _Queue] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._rotation = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        key: Any,
        owner: object,
        model: str,
        runner: Runner,
        inputs: Tensors,
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        """Queue ``inputs`` for ``key`` (one model version + signature) and wait for their outputs."""
        if batch_size_of(inputs) == 0:
            return runner(inputs)  # no rows: nothing to batch, and no batch would ever answer it
        pending = self._enqueue(key, owner, model, runner, inputs, deadline, None)
        timeout = None if deadline is None else max(0.0, deadline - self.clock())
        return pending.wait(timeout)

    def submit_async(
        self,
        key: Any,
        owner: object,
        model: str,
        runner: Runner,
        inputs: Tensors,
        deadline: float | None,
        on_done: Done,
    ) -> None:
        """Queue ``inputs`` and return at once; ``on_done`` gets the outputs or the error later, from the
        batch thread (a full queue raises here, synchronously, as ``submit`` does)."""
        if batch_size_of(inputs) == 0:
            on_done(runner(inputs))
            return
        self._enqueue(key, owner, model, runner, inputs, deadline, on_done)

    def _enqueue(
        self,
        key: Any,
        owner: object,
        model: str,
        runner: Runner,
        inputs: Tensors,
        deadline: float | None,
        on_done: Done | None,
    ) -> Pending:
        with self._cond:
            if self._stopped:
                raise Unavailable("The batch scheduler is shutting down")
            entry = self._queues.get((key, id(owner)))
            if entry is None:
                # A reloaded version (a new model object under the same key) gets a queue of its own;
                # the old one keeps its tasks until they have run, and is dropped once empty.
                for stale in [k for k, e in self._queues.items() if k[0] == key and not e.queue.batches]:
                    del self._queues[stale]
                entry = _Queue(BatchQueue(self.params), runner, model, owner)
                self._queues[(key, id(owner))] = entry  # the entry holds the owner, so its id stays unique
            try:
                pending = entry.queue.submit(inputs, deadline, self.clock(), on_done)
            except Unavailable:
                self.metrics.BATCH_REJECTED.labels(model).inc()
                raise
            if entry.queue.next_ready_at() is not None:  # a gathering queue: the running batch's thread
                self._cond.notify()  # takes it next, so waking an idle one would only put it back to sleep
        return pending

    def _next(self) -> tuple[_Queue, Batch | None, list[Task]] | None:
        """The next ready batch, round-robin over the queues (the lock is held)."""
        now = self.clock()
        entries = list(self._queues.values())
        for offset in range(len(entries)):
            entry = entries[(self._rotation + offset) % len(entries)]
            batch, expired = entry.queue.take(now)
            if batch is not None or expired:
                self._rotation += offset + 1
                return entry, batch, expired
        return None

    def _wait_time(self) -> float | None:
        times = [t for e in self._queues.values() if (t := e.queue.next_ready_at()) is not None]
        return None if not times else max(0.0, min(times) - self.clock())

    def _loop(self) -> None:
        ran: _Queue | None = None  # the queue of the batch this thread ran last, not yet marked finished
        while True:
            with self._cond:
                # Marked finished under the same hold of the lock that looks for the next batch: its
                # gathering batch is ready now, and this thread takes it. With the lock released in
                # between, a request arriving in the gap found no batch running and woke another thread,
                # which found nothing once this one had taken the batch.
                done, ran = ran, None
                if done is not None:
                    done.queue.finished()
                found = None
                while not self._stopped:
                    found = self._next()
                    if found is not None:
                        break
                    self._cond.wait(self._wait_time())
                if found is None:
                    return
                entry, batch, expired = found
                if done is not None and entry is not done and done.queue.next_ready_at() is not None:
                    self._cond.notify()  # another queue's turn (round-robin): a free thread takes this one's
                # Published once per batch taken, from the queues themselves (a multi-process gauge write
                # per request cost the model process ~5% of its CPU).
                depth = sum(e.queue.enqueued_tasks for e in self._queues.values() if e.model == entry.model)
            try:
                self.metrics.BATCH_QUEUE_DEPTH.labels(entry.model).set(depth)
                for task in expired:
                    task.pending.fail(DeadlineExceeded("Deadline exceeded"))
                if batch is not None:
                    self._run(entry, batch)
            except Exception as exc:  # a bug outside the model call: its requests fail, the thread goes on
                log.exception("The batch thread failed around a batch of model %s", entry.model)
                if batch is not None:
                    error = Internal.of_bug(exc)
                    for task in batch.tasks:  # those already answered keep their answer
                        task.pending.fail(error)
            except BaseException:  # this thread ends: the queue must not wait on a batch nobody finishes
                if batch is not None:
                    with self._cond:
                        entry.queue.finished()
                        self._cond.notify()
                raise
            if batch is not None:
                ran = entry

    def _run(self, entry: _Queue, batch: Batch) -> None:
        # The batch's replies leave together: one write per worker connection (ipc.py).
        with coalesced():
            self._run_batch(entry, batch)

    def _run_batch(self, entry: _Queue, batch: Batch) -> None:
        now = self.clock()
        for task in batch.tasks:
            self.metrics.BATCH_QUEUE_DURATION.labels(entry.model).observe(max(0.0, now - task.enqueued_at))
        try:
            inputs, padded = merge(batch.tasks, self.params)
            self.metrics.BATCH_SIZE.labels(entry.model).observe(padded)
            self.metrics.BATCH_PADDING.labels(entry.model).observe(padded - batch.size)
            outputs = entry.runner(inputs)
            results = split(outputs, batch.tasks, padded)
        except ServingError as exc:
            for task in batch.tasks:
                task.pending.fail(exc)
            return
        except Exception as exc:  # a model bug must fail its requests, never the batch thread
            log.exception("Failed to run a batch of %d rows for model %s", batch.size, entry.model)
            error = Internal.of_bug(exc)
            for task in batch.tasks:
                task.pending.fail(error)
            return
        for task, result in zip(batch.tasks, results, strict=True):
            task.pending.set_part(task.part, result)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            left = [t for e in self._queues.values() for b in e.queue.batches for t in b.tasks]
            for entry in self._queues.values():
                entry.queue.batches.clear()
            for model in {entry.model for entry in self._queues.values()}:
                self.metrics.BATCH_QUEUE_DEPTH.labels(model).set(0)
            self._cond.notify_all()
        for task in left:
            task.pending.fail(Unavailable("The batch scheduler is shutting down"))
