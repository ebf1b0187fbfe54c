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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from . import API_VERSION, KIND
from . import conditions as c
from .analysis import Measurement
from .api import InvalidSpec, ModelServiceSpec, parse_spec
from .capacity import Free
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
from .metrics_source import MetricsSource, ProxyClient
from .naming import REVISION_LABEL, child_name
from .render import RenderOptions
from .render.deployment import render_deployment
from .render.fields import spec_field
from .render.hpa import render_hpa
from .render.identity import render_auth_delegator_binding, render_service_account
from .render.pdb import render_pdb
from .render.service import render_services
from .rollout import Plan, RolloutObserved, due_analyses, plan, timestamp
from .status import blocked_status, compute_status, invalid_status, serving_workloads, without_times

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"

# The previous operator version ran Kopf timers, which put this finalizer on every ModelService; this
# version needs none, and an object left with it could never be deleted.
LEGACY_FINALIZER = "serving.modelservice.io/finalizer"


class Client(ChildWriter, ProxyClient, Protocol):
    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def scale(self, obj: Mapping[str, Any], replicas: int) -> dict[str, Any]: ...
    async def patch_json(
        self, obj: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]: ...
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


class RouteNotReady(Exception):
    """The user's HTTPRoute cannot carry the canary's weight yet (missing, or without our backendRefs).

    Not an API failure and not a bad spec: the user fixes the route, and the next try (``retry_after``)
    picks it up; HTTPRoutes are not watched.
    """

    retry_after = 15.0


@dataclass
class Outcome:
    status: dict[str, Any] | None = None  # what was written; None: nothing
    events: list[Event] = field(default_factory=list)
    children: list[ChildResult] = field(default_factory=list)
    ready: bool = False
    error: Exception | None = None  # KubeError (retry with backoff) or a rejection (retry slowly)
    requeue_after: float | None = None  # the rollout waits for time to pass (a pause, a delay)
    capacity_constrained: bool = False  # the rollout waits for a GPU: reconcile again when one frees

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
    clock: float = 0.0  # ``now`` in seconds, for the rollout planner
    outcome: Outcome = field(default_factory=Outcome)
    failed_child: tuple[str, str] = ("", "")
    plan: Plan | None = None  # made by reconcile_workloads, carried out by the later steps
    metrics: MetricsSource | None = None  # analysis scrapes; None: analyses see no measurement
    route: dict[str, Any] | None = None  # the user's HTTPRoute, once read
    binding: str | None = None  # the runtime's ClusterRoleBinding once settled ("": none); None: not yet

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
    return timestamp(time.time())


def _seconds(now: str) -> float:
    return datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


# ------------------------------------------------------------------------------------------- steps


BINDING_STATUS = "authDelegatorBinding"


async def reconcile_runtime_identity(ctx: ReconcileContext) -> None:
    """With Kubernetes authentication: the runtime's ServiceAccount (an owned child) and its binding to
    system:auth-delegator (cluster-scoped, so not owned: the status records it, and the operator deletes
    it when authentication is turned off or the ModelService is deleted)."""
    recorded = str((ctx.body.get("status") or {}).get(BINDING_STATUS, "") or "")
    if ctx.spec.runtime.kubernetes_auth:
        account = await ctx.apply(render_service_account(ctx.spec))
        binding = render_auth_delegator_binding(ctx.spec)
        name = binding["metadata"]["name"]
        if recorded != name or account.action in ("created", "replaced"):
            ctx.failed_child = ("ClusterRoleBinding", name)
            await ctx.client.apply(binding)
            ctx.failed_child = ("", "")
            ctx.outcome.children.append(ChildResult("ClusterRoleBinding", name, "applied", None))
        ctx.binding = name
        return
    await ctx.prune("ServiceAccount", set())
    if recorded:
        ctx.failed_child = ("ClusterRoleBinding", recorded)
        if await ctx.client.delete("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", recorded):
            ctx.outcome.children.append(ChildResult("ClusterRoleBinding", recorded, "deleted", None))
        ctx.failed_child = ("", "")
    ctx.binding = ""


