"""Condition types, reasons and messages in one place, and ``set_condition``.

Conditions follow the Kubernetes API conventions: type/status/reason/message/lastTransitionTime/
observedGeneration; ``lastTransitionTime`` only moves when the status changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CAPACITY_CONSTRAINED = "CapacityConstrained"  # only on ModelServices that ask for GPUs
TYPES = (READY, PROGRESSING, DEGRADED)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Reasons (CamelCase, machine-readable).
RECONCILING = "Reconciling"
INVALID_SPEC = "InvalidSpec"
APPLY_REJECTED = "ApplyRejected"
AVAILABLE = "Available"
SCALED_TO_ZERO = "ScaledToZero"
ROLLING_OUT = "RollingOut"
ROLLOUT_COMPLETE = "RolloutComplete"
PODS_NOT_READY = "PodsNotReady"
UNSCHEDULABLE = "Unschedulable"
IMAGE_PULL = "ImagePullBackOff"
CRASH_LOOP = "CrashLoopBackOff"
CONTAINER_CONFIG = "CreateContainerConfigError"
DOWNLOADING_MODEL = "DownloadingModel"  # the storage initializer is fetching s3:// or http(s):// models
MODEL_DOWNLOAD_FAILED = "ModelDownloadFailed"
PROGRESS_DEADLINE = "ProgressDeadlineExceeded"
AS_EXPECTED = "AsExpected"
# Rollouts (canary, blue-green): the phase of a rollout shows in these reasons.
ROLLOUT_STARTED = "RolloutStarted"
ROLLOUT_PAUSED = "RolloutPaused"
ROLLOUT_ABORTED = "RolloutAborted"
ROLLOUT_RETRIED = "RolloutRetried"
ROLLOUT_PROMOTED = "RolloutPromoted"
ROLLOUT_SUPERSEDED = "RolloutSuperseded"
STEP_COMPLETED = "StepCompleted"
ANALYSIS_FAILED = "AnalysisFailed"  # an automatic rollback
PROMOTING_IN_BATCHES = "PromotingInBatches"  # blue-green without GPUs for a full-size preview
INSUFFICIENT_GPU_CAPACITY = "InsufficientGPUCapacity"
GPU_CAPACITY_AVAILABLE = "GPUCapacityAvailable"
GPU_CAPACITY = "GPUCapacity"  # Events: the capacity decision of a rollout changed
# Clients cannot reach the ready pods through the Service yet, or at all.
ENDPOINTS_PENDING = "EndpointsPending"
SERVICE_NOT_SELECTING = "ServiceNotSelectingPods"
# The API server could not be used: each one clears by itself once its cause is fixed.
FORBIDDEN = "Forbidden"
UNAUTHORIZED = "Unauthorized"
API_UNAVAILABLE = "APIUnavailable"
THROTTLED = "Throttled"
CHILD_CONFLICT = "ChildConflict"
ROUTE_NOT_READY = "HTTPRouteNotReady"

# Reasons whose Events are warnings.
WARNING_REASONS = frozenset({
    INVALID_SPEC, APPLY_REJECTED, UNSCHEDULABLE, IMAGE_PULL, CRASH_LOOP, CONTAINER_CONFIG, PROGRESS_DEADLINE,
    SERVICE_NOT_SELECTING, ROLLOUT_ABORTED, ANALYSIS_FAILED, INSUFFICIENT_GPU_CAPACITY, FORBIDDEN, UNAUTHORIZED, API_UNAVAILABLE, THROTTLED, CHILD_CONFLICT, ROUTE_NOT_READY,
})  # fmt: skip


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; ``lastTransitionTime`` kept when the status is unchanged."""
    result = [dict(c) for c in conditions if c.get("type") != type_]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    result.append(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition or now,
            "observedGeneration": generation,
        }
    )
    order = {t: i for i, t in enumerate(TYPES)}
    return sorted(result, key=lambda c: order.get(str(c.get("type")), len(order)))


def get_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)
