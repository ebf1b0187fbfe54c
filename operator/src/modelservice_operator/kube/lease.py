"""Leader election on a coordination.k8s.io Lease: acquire, renew every third of its duration, step down.

The decisions are pure (``leader.claim``); this loop reads and writes the Lease, guarded by its
resourceVersion, so two replicas racing for an expired lease cannot both win (the loser gets a 409).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..leader import claim
from .client import KubeClient
from .errors import KubeError

logger = logging.getLogger("modelservice_operator")
API_VERSION = "coordination.k8s.io/v1"


async def lead(
    client: KubeClient, namespace: str, name: str, identity: str, on_lead: Callable[[], None],
    on_lose: Callable[[], Awaitable[None]], duration: int = 15,
) -> None:  # fmt: skip
    """Run forever: call ``on_lead`` on becoming the leader and ``on_lose`` on losing the lease."""
    leading = False
    last_renewal = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            lease = await client.get(API_VERSION, "Lease", namespace, name)
            spec = claim(lease, identity, datetime.datetime.now(datetime.UTC), duration)
            if spec is not None:
                body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Lease",
                                        "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
                if lease is None:
                    await client.create(body)
                else:
                    body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                    await client.replace(body)
                last_renewal = loop.time()
                if not leading:
                    leading = True
                    logger.info("Became the leader (Lease %s/%s, identity %s)", namespace, name, identity)
                    on_lead()
            elif leading:
                leading = False
                logger.warning("Lost the Lease %s/%s to %s", namespace, name, (lease or {}).get("spec", {}))
                await on_lose()
        except KubeError as exc:
            logger.warning("Could not renew the Lease %s/%s: %s", namespace, name, exc)
            if leading and loop.time() - last_renewal >= duration:
                leading = False  # another replica may hold it by now: stop before it starts
                logger.warning(
                    "Stepped down: the Lease %s/%s was not renewed for %ss", namespace, name, duration
                )
                await on_lose()
        await asyncio.sleep(duration / 3)