async def reconcile_workloads(ctx: ReconcileContext) -> None:
    """Plan the rollout from what is observed, then give every revision's Deployment its pods.

    The desired revision is applied whole; Deployments of other revisions (which the spec no longer
    renders) only get their replica count set. Scale-ups come first here; Deployments the plan retires
    go last (``retire_revisions``), once the Services no longer select them.
    """
    desired = render_deployment(ctx.spec, ctx.options.default_image, ctx.options.image_pull_policy)
    name = desired["metadata"]["name"]
    deployments = ctx.observed.of_kind("Deployment")
    route_weight = await observe_route_weight(ctx)
    measurements = await measure_due_analyses(ctx)
    ctx.plan = plan(
        ctx.spec,
        RolloutObserved(
            workloads=serving_workloads(
                deployments, ctx.observed.of_kind("Pod"), ctx.observed.of_kind("EndpointSlice")
            ),
            desired_name=name,
            desired_revision=desired["metadata"]["labels"][REVISION_LABEL],
            previous=ctx.body.get("status") or {},
            route_weight=route_weight,
            gpu_free=free_gpus(ctx, desired),
            scheduled_pods=ctx.observed.scheduled_pods(),
            measurements=measurements,
        ),
        ctx.clock,
    )
    ctx.outcome.capacity_constrained = bool(ctx.plan.capacity and ctx.plan.capacity.constrained)
    ctx.outcome.requeue_after = ctx.plan.requeue_after
    ctx.outcome.events.extend(Event(e.type, e.reason, e.message) for e in ctx.plan.events)
    desired["spec"]["replicas"] = ctx.plan.replicas.get(name, 0)
    await ctx.apply(desired)
    for other in list(deployments):
        other_name = other["metadata"]["name"]
        count = ctx.plan.replicas.get(other_name)
        if other_name == name or count is None or int(other.get("spec", {}).get("replicas", 0) or 0) == count:
            continue
        ctx.failed_child = ("Deployment", other_name)
        scaled = await ctx.client.scale(other, count)
        ctx.failed_child = ("", "")
        ctx.observed.put(scaled)
        ctx.outcome.children.append(
            ChildResult("Deployment", other_name, "scaled", scaled, detail=f"to {count}")
        )


async def measure_due_analyses(ctx: ReconcileContext) -> dict[str, Measurement | None]:
    """Scrape the runtime pods for every analysis whose interval is up (before planning: the planner
    is pure and only folds the measurements in)."""
    status: Mapping[str, Any] = ctx.body.get("status") or {}
    if ctx.metrics is None:
        return {}
    return {
        key: await ctx.metrics.measure(ctx.client, ctx.spec, ctx.observed, status, key, ctx.clock)
        for key in due_analyses(status, ctx.clock)
    }


def free_gpus(ctx: ReconcileContext, desired: Mapping[str, Any]) -> Free | None:
    """Room for more pods shaped like ``desired`` on the nodes its nodeSelector and tolerations allow;
    None when the spec asks for no GPU or no node with that GPU is known (no Node watch, no such nodes yet)."""
    gpu = ctx.spec.gpu
    if gpu is None or ctx.observed.gpus is None:
        return None
    pod = desired["spec"]["template"]["spec"]
    found = ctx.observed.gpus.free(gpu.resource_name, gpu.count, pod.get("nodeSelector") or {},
                                   pod.get("tolerations") or ())  # fmt: skip
    return found if found.nodes else None


async def reconcile_services(ctx: ReconcileContext) -> None:
    assert ctx.plan is not None
    services = render_services(
        ctx.spec, ctx.plan.main_revision, ctx.plan.stable_service_revision, ctx.plan.canary_service_revision
    )
    for service in services:
        await ctx.apply(service)
    await ctx.prune("Service", {s["metadata"]["name"] for s in services})


