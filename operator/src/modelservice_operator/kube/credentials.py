"""Credentials through the official ``kubernetes`` package: everything ``kubectl`` accepts.

**For correctness,** we do not read kubeconfigs ourselves: the official loader merges every path in
``$KUBECONFIG``, honours contexts, runs ``exec`` credential plugins (EKS, GKE, AKS) and re-runs them when
their token expires, and in a pod re-reads the projected service-account token as the kubelet rotates it.
We only ask it for the current ``Authorization`` header and the TLS material before each request, so the
same ``Credentials`` object serves Kopf's login and our own API client.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass, field

import kubernetes.client
import kubernetes.config

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class CredentialsError(RuntimeError):
    """Neither an in-cluster service account nor a usable kubeconfig."""


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(f"{SERVICE_ACCOUNT}/token")


def load_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> kubernetes.client.Configuration:
    """In a pod: the service account (token re-read as it rotates); else ``$KUBECONFIG`` / ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig is None and context is None and in_cluster():
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration, try_refresh_token=True
            )
        else:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise CredentialsError(f"No usable Kubernetes credentials: {exc}") from exc
    return configuration


@dataclass
class Credentials:
    """A view of the official client's Configuration: the server, TLS, and a fresh auth header."""

    configuration: kubernetes.client.Configuration
    kubeconfig: str | None = None
    context: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> Credentials:
        return cls(load_configuration(kubeconfig, context), kubeconfig, context)

    @property
    def server(self) -> str:
        return str(self.configuration.host).rstrip("/")

    def authorization(self) -> str | None:
        """``Bearer <token>``, refreshed by the loader's hook when it has expired (exec plugins, rotation)."""
        with self._lock:  # the refresh hook may run an exec plugin: once at a time
            header = self.configuration.get_api_key_with_prefix(
                "BearerToken"
            ) or self.configuration.get_api_key_with_prefix("authorization")
        if header and " " not in header:
            header = f"Bearer {header}"
        if header and header.lower().startswith("bearer "):
            header = "Bearer " + header.split(" ", 1)[1]
        return header or None

    def token(self) -> str | None:
        header = self.authorization()
        return header.split(" ", 1)[1] if header else None

    def reload(self) -> None:
        """Load again after a 401: a rotated certificate, a revoked token, an exec plugin to re-run."""
        configuration = load_configuration(self.kubeconfig, self.context)
        with self._lock:
            self.configuration = configuration

    def ssl_context(self) -> ssl.SSLContext | bool:
        config = self.configuration
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file or None)
        return context
