"""The ONLY module that writes to the Kubernetes API: server-side apply under one field manager.

``apply()`` first compares what we own with what is there (``owned_fields_match``): server defaults and
other managers' fields are ignored, so a steady state makes no writes at all. Credentials come from the
same places Kopf reads them: the in-cluster service account, else ``$KUBECONFIG`` / ``~/.kube/config``.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

FIELD_MANAGER = "modelservice-operator"
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Pod": "pods",
    "Event": "events",
    "ModelService": "modelservices",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def permanent(self) -> bool:
        """4xx other than conflicts and throttling: the same request will fail the same way."""
        return 400 <= self.status < 500 and self.status not in (404, 409, 429)


@dataclass(frozen=True)
class ClusterConfig:
    server: str
    token: str = ""
    ca_data: str = ""  # PEM
    client_cert_file: str = ""
    client_key_file: str = ""
    insecure: bool = False

    @classmethod
    def in_cluster(cls) -> ClusterConfig:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        with open(f"{SERVICE_ACCOUNT}/token") as token, open(f"{SERVICE_ACCOUNT}/ca.crt") as ca:
            return cls(server=f"https://{host}:{port}", token=token.read().strip(), ca_data=ca.read())

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> ClusterConfig:
        path = (
            path
            or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
            or os.path.expanduser("~/.kube/config")
        )
        with open(path) as handle:
            config = yaml.safe_load(handle)
        base = os.path.dirname(os.path.abspath(path))
        context_name = context or config.get("current-context")
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user: dict[str, Any] = (
            next((u["user"] for u in config.get("users", []) if u["name"] == ctx.get("user")), {}) or {}
        )

        def data_or_file(data_key: str, file_key: str, source: Mapping[str, Any]) -> str:
            if source.get(data_key):
                return base64.b64decode(source[data_key]).decode()
            if source.get(file_key):
                with open(os.path.join(base, source[file_key])) as f:
                    return f.read()
            return ""

        def as_file(pem: str) -> str:
            if not pem:
                return ""
            handle, name = tempfile.mkstemp(prefix="modelservice-operator-", suffix=".pem")
            with os.fdopen(handle, "w") as f:
                f.write(pem)
            return name

        token = user.get("token", "")
        if not token and user.get("tokenFile"):
            with open(os.path.join(base, user["tokenFile"])) as f:
                token = f.read().strip()
        return cls(
            server=cluster["server"],
            token=token,
            ca_data=data_or_file("certificate-authority-data", "certificate-authority", cluster),
            client_cert_file=as_file(data_or_file("client-certificate-data", "client-certificate", user)),
            client_key_file=as_file(data_or_file("client-key-data", "client-key", user)),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
        )

    @classmethod
    def auto(cls) -> ClusterConfig:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(f"{SERVICE_ACCOUNT}/token"):
            return cls.in_cluster()
        return cls.from_kubeconfig()

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cadata=self.ca_data or None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert_file:
            context.load_cert_chain(self.client_cert_file, self.client_key_file or None)
        return context


def object_path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{quote(namespace)}/{PLURALS[kind]}"
    return f"{path}/{quote(name)}" if name else path


def _scalar_equal(want: Any, got: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, (int, float, str)) and isinstance(got, (int, float, str)):
        return str(want) == str(got)  # quantities: 1 == "1"
    return bool(want == got)


def owned_fields_match(desired: Any, observed: Any) -> bool:
    """Every field we set has the same value on the server; extra server-side fields are ignored."""
    if isinstance(desired, Mapping):
        return isinstance(observed, Mapping) and all(
            key in observed and owned_fields_match(value, observed[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(owned_fields_match(d, o) for d, o in zip(desired, observed, strict=True))
        )
    return _scalar_equal(desired, observed)


class KubeClient:
    """A small async client with exactly the calls the operator makes."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.config.token}"} if self.config.token else {}
            self._session = aiohttp.ClientSession(
                base_url=self.config.server.rstrip("/"),
                headers=headers,
                connector=aiohttp.TCPConnector(ssl=self.config.ssl_context()),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._http().request(method, path, data=data, params=params, headers=headers) as response:
            text = await response.text()
            if response.status >= 400:
                try:
                    payload = json.loads(text)
                    raise ApiError(response.status, payload.get("message", text), payload.get("reason", ""))
                except (ValueError, AttributeError):
                    raise ApiError(response.status, text) from None
            return json.loads(text) if text else None

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._request(
                "GET", object_path(api_version, kind, namespace, name)
            )
            return result
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._request("GET", object_path(api_version, kind, namespace), params=params)
        items: list[dict[str, Any]] = (result or {}).get("items", [])
        return items

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (force: we are the controller of these children)."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        try:
            result: dict[str, Any] = await self._request(
                "PATCH", path, obj, params, content_type="application/apply-patch+yaml"
            )
            return result
        except ApiError as exc:
            # A real API server creates on apply; simpler emulators (KMock) only create on POST.
            if exc.status != 404:
                raise
        create_path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"])
        created: dict[str, Any] = await self._request(
            "POST", create_path, obj, {"fieldManager": FIELD_MANAGER}
        )
        return created

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        try:
            await self._request(
                "DELETE", object_path(api_version, kind, namespace, name), {"propagationPolicy": "Background"}
            )
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise


@dataclass(frozen=True)
class ChildResult:
    kind: str
    name: str
    action: str  # created | updated | unchanged | deleted
    observed: dict[str, Any] | None


async def reconcile_child(client: KubeClient, desired: Mapping[str, Any]) -> ChildResult:
    """Build desired -> classify (create / update / unchanged) -> act."""
    meta = desired["metadata"]
    observed = await client.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
    if observed is not None and owned_fields_match(desired, observed):
        return ChildResult(desired["kind"], meta["name"], "unchanged", observed)
    applied = await client.apply(desired)
    return ChildResult(desired["kind"], meta["name"], "created" if observed is None else "updated", applied)


async def prune_child(
    client: KubeClient, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
) -> ChildResult | None:
    """Delete a child we no longer want (an HPA or PDB after its feature was switched off)."""
    observed = await client.get(api_version, kind, namespace, name)
    if observed is None:
        return None
    owners: Sequence[Mapping[str, Any]] = observed.get("metadata", {}).get("ownerReferences") or []
    if not any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
        return None  # not ours: leave it alone
    await client.delete(api_version, kind, namespace, name)
    return ChildResult(kind, name, "deleted", None)