def _route_refs(route: Mapping[str, Any], names: tuple[str, str]) -> list[tuple[int, int, str, int]]:
    """(rule index, backendRef index, name, weight) of our two Services' backendRefs in the route."""
    found = []
    for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        for j, ref in enumerate(rule.get("backendRefs") or []):
            if ref.get("name") in names and ref.get("kind", "Service") == "Service":
                found.append((i, j, str(ref["name"]), int(ref.get("weight", 1))))
    return found


def _route_names(spec: ModelServiceSpec) -> tuple[str, str]:
    return child_name(spec.name, "stable"), child_name(spec.name, "canary")


async def _read_route(ctx: ReconcileContext) -> dict[str, Any]:
    """The user's HTTPRoute, read once per reconcile (its weights are planned and set from this copy)."""
    if ctx.route is not None:
        return ctx.route
    route_name = ctx.spec.rollout.canary.http_route
    ctx.failed_child = ("HTTPRoute", route_name)
    route = await ctx.client.get(GATEWAY_API_VERSION, "HTTPRoute", ctx.spec.namespace, route_name)
    ctx.failed_child = ("", "")
    stable, canary = _route_names(ctx.spec)
    if route is None:
        raise RouteNotReady(
            f"HTTPRoute {route_name} (spec.rollout.canary.trafficRouting.gatewayAPI.httpRoute) does not exist; "
            f"create it with backendRefs {stable} and {canary}"
        )
    refs = _route_refs(route, (stable, canary))
    if {name for _, _, name, _ in refs} != {stable, canary}:
        raise RouteNotReady(
            f"HTTPRoute {route_name} must list both Services {stable} and {canary} in its backendRefs "
            "(the operator sets their weights)"
        )
    ctx.route = route
    return route


async def observe_route_weight(ctx: ReconcileContext) -> int | None:
    """The canary's share of the route's traffic now (weights are relative), or None without a route."""
    if ctx.spec.rollout.strategy != "canary" or not ctx.spec.rollout.canary.http_route:
        return None
    route = await _read_route(ctx)
    _, canary = _route_names(ctx.spec)
    weights: dict[str, int] = {}
    for _, _, name, weight in _route_refs(route, _route_names(ctx.spec)):
        weights[name] = weights.get(name, 0) + weight
    total = sum(weights.values())
    return round(100 * weights.get(canary, 0) / total) if total else 0


async def reconcile_traffic_routing(ctx: ReconcileContext) -> None:
    """Set the weights of ``<name>-stable``/``<name>-canary`` in the user's HTTPRoute, and nothing else:
    a JSON patch whose ``test`` ops make sure each weight lands on the backendRef we read."""
    assert ctx.plan is not None
    if ctx.plan.route_weight is None:
        return
    route = await _read_route(ctx)
    stable, canary = _route_names(ctx.spec)
    want = {stable: 100 - ctx.plan.route_weight, canary: ctx.plan.route_weight}
    ops: list[dict[str, Any]] = []
    for i, j, name, weight in _route_refs(route, (stable, canary)):
        if weight != want[name]:
            path = f"/spec/rules/{i}/backendRefs/{j}"
            ops += [{"op": "test", "path": f"{path}/name", "value": name},
                    {"op": "add", "path": f"{path}/weight", "value": want[name]}]  # fmt: skip
    if not ops:
        return
    ctx.failed_child = ("HTTPRoute", route["metadata"]["name"])
    await ctx.client.patch_json({"apiVersion": GATEWAY_API_VERSION, "kind": "HTTPRoute", **route}, ops)
    ctx.failed_child = ("", "")
    weight = ctx.plan.route_weight
    ctx.outcome.children.append(
        ChildResult("HTTPRoute", route["metadata"]["name"], "weighted", None,
                    detail=f"{weight}% to {canary}, {100 - weight}% to {stable}")
    )  # fmt: skip


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


