"""The one async client that talks to the Kubernetes API: reads, server-side apply, update, status, Events.

**Measured, not assumed:** 1,000 ConfigMap creates with 16 in flight against the local control plane
took 0.84-1.02 s and 0.30 s of client CPU through this aiohttp client, against 1.33-2.47 s and 0.83-1.90 s
through the official client's ``CoreV1Api`` in threads (``asyncio.to_thread``, a 16-connection pool).
Kopf already speaks aiohttp in the same event loop, so the calls stay here and only credentials come
from the official package (``credentials.py``). Errors are typed (``errors.py``); a 401 reloads the
credentials once and retries, for exec plugins and rotated tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from .. import metrics as m
from .credentials import Credentials
from .errors import ApiNotFound, ApiUnauthorized, ApiUnreachable, error_for

FIELD_MANAGER = "modelservice-operator"
PLURALS = {
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
    "Event": "events",
    "EndpointSlice": "endpointslices",
    "ModelService": "modelservices",
    "Lease": "leases",
    "HTTPRoute": "httproutes",
    "Node": "nodes",
    "ServiceAccount": "serviceaccounts",
    "ClusterRoleBinding": "clusterrolebindings",
}


def object_path(api_version: str, kind: str, namespace: str | None, name: str = "") -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = (
        f"{prefix}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
        if namespace
        else f"{prefix}/{PLURALS[kind]}"
    )
    return f"{path}/{quote(name)}" if name else path


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class KubeClient:
    """Exactly the calls the operator makes; every answer >= 400 raises a typed ``ApiError``."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.credentials.ssl_context(), limit=64),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json", raw: bool = False) -> Any:  # fmt: skip
        """The JSON the server answers (``raw``: its text, e.g. a pod's metrics through the proxy)."""
        try:
            return await self._request(method, path, body, params, content_type, raw)
        except ApiUnauthorized:
            # Expired exec-plugin token or rotated credentials: load them again, once.
            await asyncio.to_thread(self.credentials.reload)
            if self._session is not None:
                await self._session.close()
            return await self._request(method, path, body, params, content_type, raw)

    async def _request(self, method: str, path: str, body: Any, params: Mapping[str, str] | None,
                       content_type: str, raw: bool = False) -> Any:  # fmt: skip
        headers = {"Accept": "*/*" if raw else "application/json"}
        auth = self.credentials.authorization()
        if auth:
            headers["Authorization"] = auth
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = content_type
        url = self.credentials.server + path
        try:
            async with self._http().request(
                method, url, data=data, params=params, headers=headers
            ) as response:
                text = await response.text()
                m.API_REQUESTS.labels(method, str(response.status)).inc()
                if response.status >= 400:
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        payload = None
                    if not isinstance(payload, dict):
                        payload = None
                    raise error_for(response.status, payload, _retry_after(response.headers), text[:500])
                if raw:
                    return text
                return json.loads(text) if text else None
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            m.API_REQUESTS.labels(method, "error").inc()
            raise ApiUnreachable(f"{method} {path}: {exc or type(exc).__name__}") from exc

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.request(
                "GET", object_path(api_version, kind, namespace, name)
            )
            return result
        except ApiNotFound:
            return None

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   label_selector: str = "") -> list[dict[str, Any]]:  # fmt: skip
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", object_path(api_version, kind, namespace), params=params)
        items: list[dict[str, Any]] = (result or {}).get("items", [])
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply with force: we are the controller of these children."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        try:
            result: dict[str, Any] = await self.request(
                "PATCH", path, obj, params, content_type="application/apply-patch+yaml"
            )
            return result
        except ApiNotFound:
            # A real API server creates on apply; simpler emulators (KMock) only create on POST.
            return await self.create(obj)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        created: dict[str, Any] = await self.request("POST", path, obj, {"fieldManager": FIELD_MANAGER})
        return created

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """An update (PUT) of the whole object, guarded by its resourceVersion."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        result: dict[str, Any] = await self.request("PUT", path, obj, {"fieldManager": FIELD_MANAGER})
        return result

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str = "") -> bool:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}  # never delete a same-named successor
        try:
            await self.request("DELETE", object_path(api_version, kind, namespace, name), body)
            return True
        except ApiNotFound:
            return False

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: Mapping[str, Any]) -> dict[str, Any] | None:  # fmt: skip
        """A JSON merge patch of the status subresource; None when the object is gone."""
        path = object_path(api_version, kind, namespace, name) + "/status"
        try:
            result: dict[str, Any] = await self.request(
                "PATCH", path, {"status": status}, content_type="application/merge-patch+json"
            )
            return result
        except ApiNotFound:
            return None

    async def remove_finalizer(self, obj: Mapping[str, Any], finalizer: str) -> None:
        """Remove one finalizer, and only if it is still where we saw it (a JSON patch with a test)."""
        meta = obj["metadata"]
        index = list(meta.get("finalizers") or []).index(finalizer)
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        ops = [{"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
               {"op": "remove", "path": f"/metadata/finalizers/{index}"}]  # fmt: skip
        with contextlib.suppress(ApiNotFound):  # already gone: nothing to release
            await self.request("PATCH", path, ops, content_type="application/json-patch+json")

    async def scale(self, obj: Mapping[str, Any], replicas: int) -> dict[str, Any]:
        """Set ``spec.replicas`` of a Deployment we no longer render (an old revision), nothing else.

        A merge patch carrying the resourceVersion we decided on: if the object moved meanwhile, 409.
        """
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "spec": {"replicas": replicas}}
        result: dict[str, Any] = await self.request(
            "PATCH", path, patch, {"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json"
        )
        return result

    async def patch_json(self, obj: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """A JSON patch (RFC 6902): with ``test`` ops it changes a user's object only where we saw it."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        result: dict[str, Any] = await self.request(
            "PATCH", path, ops, {"fieldManager": FIELD_MANAGER}, content_type="application/json-patch+json"
        )
        return result

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str:
        """GET ``path`` on a pod's port through the API server's pod proxy (RBAC: ``pods/proxy`` get)."""
        # ``pod`` may carry the scheme, "https:<name>": the proxy's [scheme:]name[:port] form.
        url = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod, safe=':')}:{port}/proxy/{path.lstrip('/')}"
        text: str = await self.request("GET", url, raw=True)
        return text

    async def create_event(self, event: Mapping[str, Any]) -> None:
        await self.request("POST", object_path("v1", "Event", event["metadata"]["namespace"]), event)
