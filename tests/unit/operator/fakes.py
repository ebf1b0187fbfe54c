"""A fake API client for reconcile tests: it records every write and fails where a test says so."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from modelservice_operator.kube.errors import KubeError

_rv = itertools.count(100)


class FakeClient:
    def __init__(self, fail: Mapping[tuple[str, str], KubeError] | None = None) -> None:
        self.fail = dict(fail or {})  # (verb, kind) -> error to raise
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.status: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []
        self.pod_metrics: dict[str, str] = {}  # pod -> the /metrics text its proxy answers

    def _check(self, verb: str, kind: str, name: str) -> None:
        self.calls.append((verb, kind, name))
        error = self.fail.get((verb, kind))
        if error is not None:
            raise error

    def _store(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(dict(obj))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta["resourceVersion"] = str(next(_rv))
        self.objects[stored["kind"], meta["name"]] = stored
        return stored

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self._check("apply", obj["kind"], obj["metadata"]["name"])
        return self._store(obj)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self._check("create", obj["kind"], obj["metadata"]["name"])
        return self._store(obj)

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self._check("replace", obj["kind"], obj["metadata"]["name"])
        return self._store(obj)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str = "") -> bool:
        self._check("delete", kind, name)
        return self.objects.pop((kind, name), None) is not None

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: Mapping[str, Any]) -> dict[str, Any] | None:  # fmt: skip
        self._check("patch_status", kind, name)
        self.status = dict(status)
        return {"status": status}

    async def scale(self, obj: Mapping[str, Any], replicas: int) -> dict[str, Any]:
        self._check("scale", obj["kind"], obj["metadata"]["name"])
        stored = copy.deepcopy(dict(obj))
        stored["spec"]["replicas"] = replicas
        return self._store(stored)

    async def patch_json(self, obj: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        self._check("patch_json", obj["kind"], obj["metadata"]["name"])
        return self._store(obj)

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str:
        self._check("pod_proxy_get", "Pod", pod)
        return self.pod_metrics.get(pod, "")

    async def create_event(self, event: Mapping[str, Any]) -> None:
        self._check("create_event", "Event", event["involvedObject"]["name"])
        self.events.append(dict(event))

    async def remove_finalizer(self, obj: Mapping[str, Any], finalizer: str) -> None:
        self._check("remove_finalizer", obj["kind"], obj["metadata"]["name"])

    def writes(self) -> list[tuple[str, str, str]]:
        return list(self.calls)
