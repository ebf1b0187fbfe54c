"""Kopf wiring only: settings, the reconcile entry points, and the resync timer.

One idempotent reconcile runs on create, update and resume, and again from a timer that re-reads
reality (level-based, as Kopf's docs recommend) so drift is corrected and status stays fresh. The work
itself is in reconcile.py; here we translate its outcome into a status patch, Events and retries.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION
from . import metrics as m
from .apply import ClusterConfig, KubeClient
from .reconcile import Outcome, reconcile
from .render import RenderOptions

RESYNC_SECONDS = float(os.environ.get("MODELSERVICE_RESYNC_SECONDS", "15"))


def options_from_env() -> RenderOptions:
    return RenderOptions(
        default_image=os.environ.get("MODELSERVICE_RUNTIME_IMAGE", RenderOptions.default_image),
        image_pull_policy=os.environ.get("MODELSERVICE_RUNTIME_PULL_POLICY", RenderOptions.image_pull_policy),
    )


@kopf.on.startup()  # type: ignore[arg-type]  # Kopf's ActivityFn protocol rejects async fns typed this precisely
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    # Our own API group for everything Kopf writes on our objects.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 270
    settings.networking.request_timeout = 60
    if "client" not in memo:
        memo.client = KubeClient(ClusterConfig.auto())
    if "options" not in memo:
        memo.options = options_from_env()
    logger.info("Started with default runtime image %s", memo.options.default_image)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Kopf and our apply client use the same credentials: in-cluster, else the kubeconfig."""
    config = ClusterConfig.auto()
    return kopf.ConnectionInfo(
        server=config.server,
        ca_data=config.ca_data.encode() if config.ca_data else None,
        insecure=config.insecure,
        scheme="Bearer" if config.token else None,
        token=config.token or None,
        certificate_path=config.client_cert_file or None,
        private_key_path=config.client_key_file or None,
    )


@kopf.on.cleanup()
async def close_client(memo: kopf.Memo, **_: Any) -> None:
    if "client" in memo:
        await memo.client.close()


async def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger) -> Outcome:
    started = time.perf_counter()
    try:
        outcome = await reconcile(body, memo.client, memo.options)
    except Exception:
        m.RECONCILE_ERRORS.labels("unexpected").inc()
        m.RECONCILES.labels("error").inc()
        raise
    finally:
        m.RECONCILE_DURATION.observe(time.perf_counter() - started)
    for child in outcome.children:
        if child.action != "unchanged":
            m.CHILD_WRITES.labels(child.kind, child.action).inc()
            logger.info("%s %s %s", child.action.capitalize(), child.kind, child.name)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    if outcome.status is not None:
        patch.status.update(outcome.status)
    if outcome.retry_after is not None:
        m.RECONCILES.labels("retry").inc()
        # Waiting is an exception, not a sleep; the status patch above is still applied.
        raise kopf.TemporaryError("The API server failed transiently; retrying", delay=outcome.retry_after)
    m.RECONCILES.labels("ready" if outcome.ready else "progressing").inc()
    return outcome


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_modelservice(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    await _run(body, patch, memo, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def resync_modelservice(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Level-based resync: correct drift of the children and refresh the status from reality."""
    await _run(body, patch, memo, logger)
