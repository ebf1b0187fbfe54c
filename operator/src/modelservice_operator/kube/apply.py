"""One reconciler shape per child: given desired and observed, classify and act (KServe's reconcilers).

- absent -> server-side apply creates it;
- our fields match (quantities by value) -> nothing is written;
- drifted -> server-side apply takes our fields back;
- apply refused because someone else's edit clashes with ours (a Service port changed by hand becomes a
  duplicate port name) or leaves a foreign key in a selector -> an update (PUT) that sets our fields
  whole, guarded by the resourceVersion;
- the server says a field is immutable (a selector) -> the child is deleted and created again;
- controlled by another object -> not touched, ``ChildConflict`` is raised for the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .diff import controller_uid, drifted_fields, owned_fields_match, take_back
from .errors import ApiRejected


class ChildWriter(Protocol):
    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...
    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]: ...
    async def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str = "") -> bool: ...


class ChildConflict(Exception):
    """A child's name is taken by an object some other controller owns."""

    def __init__(self, kind: str, name: str, owner_uid: str | None) -> None:
        owner = f"controlled by another owner (uid {owner_uid})" if owner_uid else "not ours"
        super().__init__(
            f"{kind} {name} already exists and is {owner}; delete or rename it and the ModelService takes the name"
        )
        self.kind = kind
        self.name = name


@dataclass(frozen=True)
class ChildResult:
    kind: str
    name: str
    action: str  # created | updated | repaired | replaced | unchanged | deleted | scaled | weighted
    observed: dict[str, Any] | None
    drift: tuple[str, ...] = ()
    detail: str = ""  # e.g. "to 3 replicas", for the Event and the log


async def apply_child(
    client: ChildWriter, desired: Mapping[str, Any], observed: Mapping[str, Any] | None, owner_uid: str
) -> ChildResult:
    kind, name = desired["kind"], desired["metadata"]["name"]
    if observed is not None:
        current_owner = controller_uid(observed)
        if current_owner is not None and owner_uid and current_owner != owner_uid:
            raise ChildConflict(kind, name, current_owner)
        if owned_fields_match(desired, observed):
            return ChildResult(kind, name, "unchanged", dict(observed))
    drift = tuple(drifted_fields(desired, observed)) if observed is not None else ()
    try:
        applied = await client.apply(desired)
    except ApiRejected as exc:
        if observed is None:
            raise
        if exc.immutable:
            return await _recreate(client, desired, observed, drift)
        # Someone else's edit clashes with ours: set our fields whole with an update.
        repaired = await client.replace(take_back(observed, desired))
        return ChildResult(kind, name, "repaired", repaired, drift)
    if owned_fields_match(desired, applied):
        return ChildResult(kind, name, "created" if observed is None else "updated", applied, drift)
    # Apply cannot remove what another manager owns (an extra selector key): update the whole field.
    try:
        repaired = await client.replace(take_back(applied, desired))
    except ApiRejected as exc:
        if not exc.immutable:
            raise
        return await _recreate(client, desired, applied, drift)
    return ChildResult(kind, name, "repaired", repaired, drift)


async def _recreate(
    client: ChildWriter, desired: Mapping[str, Any], observed: Mapping[str, Any], drift: tuple[str, ...]
) -> ChildResult:
    meta = observed["metadata"]
    await client.delete(
        desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"], meta.get("uid", "")
    )
    # A 409 here means the old object is still being deleted (finalizers): the retry creates it.
    created = await client.create(desired)
    return ChildResult(desired["kind"], desired["metadata"]["name"], "replaced", created, drift)


async def prune_child(client: ChildWriter, observed: Mapping[str, Any], owner_uid: str) -> ChildResult | None:
    """Delete a child we no longer want (an HPA or PDB after its feature was switched off)."""
    if controller_uid(observed) != owner_uid:
        return None  # not ours: leave it alone
    meta = observed["metadata"]
    deleted = await client.delete(
        observed["apiVersion"], observed["kind"], meta["namespace"], meta["name"], meta.get("uid", "")
    )
    return ChildResult(observed["kind"], meta["name"], "deleted", None) if deleted else None
