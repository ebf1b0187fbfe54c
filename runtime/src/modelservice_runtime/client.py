"""The HTTP workers' view of the models: operations on the engine, with what can be cached cached.

The protocol layers (``protocols/``) decode a request against a signature's specs, call ``predict`` and
encode the outputs. ``EngineClient`` gives them that over a transport: ``LocalTransport`` (the engine in
this process: tests, ``flask run``) or ``ipc.SocketTransport`` (the model process of the pod).

**Caching.** A request needs its version resolved and its signature's specs before it can be decoded.
Both are cached here and every reply carries the engine's *generation* (bumped when a version loads or
unloads, or the config changes): a reply with a newer one clears the caches. So a warm request is one
round trip. A request decoded against a version that stopped being the latest meanwhile is still served
by the new one when their signatures agree (the engine checks); otherwise it gets 503 and a retry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .protocols.tensors import TensorSpec, signature_key

Specs = tuple[dict[str, TensorSpec], dict[str, TensorSpec], str]  # inputs, outputs, signature_key


class LocalTransport:
    """The engine in this process: calls go straight to it, nothing is copied."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def index(self) -> int:
        return 0

    def __call__(self, op: str, args: Sequence[Any]) -> tuple[int, Any]:
        value = self.engine.call(op, args)
        return self.engine.generation, value

    def each(self, op: str, args: Sequence[Any]) -> list[Any]:
        return [self(op, args)[1]]

    def first(self, op: str, args: Sequence[Any]) -> Any:
        return self(op, args)[1]

    def close(self) -> None:
        self.engine.close()


class ModelHandle:
    """One resolved model version, as a request sees it: its specs, and how the request named it."""

    __slots__ = ("_client", "label", "name", "requested", "version")

    def __init__(
        self, client: EngineClient, name: str, version: int, requested: int | None, label: str | None
    ):
        self._client = client
        self.name = name
        self.version = version
        self.requested = requested
        self.label = label

    def input_specs(self, signature: str) -> dict[str, TensorSpec]:
        return self._client.specs(self.name, self.version, signature)[0]

    def output_specs(self, signature: str) -> dict[str, TensorSpec]:
        return self._client.specs(self.name, self.version, signature)[1]


class _Cache:
    """What a worker knows of one model process, valid while its generation stays the same."""

    def __init__(self) -> None:
        self.generation = -1
        self.resolved: dict[tuple[Any, ...], int] = {}
        self.specs: dict[tuple[Any, ...], Specs] = {}
        self.lock = threading.Lock()


class EngineClient:
    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._caches: dict[int, _Cache] = {}

    def _cache(self) -> _Cache:
        index = self.transport.index()
        cache = self._caches.get(index)
        if cache is None:
            cache = self._caches.setdefault(index, _Cache())
        return cache

    def _call(self, op: str, *args: Any) -> tuple[int, Any]:
        cache = self._cache()
        generation, value = self.transport(op, args)
        if generation > cache.generation:
            with cache.lock:
                if generation > cache.generation:
                    cache.generation = generation
                    cache.resolved.clear()
                    cache.specs.clear()
        return generation, value

    def call(self, op: str, *args: Any) -> Any:
        return self._call(op, *args)[1]

    # -- models

    def model(self, name: str, version: int | None = None, label: str | None = None) -> ModelHandle:
        cache = self._cache()
        resolved = cache.resolved.get((cache.generation, name, version, label))
        if resolved is None:
            generation, resolved = self._call("resolve", name, version, label)
            cache.resolved[(generation, name, version, label)] = resolved
        return ModelHandle(self, name, resolved, version, label)

    def specs(self, name: str, version: int, signature: str) -> Specs:
        cache = self._cache()
        specs = cache.specs.get((cache.generation, name, version, signature))
        if specs is None:
            generation, (inputs, outputs) = self._call("specs", name, version, signature)
            specs = (inputs, outputs, signature_key(inputs))
            cache.specs[(generation, name, version, signature)] = specs
        return specs

    def predict(
        self, model: ModelHandle, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        return self.predict_served(model, signature, inputs)[1]

    def predict_served(
        self, model: ModelHandle, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> tuple[int, dict[str, np.ndarray]]:
        """(the version that served it, the outputs): a newer version with the same signature may serve a
        request decoded against the one it resolved to."""
        decoded_as = self.specs(model.name, model.version, signature)[2]
        _, (served, outputs) = self._call(
            "predict", model.name, model.requested, model.label, model.version, signature, decoded_as, inputs
        )
        return int(served), outputs

    def cache_get(
        self, api: str, name: str, version: int | None, label: str | None, signature: Any, digest: bytes
    ) -> tuple[int, bytes | None]:
        """(the version the request resolves to, its cached body or None), from the pod's cache."""
        result: tuple[int, bytes | None] = self.transport.first(
            "cache_get", (api, name, version, label, signature, digest)
        )
        return result

    def cache_put(self, api: str, name: str, served: int, signature: Any, digest: bytes, body: bytes) -> None:
        self.transport.first("cache_put", (api, name, served, signature, digest, body))

    def classify(
        self, name: str, version: int | None, label: str | None, doc: dict[str, Any]
    ) -> tuple[int, Any]:
        result: tuple[int, Any] = self.call("classify", name, version, label, doc)
        return result

    def regress(
        self, name: str, version: int | None, label: str | None, doc: dict[str, Any]
    ) -> tuple[int, Any]:
        result: tuple[int, Any] = self.call("regress", name, version, label, doc)
        return result

    def tfs_status(self, name: str, version: int | None, label: str | None) -> str:
        return str(self.call("tfs_status", name, version, label))

    def tfs_metadata(self, name: str, version: int | None, label: str | None) -> tuple[int, str]:
        result: tuple[int, str] = self.call("tfs_metadata", name, version, label)
        return result

    def review(self, token: str, verb: str) -> Any:
        """Kubernetes authentication's verdict on a token, from the first model process (one cache)."""
        return self.transport.first("review", (token, verb))

    def admit(self, client: str, model: str) -> Any:
        """A token from the pod's rate limit for (client, model): one model process keeps the buckets."""
        return self.transport.first("admit", (client, model))

    def model_ready(self, name: str, version: int | None) -> bool:
        return bool(self.call("model_ready", name, version))

    # -- the repository

    def available(self) -> dict[str, list[int]]:
        return dict(self.call("available"))

    def readiness(self) -> tuple[list[str], list[str]]:
        """(models served, models not ready yet) over every model process: ready needs all of them."""
        answers = self.transport.each("readiness", ())
        names = sorted(set.intersection(*(set(n) for n, _ in answers)))
        waiting = sorted(set().union(*(set(w) for _, w in answers)))
        return names, waiting

    def close(self) -> None:
        self.transport.close()
