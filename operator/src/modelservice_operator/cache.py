"""In-memory copies of our objects, fed by watch events (Kopf's on-event handlers) and by our own writes.

**For a quiet API server,** a reconcile never reads the API: it reads these caches, as Argo Rollouts
reads through listers. Children are grouped by their ModelService's name label, so pods (owned by
ReplicaSets) and EndpointSlices (owned by Services) are found the same way as Deployments. Managed
fields are dropped on the way in: they are most of an object's size and we never read them.

Pure data: no API calls here, so the tables in tests/unit drive it directly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .naming import NAME_LABEL, label_value

Key = tuple[str, str]  # (namespace, name)


def _rv(obj: Mapping[str, Any]) -> int | None:
    value = str(obj.get("metadata", {}).get("resourceVersion", ""))
    return int(value) if value.isascii() and value.isdigit() else None


def slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(obj)
    metadata = dict(result.get("metadata") or {})
    metadata.pop("managedFields", None)
    result["metadata"] = metadata
    return copy.deepcopy(result)


def _newer(new: Mapping[str, Any], old: Mapping[str, Any] | None, strictly: bool = False) -> bool:
    """Writes return objects newer than a watch event still in flight: keep the newest we know of.

    A watch event replaces a version as new as itself (events of one object arrive in order); what a
    write returned replaces only an older one, so it never hides a change the watch already brought.
    """
    if old is None:
        return True
    a, b = _rv(new), _rv(old)
    if strictly:
        return a is not None and b is not None and a > b
    return a is None or b is None or a >= b


class ObjectCache:
    def __init__(self) -> None:
        self._modelservices: dict[Key, dict[str, Any]] = {}
        self._owners: dict[Key, str] = {}  # (namespace, name label value) -> ModelService name
        self._children: dict[Key, dict[tuple[str, str], dict[str, Any]]] = {}

    # ModelServices ---------------------------------------------------------------------------------
    def upsert_modelservice(self, body: Mapping[str, Any]) -> Key:
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if _newer(body, self._modelservices.get(key)):
            self._modelservices[key] = slim(body)
        self._owners[(key[0], label_value(key[1]))] = key[1]
        return key

    def remove_modelservice(self, namespace: str, name: str) -> None:
        self._modelservices.pop((namespace, name), None)
        self._owners.pop((namespace, label_value(name)), None)
        self._children.pop((namespace, label_value(name)), None)

    def set_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        body = self._modelservices.get((namespace, name))
        if body is not None:
            body["status"] = copy.deepcopy(dict(status))

    def modelservice(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._modelservices.get((namespace, name))

    # Children --------------------------------------------------------------------------------------
    def _group(self, obj: Mapping[str, Any]) -> Key | None:
        meta = obj.get("metadata", {})
        owner = (meta.get("labels") or {}).get(NAME_LABEL)
        return (str(meta.get("namespace", "")), str(owner)) if owner else None

    def upsert_child(self, obj: Mapping[str, Any], written: bool = False) -> Key | None:
        """Store a child (``written``: returned by our own write); returns its ModelService's key when known."""
        group = self._group(obj)
        if group is None:
            return None
        ident = (str(obj.get("kind", "")), str(obj["metadata"]["name"]))
        children = self._children.setdefault(group, {})
        if _newer(obj, children.get(ident), strictly=written):
            children[ident] = slim(obj)
        return self.owner_of(group)

    def remove_child(self, obj: Mapping[str, Any]) -> Key | None:
        group = self._group(obj)
        if group is None:
            return None
        ident = (str(obj.get("kind", "")), str(obj["metadata"]["name"]))
        children = self._children.get(group, {})
        known = children.get(ident)
        # A delete of an older incarnation (same name, other uid) must not hide the new one.
        if known is not None and known.get("metadata", {}).get("uid") in (None, obj["metadata"].get("uid")):
            children.pop(ident, None)
        return self.owner_of(group)

    def owner_of(self, group: Key) -> Key | None:
        name = self._owners.get(group)
        return (group[0], name) if name is not None else None

    def children(self, namespace: str, ms_name: str, kind: str) -> list[dict[str, Any]]:
        group = self._children.get((namespace, label_value(ms_name)), {})
        return [obj for (k, _), obj in sorted(group.items()) if k == kind]

    def sizes(self) -> dict[str, int]:
        counts: dict[str, int] = {"ModelService": len(self._modelservices)}
        for group in self._children.values():
            for kind, _ in group:
                counts[kind] = counts.get(kind, 0) + 1
        return counts
