"""Prometheus metrics, declared once, correct across Gunicorn workers.

**For multi-process correctness,** Gunicorn's config sets ``PROMETHEUS_MULTIPROC_DIR`` in the master
before any worker imports ``prometheus_client``; each worker then writes its samples to files there and
``render()`` merges every worker's files, so ``/metrics`` answers the same whichever worker serves it.
Without the variable (tests, the Flask dev server) the default in-process registry is used.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")

REQUESTS = Counter(
    "modelservice_requests",
    "Requests by model, version, API and HTTP status.",
    ["model", "version", "api", "status"],
)
REQUEST_LATENCY = Histogram(
    "modelservice_request_duration_seconds",
    "Request latency from the first byte read to the response built, by model and API.",
    ["model", "api"],
    buckets=LATENCY_BUCKETS,
)
AUTH_REQUESTS = Counter(
    "modelservice_auth_requests",
    "Requests to protected routes by authentication result and client (an API key's name; '-' when refused).",
    ["result", "client"],
)
CACHE_REQUESTS = Counter(
    "modelservice_response_cache_requests",
    "Predict requests looked up in the response cache, by model and result (hit, miss).",
    ["model", "result"],
)
RATE_LIMITED = Counter(
    "modelservice_rate_limited_requests",
    "Requests refused with 429 by the per-client rate limit, by model and client.",
    ["model", "client"],
)
MODEL_LOADS = Counter("modelservice_model_loads", "Model version loads by outcome.", ["model", "result"])
MODEL_LOAD_DURATION = Histogram(
    "modelservice_model_load_duration_seconds",
    "Time to load and warm up one model version.",
    ["model"],
    buckets=LOAD_BUCKETS,
)
MODEL_VERSION_STATE = Gauge(
    "modelservice_model_version_state",
    "1 for the state each model version is in (START, LOADING, AVAILABLE, UNLOADING, END), per worker.",
    ["model", "version", "state"],
    multiprocess_mode="liveall",
)

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
BATCH_SIZE = Histogram(
    "modelservice_batch_size",
    "Rows per model call formed by the batcher, padding included (TF Serving's processed_batch_size).",
    ["model"],
    buckets=BATCH_SIZE_BUCKETS,
)
BATCH_PADDING = Histogram(
    "modelservice_batch_padding_rows",
    "Rows added to reach an allowed batch size (TF Serving's padding_size).",
    ["model"],
    buckets=(0, *BATCH_SIZE_BUCKETS),
)
BATCH_QUEUE_DEPTH = Gauge(
    "modelservice_batch_queue_depth",
    "Tasks waiting in the batch queues, summed over workers.",
    ["model"],
    multiprocess_mode="livesum",
)
BATCH_QUEUE_DURATION = Histogram(
    "modelservice_batch_queue_duration_seconds",
    "Time a task waited in the batch queue before its batch started.",
    ["model"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BATCH_REJECTED = Counter(
    "modelservice_batch_rejected",
    "Requests refused with 503 because the batch queue was full (max_enqueued_batches).",
    ["model"],
)
REQUESTS_SHED = Counter(
    "modelservice_requests_shed",
    "Requests refused with 503 by overload control (queueing delay above --max_queue_delay_ms).",
    ["api"],
)


_request_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}


def observe_request(model: str, version: str, api: str, status: int, seconds: float) -> None:
    # A label set's children are looked up once (``labels()`` takes a lock and builds a key each call;
    # this runs for every request). Label sets are few: models x versions x APIs x statuses.
    key = (model, version, api, status)
    children = _request_children.get(key)
    if children is None:
        children = (REQUESTS.labels(model, version, api, str(status)), REQUEST_LATENCY.labels(model, api))
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_load(model: str, seconds: float, ok: bool) -> None:
    MODEL_LOADS.labels(model, "success" if ok else "failure").inc()
    if ok:
        MODEL_LOAD_DURATION.labels(model).observe(seconds)


def set_version_state(model: str, version: int, state: str) -> None:
    for candidate in STATES:
        MODEL_VERSION_STATE.labels(model, str(version), candidate).set(1 if candidate == state else 0)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, merged across workers in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
