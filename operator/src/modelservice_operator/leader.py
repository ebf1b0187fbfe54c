"""PURE: who leads, from a coordination.k8s.io Lease and the time (client-go's leader election rules).

**Why our own election, not Kopf peering:** a paused Kopf stops feeding the cache, but the work queue's
retries and safety-net passes would still run on a stale cache. With a Lease, every replica keeps its
watches and cache warm and only the holder runs reconcile workers, so a failover takes one lease
duration and no cold start.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _parse(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def claim(
    lease: Mapping[str, Any] | None, identity: str, now: datetime.datetime, duration: int
) -> dict[str, Any] | None:
    """The Lease spec to write so that ``identity`` leads, or None while another holder's lease is live."""
    spec: Mapping[str, Any] = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    renewed = _parse(spec.get("renewTime"))
    held_for = float(spec.get("leaseDurationSeconds") or duration)
    expired = renewed is None or now >= renewed + datetime.timedelta(seconds=held_for)
    if holder and holder != identity and not expired:
        return None
    ours = holder == identity
    transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours or not holder else 1)
    stamp = now.astimezone(datetime.UTC).strftime(MICRO_TIME)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }
