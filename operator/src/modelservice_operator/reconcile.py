"""One reconcile of one ModelService: a short sequence of named steps over one observed context.

It imports no Kopf and reads no API: ``controller.py`` hands it the ModelService and what the watches
observed (``context.py``), and a client that writes. Each step builds its desired children, lets
``kube.apply`` classify and act, and records what it did in the context; ``sync_status`` writes the
status only when something other than time changed, and Events only for transitions. API failures end
the steps early and are reported in the status, with the kind of retry they call for (``Outcome.error``);
the caller owns the retry timing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import API_VERSION, KIND
from . import conditions as c
from .api import InvalidSpec, ModelServiceSpec, parse_spec
from .context import ObservedChildren
from .kube.apply import ChildConflict, ChildResult, ChildWriter, apply_child, prune_child
from .kube.errors import (
    ApiError,
    ApiForbidden,
    ApiRejected,
    ApiThrottled,
    ApiUnauthorized,
    KubeError,
)
from .naming import child_name
from .render import RenderOptions
from .render.deployment import render_deployment
from .render.fields import spec_field
from .render.hpa import render_hpa
from .render.pdb import render_pdb
from .render.service import render_service
from .status import blocked_status, compute_status, invalid_status, without_times

# The previous operator version ran Kopf timers, which put this finalizer on every ModelService; this
# version needs none, and an object left with it could never be deleted.
LEGACY_FINALIZER = "serving.modelservice.io/finalizer"


class Client(ChildWriter, Protocol):
    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: Mapping[str, Any]) -> dict[str, Any] | None: ...  # fmt: skip
    async def create_event(self, event: Mapping[str, Any]) -> None: ...
    async def remove_finalizer(self, obj: Mapping[str, Any], finalizer: str) -> None: ...


async def release_legacy_finalizer(body: Mapping[str, Any], client: Client) -> bool:
    """Remove the previous version's finalizer; True when there was one."""
    if LEGACY_FINALIZER not in (body.get("metadata", {}).get("finalizers") or []):
        return False
    await client.remove_finalizer({"apiVersion": API_VERSION, "kind": KIND, **body}, LEGACY_FINALIZER)
    return True


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] | None = None  # what was written; None: nothing
    events: list[Event] = field(default_factory=list)
    children: list[ChildResult] = field(default_factory=list)
    ready: bool = False
    error: Exception | None = None  # KubeError (retry with backoff) or a rejection (retry slowly)

    @property
    def writes(self) -> int:
        return (
            sum(r.action != "unchanged" for r in self.children) + (self.status is not None) + len(self.events)
        )


@dataclass
class ReconcileContext:
    body: Mapping[str, Any]
    spec: ModelServiceSpec
    observed: ObservedChildren
    client: Client
    options: RenderOptions
    now: str
    outcome: Outcome = field(default_factory=Outcome)
    failed_child: tuple[str, str] = ("", "")

    @property
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation", 0) or 0)

    async def apply(self, desired: Mapping[str, Any]) -> ChildResult:
        kind, name = desired["kind"], desired["metadata"]["name"]
        self.failed_child = (kind, name)
        result = await apply_child(self.client, desired, self.observed.named(kind, name), self.spec.uid)
        self.failed_child = ("", "")
        if result.observed is not None:
            self.observed.put(result.observed)
        self.outcome.children.append(result)
        return result

    async def prune(self, kind: str, keep: set[str]) -> None:
        """Delete our children of ``kind`` whose names the spec no longer produces."""
        for stale in self.observed.of_kind(kind):
            if stale["metadata"]["name"] in keep:
                continue
            self.failed_child = (kind, stale["metadata"]["name"])
            result = await prune_child(self.client, stale, self.spec.uid)
            self.failed_child = ("", "")
            if result is not None:
                self.observed.drop(kind, result.name)
                self.outcome.children.append(result)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------------------------------- steps


async def reconcile_workloads(ctx: ReconcileContext) -> None:
    desired = render_deployment(ctx.spec, ctx.options.default_image, ctx.options.image_pull_policy)
    result = await ctx.apply(desired)
    # A Deployment under an older name (an earlier naming scheme) goes once the new one serves.
    observed = result.observed or {}
    status = observed.get("status") or {}
    if int(status.get("availableReplicas", 0) or 0) >= ctx.spec.replicas:
        await ctx.prune("Deployment", {desired["metadata"]["name"]})


async def reconcile_services(ctx: ReconcileContext) -> None:
    desired = render_service(ctx.spec)
    await ctx.apply(desired)
    await ctx.prune("Service", {desired["metadata"]["name"]})


async def reconcile_autoscaling(ctx: ReconcileContext) -> None:
    desired = render_hpa(ctx.spec)
    if desired is not None:
        await ctx.apply(desired)
    await ctx.prune("HorizontalPodAutoscaler", {desired["metadata"]["name"]} if desired else set())


async def reconcile_disruption_budget(ctx: ReconcileContext) -> None:
    desired = render_pdb(ctx.spec)
    if desired is not None:
        await ctx.apply(desired)
    await ctx.prune("PodDisruptionBudget", {desired["metadata"]["name"]} if desired else set())


STEPS = (reconcile_workloads, reconcile_services, reconcile_autoscaling, reconcile_disruption_budget)


def compute(ctx: ReconcileContext) -> dict[str, Any]:
    previous: Mapping[str, Any] = ctx.body.get("status") or {}
    name = child_name(ctx.spec.name)
    return compute_status(ctx.spec, ctx.generation, ctx.observed.for_status(name, name), previous, ctx.now)


