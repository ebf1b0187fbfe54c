"""Operator metrics: reconciles by result, their duration, child writes, API requests and the queue."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("modelservice_operator_reconciles", "Reconciles of ModelServices by result.", ["result"])
RECONCILE_DURATION = Histogram(
    "modelservice_operator_reconcile_duration_seconds",
    "Time of one reconcile.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHILD_WRITES = Counter(
    "modelservice_operator_child_writes", "Writes to children by kind and action.", ["kind", "action"]
)
API_REQUESTS = Counter(
    "modelservice_operator_api_requests", "Requests of the operator's own client by method and status code.",
    ["method", "code"],
)  # fmt: skip
QUEUE_DEPTH = Gauge("modelservice_operator_queue_depth", "ModelServices waiting for a reconcile worker.")
