"""Kopf wiring only: settings, login, one watch per kind feeding the controller, and its workers.

Kopf watches the ModelServices and every kind of child (server-side filtered by our name label) and
hands each event to ``controller.py``, which keeps the cache and the work queue. No Kopf handler writes
anything: no finalizers, no progress annotations; children are garbage-collected through their
ownerReferences. Reconciles run in the controller's workers, one at a time per ModelService.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION
from .controller import Controller, Timing
from .kube.client import KubeClient
from .kube.credentials import Credentials
from .kube.errors import KubeError
from .kube.lease import lead
from .naming import NAME_LABEL
from .render import RenderOptions

# (group, version, plural, kind) of every child kind we watch, server-side filtered by our name label.
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "services", "Service"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),  # the runtime's, with Kubernetes authentication
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
)
# Pods and Nodes are watched whole: every pod that holds a GPU (whoever owns it) and every node's
# allocatable GPUs tell a rollout whether a surge pod would fit.


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def timing_from_env() -> Timing:
    return Timing(
        resync=_seconds("MODELSERVICE_RESYNC_SECONDS", Timing.resync),
        rejected_retry=_seconds("MODELSERVICE_REJECTED_RETRY_SECONDS", Timing.rejected_retry),
        backoff_base=_seconds("MODELSERVICE_BACKOFF_BASE_SECONDS", Timing.backoff_base),
        backoff_max=_seconds("MODELSERVICE_BACKOFF_MAX_SECONDS", Timing.backoff_max),
    )


def options_from_env() -> RenderOptions:
    return RenderOptions(
        default_image=os.environ.get("MODELSERVICE_RUNTIME_IMAGE", RenderOptions.default_image),
        image_pull_policy=os.environ.get("MODELSERVICE_RUNTIME_PULL_POLICY", RenderOptions.image_pull_policy),
    )


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


@kopf.on.startup()  # type: ignore[arg-type]  # Kopf's ActivityFn protocol rejects async fns typed this precisely
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    settings.posting.enabled = False  # we post our own Events, one per transition
    settings.watching.server_timeout = 270
    settings.networking.request_timeout = 60
    for group, version, plural, _kind in WATCHED_CHILDREN:
        # Server-side filtering: only our children travel, not every pod of the cluster.
        settings.watching.label_selectors[group, version, plural] = NAME_LABEL
    if "controller" not in memo:
        credentials = memo.get("credentials") or Credentials.load()
        memo.controller = Controller(
            KubeClient(credentials), memo.get("options") or options_from_env(), timing_from_env(),
            workers=int(os.environ.get("MODELSERVICE_WORKERS", "16")),
        )  # fmt: skip
    controller: Controller = memo.controller
    await prime(controller, memo.get("namespaces") or [], logger)
    election = memo.get("lease")  # (namespace, name, identity) with --peering: one replica reconciles
    if election is None:
        controller.start()
        logger.info("Started %d reconcile workers; cached %s", controller.workers, controller.cache.sizes())
        return
    client = controller.client
    assert isinstance(client, KubeClient)
    namespace, name, identity = election
    memo.election = asyncio.create_task(lead(client, namespace, name, identity, controller.start, controller.stop),
                                        name="leader-election")  # fmt: skip
    logger.info("Waiting for the Lease %s/%s; cached %s", namespace, name, controller.cache.sizes())


async def prime(controller: Controller, namespaces: list[str], logger: logging.Logger) -> None:
    """Fill the cache before the first reconcile, so a restart does not re-apply every child."""
    client = controller.client
    assert isinstance(client, KubeClient)
    scopes: list[str | None] = list(namespaces) or [None]
    for namespace in scopes:
        for group, version, _plural, kind in WATCHED_CHILDREN:
            try:
                found = await client.list(_api_version(group, version), kind, namespace, NAME_LABEL)
            except KubeError as exc:  # e.g. RBAC: Kopf's watch reports and retries it; reconciles say why
                logger.warning("Could not list %s to prime the cache: %s", kind, exc)
                continue
            for obj in found:
                controller.child_event(None, obj)
        try:
            for pod in await client.list("v1", "Pod", namespace):
                controller.pod_event(None, pod)
        except KubeError as exc:
            logger.warning("Could not list Pods to prime the cache: %s", exc)
    try:
        # Listed before the ModelServices: a binding seen belongs to a ModelService created before it.
        bindings = await client.list("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, NAME_LABEL)
        modelservices = {}
        for namespace in scopes:
            for ms in await client.list(_api_version(GROUP, VERSION), "ModelService", namespace):
                modelservices[ms["metadata"]["namespace"], ms["metadata"]["name"]] = ms
        for key in controller.bindings_listed(bindings, modelservices, namespaces):
            logger.info("ModelService %s/%s no longer wants its ClusterRoleBinding: deleting it", *key)
    except KubeError as exc:  # they are deleted on a later start; live ones are never touched
        logger.warning("Could not look for ClusterRoleBindings of deleted ModelServices: %s", exc)
    try:
        for node in await client.list("v1", "Node"):
            controller.node_event(None, node)
    except KubeError as exc:  # without Nodes, rollouts of GPU pods surge as if capacity were unknown
        logger.warning("Could not list Nodes (GPU capacity stays unknown): %s", exc)


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Kopf and our client use the same credentials, from the official client's loaders."""
    credentials: Credentials = memo.get("credentials") or Credentials.load()
    config = credentials.configuration
    token = credentials.token()
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=config.ssl_ca_cert or None,
        insecure=not config.verify_ssl,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=config.cert_file or None,
        private_key_path=config.key_file or None,
    )


@kopf.on.cleanup()
async def stop_controller(memo: kopf.Memo, **_: Any) -> None:
    if "election" in memo:
        memo.election.cancel()
    if "controller" in memo:
        await memo.controller.stop()
        await memo.controller.client.close()


# The watch handlers are coroutines so that they run on the event loop, as the reconcile workers do:
# Kopf runs a plain function in a thread pool, where the cache, the work queue (an asyncio.Event, timer
# handles) and the GPU inventory would be changed under the workers' feet.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def modelservice_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.modelservice_event(type, dict(body))


def _register_child_watch(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels={NAME_LABEL: kopf.PRESENT}, id=f"watch-{plural}")
    async def child_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        memo.controller.child_event(type, dict(body))


for _group, _version, _plural, _kind in WATCHED_CHILDREN:
    _register_child_watch(_group, _version, _plural)


@kopf.on.event("", "v1", "pods", id="watch-pods")
async def pod_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.pod_event(type, dict(body))


@kopf.on.event("", "v1", "nodes", id="watch-nodes")
async def node_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.controller.node_event(type, dict(body))