def describe_failure(ctx: ReconcileContext, exc: Exception) -> tuple[str, str]:
    """(reason, message) for the status: what failed, and what would fix it."""
    kind, name = ctx.failed_child
    what = f"{kind} {name}" if kind else "the ModelService status"
    if isinstance(exc, ChildConflict):
        return c.CHILD_CONFLICT, str(exc)
    if isinstance(exc, ApiForbidden):
        return c.FORBIDDEN, f"{exc.message}; grant it in the operator's Role (the chart's rbac.yaml)"
    if isinstance(exc, ApiUnauthorized):
        return c.UNAUTHORIZED, f"The API server rejected the operator's credentials: {exc.message}"
    if isinstance(exc, ApiThrottled):
        return c.THROTTLED, f"The API server is throttling the operator: {exc.message}"
    if isinstance(exc, ApiRejected):
        field_path = spec_field(kind, exc.fields)
        return c.APPLY_REJECTED, f"{field_path}: the API server rejected {what}: {exc.message}"
    if isinstance(exc, ApiError):
        return c.API_UNAVAILABLE, f"Writing {what} failed: {exc}"
    return c.API_UNAVAILABLE, f"Writing {what} failed: {exc or type(exc).__name__}"


async def write_status(client: Client, body: Mapping[str, Any], new: dict[str, Any]) -> bool:
    """Write ``new`` as the whole status when more than time changed; True when it was written."""
    previous: Mapping[str, Any] = body.get("status") or {}
    if without_times(previous) == without_times(new):
        return False
    patch: dict[str, Any] = {key: None for key in previous if key not in new}  # merge patch: removed keys
    patch.update(new)
    meta = body["metadata"]
    await client.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], patch)
    return True


async def sync_status(ctx: ReconcileContext, new: dict[str, Any]) -> None:
    previous: Mapping[str, Any] = ctx.body.get("status") or {}
    ready_now = c.get_condition(new.get("conditions"), c.READY)
    ctx.outcome.ready = bool(ready_now and ready_now.get("status") == c.TRUE)
    if not await write_status(ctx.client, ctx.body, new):
        return  # only time changed: nothing to write
    ctx.outcome.status = new
    old_ready = c.get_condition(previous.get("conditions"), c.READY)
    # The first status is not a transition; later changes of the Ready reason are.
    if ready_now is not None and old_ready is not None and old_ready.get("reason") != ready_now.get("reason"):
        reason = str(ready_now.get("reason"))
        kind = "Warning" if reason in c.WARNING_REASONS else "Normal"
        ctx.outcome.events.append(Event(kind, reason, str(ready_now.get("message"))))


def child_events(results: list[ChildResult]) -> list[Event]:
    """One Event per kind of action ("Created Deployment iris, Service iris"), not one per child."""
    by_action: dict[str, list[str]] = {}
    for result in results:
        if result.action != "unchanged":
            drift = f" ({', '.join(result.drift)} changed by someone else)" if result.drift else ""
            by_action.setdefault(result.action, []).append(f"{result.kind} {result.name}{drift}")
    return [Event("Normal", action.capitalize(), f"{action.capitalize()} {', '.join(items)}")
            for action, items in by_action.items()]  # fmt: skip


def event_body(ms: Mapping[str, Any], event: Event, now: str) -> dict[str, Any]:
    meta = ms["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid", ""),
                           "resourceVersion": meta.get("resourceVersion", "")},
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": "modelservice-operator"},
        "reportingComponent": "modelservice-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }  # fmt: skip


async def post_events(client: Client, body: Mapping[str, Any], events: list[Event], now: str) -> None:
    for event in events:
        with contextlib.suppress(KubeError):  # Events are best effort: never fail a reconcile for one
            await client.create_event(event_body(body, event, now))


# --------------------------------------------------------------------------------------- the entry


async def reconcile(
    body: Mapping[str, Any], observed: ObservedChildren, client: Client, options: RenderOptions,
    now: str | None = None,
) -> Outcome:  # fmt: skip
    now = now or utc_now()
    previous: Mapping[str, Any] = body.get("status") or {}
    generation = int(body.get("metadata", {}).get("generation", 0) or 0)

    # A spec we cannot act on is reported; it changes only when the spec does.
    try:
        spec = parse_spec(body)
    except InvalidSpec as exc:
        outcome = Outcome()
        new = invalid_status(previous, generation, c.INVALID_SPEC, str(exc), now, observed.for_status("", ""))
        if await write_status(client, body, new):
            outcome.status = new
            outcome.events.append(Event("Warning", c.INVALID_SPEC, str(exc)))
            await post_events(client, body, outcome.events, now)
        return outcome

    ctx = ReconcileContext(body, spec, observed, client, options, now)
    try:
        for step in STEPS:
            await step(ctx)
    except (KubeError, ChildConflict) as exc:
        ctx.outcome.error = exc
        reason, message = describe_failure(ctx, exc)
        name = child_name(spec.name)
        new = blocked_status(
            spec, previous, generation, reason, message, now, observed.for_status(name, name)
        )
    else:
        new = compute(ctx)
    ctx.outcome.events[:0] = child_events(ctx.outcome.children)
    try:
        await sync_status(ctx, new)
    except KubeError as exc:
        ctx.outcome.error = ctx.outcome.error or exc
    await post_events(client, body, ctx.outcome.events, now)
    return ctx.outcome
