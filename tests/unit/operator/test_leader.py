"""Leader election as a table: (Lease, who asks, when) -> the Lease to write, or None."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from modelservice_operator.leader import claim

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def lease(
    holder: str, renewed_seconds_ago: float, duration: int = 15, transitions: int = 2
) -> dict[str, Any]:
    renewed = (NOW - datetime.timedelta(seconds=renewed_seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"spec": {"holderIdentity": holder, "renewTime": renewed, "acquireTime": "2026-01-01T11:00:00.000000Z",
                     "leaseDurationSeconds": duration, "leaseTransitions": transitions}}  # fmt: skip


@pytest.mark.parametrize(
    ("observed", "leads", "transitions"),
    [
        pytest.param(None, True, 0, id="no-lease-yet"),
        pytest.param(lease("me", 5), True, 2, id="renew-our-own"),
        pytest.param(lease("other", 5), False, None, id="another-holder-is-live"),
        pytest.param(lease("other", 14.9), False, None, id="just-before-expiry"),
        pytest.param(lease("other", 15), True, 3, id="expired-taken-over"),
        pytest.param(lease("", 1), True, 2, id="released-holder"),
    ],
)
def test_who_leads(observed: dict[str, Any] | None, leads: bool, transitions: int | None) -> None:
    spec = claim(observed, "me", NOW, 15)
    assert (spec is not None) == leads
    if spec is not None:
        assert spec["holderIdentity"] == "me" and spec["leaseTransitions"] == transitions
        assert spec["renewTime"] == "2026-01-01T12:00:00.000000Z"


def test_renewal_keeps_the_acquire_time_and_a_takeover_resets_it() -> None:
    assert claim(lease("me", 5), "me", NOW, 15)["acquireTime"] == "2026-01-01T11:00:00.000000Z"  # type: ignore[index]
    assert claim(lease("other", 60), "me", NOW, 15)["acquireTime"] == "2026-01-01T12:00:00.000000Z"  # type: ignore[index]
