"""Operator metrics: reconciles by result, their duration, and errors."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("modelservice_operator_reconciles", "Reconciles of ModelServices by result.", ["result"])
RECONCILE_ERRORS = Counter(
    "modelservice_operator_reconcile_errors", "Reconciles that failed, by kind.", ["kind"]
)
RECONCILE_DURATION = Histogram(
    "modelservice_operator_reconcile_duration_seconds",
    "Time of one reconcile.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHILD_WRITES = Counter(
    "modelservice_operator_child_writes", "Writes to children by kind and action.", ["kind", "action"]
)
