"""Protocol-agnostic inference: resolve the model version, run it under the request deadline.

It runs in the model process (``engine.py``): the protocol layers in the HTTP workers only decode and
encode, and everything that touches a model goes through ``DataPlane``, so deadlines, batching and
metrics apply to every protocol and every worker alike.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from .batcher import BatchingParameters, BatchScheduler, Clock, Done, Runner
from .errors import DeadlineExceeded
from .protocols.tensors import TensorSpec
from .repository import ModelRepository

T = TypeVar("T")


def can_join_a_batch(inputs: Mapping[str, np.ndarray]) -> bool:
    """A request can join a batch when all its inputs share one 0th dimension; any other request runs
    alone and the model decides (as TF Serving without batching does)."""
    sizes = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    return len(sizes) == 1 and -1 not in sizes


def batchable(specs: Mapping[str, TensorSpec]) -> bool:
    """A signature can be batched when every input has a free 0th dimension (or an unknown shape)."""
    return bool(specs) and all(
        spec.shape is None or (len(spec.shape) >= 1 and spec.shape[0] < 0) for spec in specs.values()
    )


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        timeout_ms: int = 0,
        threads: int = 16,
        batching: BatchingParameters | None = None,
        clock: Clock = time.monotonic,
        enforce_deadline: bool = True,
    ) -> None:
        """``enforce_deadline=False`` in the model process: the HTTP worker stops waiting at the deadline
        itself (its socket times out), so a model call needs no thread hop to be given up on."""
        self.repository = repository
        self.timeout_s = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self.clock = clock
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="infer")
            if self.timeout_s is not None and enforce_deadline
            else None
        )
        self.scheduler = BatchScheduler(batching, clock) if batching is not None else None

    def model(self, name: str, version: int | None = None, label: str | None = None) -> Any:
        return self.repository.resolve(name, version, label)

    def _with_deadline(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` and give up waiting at the deadline (504); the model call itself cannot be
        interrupted, but the client gets its answer on time and the thread is reused afterwards."""
        if self._pool is None:
            return fn(*args)
        future = self._pool.submit(fn, *args)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceeded("Deadline exceeded") from None

    def _batch_job(
        self, model: Any, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> tuple[Any, Runner, float | None] | None:
        """(queue key, runner, deadline) when the request goes to the batcher, or None when it runs alone
        (no batching, a signature with a fixed 0th dimension, odd inputs). Shapes are not checked against
        the signature: as in TF Serving, the model decides, and only requests whose inputs agree beyond
        the 0th dimension share a batch."""
        specs: Mapping[str, TensorSpec] = model.input_specs(signature_name)
        if self.scheduler is None or not batchable(specs) or not can_join_a_batch(inputs):
            return None

        def run(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs: dict[str, np.ndarray] = model.predict(signature_name, batch)
            return outputs

        key = (model.name, model.version, signature_name or "serving_default")
        return key, run, None if self.timeout_s is None else self.clock() + self.timeout_s

    def predict(
        self, model: Any, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        job = self._batch_job(model, signature_name, inputs)
        if job is None:
            return self.run_alone(model, signature_name, inputs)
        key, run, deadline = job
        assert self.scheduler is not None  # a job exists only with a scheduler
        return self.scheduler.submit(key, model, model.name, run, inputs, deadline)

    def run_alone(
        self, model: Any, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """A request that does not go to the batcher: one model call, under the deadline."""
        result: dict[str, np.ndarray] = self._with_deadline(model.predict, signature_name, inputs)
        return result

    def predict_async(
        self, model: Any, signature_name: str, inputs: Mapping[str, np.ndarray], on_done: Done
    ) -> bool:
        """Queue a batchable request and return True (``on_done`` gets its outputs or error later), or
        return False when it runs alone (the caller runs ``run_alone``)."""
        job = self._batch_job(model, signature_name, inputs)
        if job is None:
            return False
        key, run, deadline = job
        assert self.scheduler is not None
        self.scheduler.submit_async(key, model, model.name, run, inputs, deadline, on_done)
        return True

    def classify(self, model: Any, signature_name: str, examples: list[bytes]) -> Any:
        return self._with_deadline(model.classify, signature_name, examples)

    def regress(self, model: Any, signature_name: str, examples: list[bytes]) -> Any:
        return self._with_deadline(model.regress, signature_name, examples)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.scheduler is not None:
            self.scheduler.close()
