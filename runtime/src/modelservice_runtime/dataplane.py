"""Protocol-agnostic inference: resolve the model version, run it under the request deadline.

The REST layers (``protocols/``) only decode and encode; everything that touches a model goes through
``DataPlane``, so deadlines, metrics and (later) batching apply to every protocol alike.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from .errors import DeadlineExceeded
from .protocols.tensors import TensorSpec, check_against_signature
from .repository import ModelRepository

T = TypeVar("T")


class DataPlane:
    def __init__(self, repository: ModelRepository, timeout_ms: int = 0, threads: int = 8) -> None:
        self.repository = repository
        self.timeout_s = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="infer")
            if self.timeout_s is not None
            else None
        )

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

    def predict(
        self, model: Any, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        specs: Mapping[str, TensorSpec] = model.input_specs(signature_name)
        check_against_signature(inputs, specs)
        result: dict[str, np.ndarray] = self._with_deadline(model.predict, signature_name, inputs)
        return result

    def classify(self, model: Any, signature_name: str, examples: list[bytes]) -> Any:
        return self._with_deadline(model.classify, signature_name, examples)

    def regress(self, model: Any, signature_name: str, examples: list[bytes]) -> Any:
        return self._with_deadline(model.regress, signature_name, examples)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
