"""The loop that carries reconciles out: keys from the work queue, objects from the cache, retries.

Kopf feeds it (handlers.py): watch events update the cache and add keys. Here a few workers take keys,
reconcile them one at a time per key, write what the server returned back into the cache (so the next
reconcile does not wait for the watch to catch up), and decide when the key comes back:

- success: after the safety-net resync (minutes; children's watch events bring it back sooner);
- a transient API failure (401/403/429/5xx/timeout/409): exponential backoff from 1 s to 60 s, or the
  server's Retry-After if longer;
- a rejection of our manifest or a name taken by someone else's object: slowly (``rejected_retry``),
  never frozen: a fix elsewhere (a PriorityClass created, a webhook relaxed) is picked up.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import metrics as m
from .api import InvalidSpec, parse_spec
from .cache import Key, ObjectCache
from .capacity import GpuInventory
from .context import observe
from .kube.errors import ApiConflict, KubeError
from .metrics_source import MetricsSource
from .naming import NAME_LABEL
from .reconcile import BINDING_STATUS, Client, Outcome, RouteNotReady, reconcile, release_legacy_finalizer
from .render import RenderOptions
from .render.identity import AUTH_DELEGATOR, NAMESPACE_LABEL, binding_name
from .workqueue import WorkQueue

logger = logging.getLogger("modelservice_operator")


@dataclass(frozen=True)
class Timing:
    resync: float = 300.0  # safety net: re-evaluate every object this often (from the cache: no API call)
    rejected_retry: float = 300.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0


def _wants_binding(body: Mapping[str, Any]) -> bool:
    """Whether a ModelService asks for Kubernetes authentication (its reconcile keeps the binding). A spec
    the operator cannot read decides nothing: its binding stays until the spec is fixed."""
    try:
        return parse_spec(body).runtime.kubernetes_auth
    except InvalidSpec:
        return True


def _recorded_binding(body: Mapping[str, Any]) -> str:
    return str((body.get("status") or {}).get(BINDING_STATUS) or "")


class Controller:
    def __init__(self, client: Client, options: RenderOptions, timing: Timing | None = None,
                 workers: int = 16) -> None:  # fmt: skip
        self.client = client
        self.options = options
        self.timing = timing or Timing()
        self.cache = ObjectCache()
        self.gpus = GpuInventory()
        self.metrics = MetricsSource()
        self.waiting_for_gpus: set[Key] = set()  # rollouts a freed GPU may unblock
        self.queue: WorkQueue[Key] = WorkQueue(self.timing.backoff_base, self.timing.backoff_max)
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        # (namespace, name) of a ModelService that no longer wants the runtime's ClusterRoleBinding (deleted,
        # or re-created without Kubernetes authentication) -> (the binding's name, its uid or "")
        self.orphaned_bindings: dict[Key, tuple[str, str]] = {}

    def bindings_listed(self, bindings: Sequence[Mapping[str, Any]],
                        modelservices: Mapping[Key, Mapping[str, Any]], namespaces: list[str]) -> list[Key]:  # fmt: skip
        """At start: the runtime ClusterRoleBindings that no ModelService wants any more, left by events no
        operator saw (a deletion, a re-creation without Kubernetes authentication), queued for deletion as
        a DELETED event would have; the keys found. Ours only: our labels, the name we give it and its
        role; deleted with its uid as a precondition, so a successor of the same name is never touched."""
        found = []
        for binding in bindings:
            meta = binding.get("metadata", {})
            labels = meta.get("labels") or {}
            key = (str(labels.get(NAMESPACE_LABEL, "")), str(labels.get(NAME_LABEL, "")))
            if not all(key) or (namespaces and key[0] not in namespaces):
                continue
            role = binding.get("roleRef") or {}
            ours = meta.get("name") == binding_name(*key) and role.get("name") == AUTH_DELEGATOR
            if not ours or role.get("kind") != "ClusterRole":
                continue
            body = modelservices.get(key)
            if body is not None and (_wants_binding(body) or _recorded_binding(body) == meta["name"]):
                continue  # its reconcile keeps it, or deletes it itself
            self.orphaned_bindings[key] = (str(meta["name"]), str(meta.get("uid", "")))
            self.queue.add(key)
            found.append(key)
        return found

    async def _delete_binding(self, key: Key) -> None:
        """The runtime's ClusterRoleBinding that no ModelService wants any more; while the API refuses,
        the key comes back after a backoff."""
        name, uid = self.orphaned_bindings[key]
        try:
            await self.client.delete("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "", name, uid)
        except ApiConflict:  # the uid precondition failed: a successor of the same name, not ours to delete
            pass
        except KubeError as exc:
            logger.warning(
                "Could not delete ClusterRoleBinding %s of ModelService %s/%s: %s", name, *key, exc
            )
            self.queue.add_after(key, self.queue.backoff(key))
            return
        else:
            logger.info("Deleted ClusterRoleBinding %s of ModelService %s/%s", name, *key)
        self.orphaned_bindings.pop(key, None)

    # Inputs from the watches -----------------------------------------------------------------------
    def modelservice_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata", {})
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if event_type == "DELETED":
            self.cache.remove_modelservice(namespace, name)
            self.queue.discard((namespace, name))
            self.waiting_for_gpus.discard((namespace, name))
            self.metrics.forget(namespace, name)
            binding = (body.get("status") or {}).get(BINDING_STATUS)
            if binding:  # cluster-scoped: garbage collection cannot follow an owner in a namespace
                self.orphaned_bindings[(namespace, name)] = (str(binding), "")
                self.queue.add((namespace, name))  # a worker deletes it (process)
            return
        before = self.cache.modelservice(namespace, name)
        key = self.cache.upsert_modelservice(body)
        if before is None or _changed_beyond_status(before, body):
            self.queue.add(key)  # our own status writes come back here and need no reconcile

    def child_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        owner = self.cache.remove_child(body) if event_type == "DELETED" else self.cache.upsert_child(body)
        if owner is None or event_type is None:  # the initial listing needs no reconcile
            return
        if self.queue.failing(owner):
            return  # its retry is scheduled: pod churn must not turn a backoff into a burst of failures
        self.queue.add(owner)

    def node_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if self.gpus.node_event(event_type, body) and event_type is not None:
            self._capacity_changed()

    def pod_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Every pod of the cluster: ours feed the cache; any pod holding GPUs feeds the inventory."""
        changed = self.gpus.pod_event(event_type, body)
        if (body.get("metadata", {}).get("labels") or {}).get(NAME_LABEL):
            self.child_event(event_type, body)
        if changed and event_type is not None:
            self._capacity_changed()

    def _capacity_changed(self) -> None:
        for key in self.waiting_for_gpus:
            if not self.queue.failing(key):
                self.queue.add(key)

    # Workers ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._work(), name=f"reconciler-{i}") for i in range(self.workers)
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.process(key)
            except Exception:  # a bug must not kill the worker; the key comes back with backoff
                logger.exception("Reconcile of ModelService %s/%s failed unexpectedly", *key)
                m.RECONCILES.labels("error").inc()
                self.queue.add_after(key, self.queue.backoff(key))
            finally:
                self.queue.done(key)
                m.QUEUE_DEPTH.set(len(self.queue))

    async def process(self, key: Key) -> Outcome | None:
        body = self.cache.modelservice(*key)
        if body is not None:
            try:
                if await release_legacy_finalizer(body, self.client):
                    logger.info(
                        "Removed the previous operator version's finalizer from ModelService %s/%s", *key
                    )
            except KubeError as exc:  # tried again on the next pass; the reconcile itself goes on
                logger.warning("Could not remove the finalizer of ModelService %s/%s: %s", *key, exc)
        if key in self.orphaned_bindings:
            if body is None:
                await self._delete_binding(key)
                return None
            if _wants_binding(body) or _recorded_binding(body):
                self.orphaned_bindings.pop(key, None)  # re-created with it: its reconcile keeps it
            else:  # re-created without it; the reconcile goes on either way (a refusal comes back later)
                await self._delete_binding(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            self.queue.discard(key)
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await reconcile(
            body, observe(self.cache, *key, self.gpus), self.client, self.options, metrics=self.metrics
        )
        if outcome.capacity_constrained:
            self.waiting_for_gpus.add(key)
        else:
            self.waiting_for_gpus.discard(key)
        m.RECONCILE_DURATION.observe(loop.time() - started)
        for child in outcome.children:
            if child.observed is not None:
                self.cache.upsert_child(child.observed, written=True)
            if child.action != "unchanged":
                m.CHILD_WRITES.labels(child.kind, child.action).inc()
                logger.info("%s %s %s/%s%s%s", child.action.capitalize(), child.kind, key[0], child.name,
                            f" {child.detail}" if child.detail else "",
                            f" (drift: {', '.join(child.drift)})" if child.drift else "")  # fmt: skip
        if outcome.status is not None:
            # Until the watch brings it back, the next reconcile must see the status we wrote, on
            # whatever version of the object the cache holds now (the spec may have changed meanwhile).
            self.cache.set_status(*key, outcome.status)
        self._schedule(key, outcome)
        return outcome

    def _schedule(self, key: Key, outcome: Outcome) -> None:
        error = outcome.error
        if error is None:
            self.queue.forget(key)
            m.RECONCILES.labels("ready" if outcome.ready else "progressing").inc()
            # Jitter spreads a thousand objects' safety-net passes over the period; a rollout waiting
            # for time (a pause, a scale-down delay, a deadline) comes back when that time is up.
            delay = self.timing.resync * random.uniform(0.9, 1.1)
            if outcome.requeue_after is not None:
                delay = min(delay, outcome.requeue_after)
            self.queue.add_after(key, delay)
            return
        if isinstance(error, RouteNotReady):
            delay = error.retry_after
            m.RECONCILES.labels("retry").inc()
            logger.warning("ModelService %s/%s waits for its HTTPRoute: %s", *key, error)
        elif isinstance(error, KubeError) and error.transient:
            delay = max(self.queue.backoff(key), error.retry_after or 0.0)
            m.RECONCILES.labels("retry").inc()
            logger.warning(
                "Reconcile of ModelService %s/%s failed, retrying in %.0fs: %s", *key, delay, error
            )
        else:
            delay = self.timing.rejected_retry
            m.RECONCILES.labels("rejected").inc()
            logger.warning("ModelService %s/%s was rejected, retrying in %.0fs: %s", *key, delay, error)
        self.queue.add_after(key, delay)


def _changed_beyond_status(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Spec, labels, annotations, deletion: anything a reconcile reads other than its own status."""
    old_meta, new_meta = old.get("metadata", {}), new.get("metadata", {})
    return (
        old.get("spec") != new.get("spec")
        or old_meta.get("generation") != new_meta.get("generation")
        or old_meta.get("labels") != new_meta.get("labels")
        or old_meta.get("annotations") != new_meta.get("annotations")
        or old_meta.get("deletionTimestamp") != new_meta.get("deletionTimestamp")
        or old_meta.get("uid") != new_meta.get("uid")
    )