async def retire_revisions(ctx: ReconcileContext) -> None:
    """Delete the Deployments of revisions the plan is done with (scaled to zero, no pods left)."""
    assert ctx.plan is not None
    await ctx.prune("Deployment", set(ctx.plan.replicas))


STEPS = (
    reconcile_runtime_identity, reconcile_workloads, reconcile_services, reconcile_traffic_routing, reconcile_autoscaling,
    reconcile_disruption_budget, retire_revisions,
)  # fmt: skip


def compute(ctx: ReconcileContext) -> dict[str, Any]:
    assert ctx.plan is not None
    previous: Mapping[str, Any] = ctx.body.get("status") or {}
    observed = ctx.observed.for_status(child_name(ctx.spec.name))
    return compute_status(ctx.spec, ctx.generation, observed, previous, ctx.now, ctx.plan)


def describe_failure(ctx: ReconcileContext, exc: Exception) -> tuple[str, str]:
    """(reason, message) for the status: what failed, and what would fix it."""
    kind, name = ctx.failed_child
    what = f"{kind} {name}" if kind else "the ModelService status"
    if isinstance(exc, ChildConflict):
        return c.CHILD_CONFLICT, str(exc)
    if isinstance(exc, RouteNotReady):
        return c.ROUTE_NOT_READY, str(exc)
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


def merge_patch(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning ``previous`` into ``new``: keys gone at any depth become null
    (``status.rollout.aborted`` after a retry), lists are replaced whole."""
    patch: dict[str, Any] = {key: None for key in previous if key not in new}
    for key, value in new.items():
        old = previous.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = merge_patch(old, value)
        else:
            patch[key] = value
    return patch


async def write_status(client: Client, body: Mapping[str, Any], new: dict[str, Any]) -> bool:
    """Write ``new`` as the whole status when more than time changed; True when it was written."""
    previous: Mapping[str, Any] = body.get("status") or {}
    if without_times(previous) == without_times(new):
        return False
    patch = merge_patch(previous, new)
    meta = body["metadata"]
    await client.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], patch)
    return True


async def sync_status(ctx: ReconcileContext, new: dict[str, Any]) -> None:
    previous: Mapping[str, Any] = ctx.body.get("status") or {}
    binding = ctx.binding if ctx.binding is not None else previous.get(BINDING_STATUS)
    if binding:
        new[BINDING_STATUS] = binding
    else:
        new.pop(BINDING_STATUS, None)
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
            detail = f" {result.detail}" if result.detail else ""
            by_action.setdefault(result.action, []).append(f"{result.kind} {result.name}{detail}{drift}")
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
    now: str | None = None, metrics: MetricsSource | None = None,
) -> Outcome:  # fmt: skip
    clock = _seconds(now) if now else time.time()
    now = now or timestamp(clock)
    previous: Mapping[str, Any] = body.get("status") or {}
    generation = int(body.get("metadata", {}).get("generation", 0) or 0)

    # A spec we cannot act on is reported; it changes only when the spec does.
    try:
        spec = parse_spec(body)
    except InvalidSpec as exc:
        outcome = Outcome()
        new = invalid_status(previous, generation, c.INVALID_SPEC, str(exc), now, observed.for_status(""))
        if await write_status(client, body, new):
            outcome.status = new
            outcome.events.append(Event("Warning", c.INVALID_SPEC, str(exc)))
            await post_events(client, body, outcome.events, now)
        return outcome

    ctx = ReconcileContext(body, spec, observed, client, options, now, clock, metrics=metrics)
    try:
        for step in STEPS:
            await step(ctx)
    except (KubeError, ChildConflict, RouteNotReady) as exc:
        ctx.outcome.error = exc
        reason, message = describe_failure(ctx, exc)
        new = blocked_status(
            spec,
            previous,
            generation,
            reason,
            message,
            now,
            observed.for_status(child_name(spec.name)),
            ctx.plan,
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
