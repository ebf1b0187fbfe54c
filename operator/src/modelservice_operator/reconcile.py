"""One reconcile of one ModelService, as a short sequence of named steps.

It imports no Kopf: handlers.py calls ``reconcile()`` and turns its result into a status patch, Events
and retries. Each early return says why. The result carries the Events to post, so the steps themselves
stay testable without an operator running.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import conditions as c
from .api import InvalidSpec, ModelServiceSpec, parse_spec
from .apply import ApiError, ChildResult, KubeClient, prune_child, reconcile_child
from .naming import child_name, selector_labels, selector_string
from .render import RenderOptions, render_children
from .status import Observed, compute_status, invalid_status, without_times

OPTIONAL_CHILDREN = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] | None = None  # None: nothing to write
    events: list[Event] = field(default_factory=list)
    ready: bool = False
    retry_after: float | None = None  # transient failure: try again after this many seconds
    children: list[ChildResult] = field(default_factory=list)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _status_changed(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return without_times(previous) != without_times(new)


def _event_for(result: ChildResult) -> Event | None:
    if result.action == "unchanged":
        return None
    return Event(
        "Normal", result.action.capitalize(), f"{result.action.capitalize()} {result.kind} {result.name}"
    )


async def reconcile_children(
    client: KubeClient, spec: ModelServiceSpec, options: RenderOptions
) -> list[ChildResult]:
    """Apply every desired child, then remove the optional ones the spec no longer asks for."""
    desired = render_children(spec, options)
    results = [await reconcile_child(client, child) for child in desired]
    wanted = {child["kind"] for child in desired}
    for api_version, kind in OPTIONAL_CHILDREN:
        if kind not in wanted:
            pruned = await prune_child(
                client, api_version, kind, spec.namespace, child_name(spec.name), spec.uid
            )
            if pruned is not None:
                results.append(pruned)
    return results


async def observe(
    client: KubeClient, spec: ModelServiceSpec, deployment: Mapping[str, Any] | None
) -> Observed:
    pods = await client.list("v1", "Pod", spec.namespace, selector_string(selector_labels(spec.name)))
    return Observed(deployment=deployment, pods=pods)


async def reconcile(
    body: Mapping[str, Any], client: KubeClient, options: RenderOptions, now: str | None = None
) -> Outcome:
    now = now or utc_now()
    metadata = body.get("metadata", {})
    generation = int(metadata.get("generation", 0) or 0)
    previous: Mapping[str, Any] = body.get("status") or {}
    outcome = Outcome()

    # Step 1: parse. A spec we cannot act on is reported, not retried.
    try:
        spec = parse_spec(body)
    except InvalidSpec as exc:
        new = invalid_status(previous, generation, c.INVALID_SPEC, str(exc), now, Observed())
        if _status_changed(previous, new):
            outcome.status = new
            outcome.events.append(Event("Warning", c.INVALID_SPEC, str(exc)))
        return outcome

    # Step 2: the API rejected this very generation before: retrying cannot help until the spec changes.
    ready = c.get_condition(previous.get("conditions"), c.READY)
    if (
        ready is not None
        and ready.get("reason") == c.APPLY_REJECTED
        and previous.get("observedGeneration") == generation
    ):
        return outcome

    # Step 3: children.
    try:
        outcome.children = await reconcile_children(client, spec, options)
    except ApiError as exc:
        if not exc.permanent:
            outcome.retry_after = 10
            return outcome
        new = invalid_status(
            previous,
            generation,
            c.APPLY_REJECTED,
            f"The API server rejected a child: {exc.message}",
            now,
            Observed(),
        )
        outcome.status = new
        outcome.events.append(Event("Warning", c.APPLY_REJECTED, exc.message))
        return outcome
    outcome.events.extend(e for e in (_event_for(r) for r in outcome.children) if e is not None)

    # Step 4: observe the Deployment and its pods, then compute the status.
    deployment = next((r.observed for r in outcome.children if r.kind == "Deployment"), None)
    try:
        observed = await observe(client, spec, deployment)
    except ApiError as exc:
        if not exc.permanent:
            outcome.retry_after = 10
            return outcome
        raise
    new = compute_status(spec, generation, observed, previous, now)
    ready_now = c.get_condition(new["conditions"], c.READY)
    outcome.ready = bool(ready_now and ready_now.get("status") == c.TRUE)

    # Step 5: write the status only when something other than time changed.
    if _status_changed(previous, new):
        outcome.status = new
        old_ready = c.get_condition(previous.get("conditions"), c.READY)
        if ready_now is not None and (
            old_ready is None or old_ready.get("reason") != ready_now.get("reason")
        ):
            kind = "Normal" if ready_now.get("status") != c.FALSE or ready_now.get("reason") in (
                c.ROLLING_OUT, c.PODS_NOT_READY) else "Warning"  # fmt: skip
            outcome.events.append(Event(kind, str(ready_now.get("reason")), str(ready_now.get("message"))))
    return outcome
