"""TLS on the REST and gRPC ports from a certificate and key on disk (a mounted ``kubernetes.io/tls``
Secret, as cert-manager writes it), reloaded when they change.

``--tls_cert_file`` / ``--tls_key_file``. REST: Gunicorn's ``ssl_context`` hook hands every worker an
object that wraps each new connection with a context rebuilt when the files change (looked at at most
once a second). gRPC: ``grpc.dynamic_ssl_server_credentials`` asks for the certificate on each new
connection, and gets a new one when the files changed. Connections open
during a rotation keep their session; new ones get the new certificate. No restart either way.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from .config import SslConfig
from .reloading import Reloading

# -- REST (Gunicorn)

_rest_context: Reloading | None = None


class CurrentContext:
    """What Gunicorn's gevent worker gets from the ``ssl_context`` hook, once, for the life of the
    worker: each connection is wrapped by the context of the files as they are now. The handshake is
    left to the worker (``RuntimeWorker.handle``), which bounds it by ``--client_timeout_seconds``: done
    here, in gevent's server, it had no time limit, so a client that connected and sent nothing held
    one of the worker's connections for good."""

    def __init__(self, contexts: Reloading) -> None:
        self._contexts = contexts

    def wrap_socket(self, sock: Any, **kwargs: Any) -> Any:
        context: ssl.SSLContext = self._contexts.get()
        return context.wrap_socket(sock, **{**kwargs, "do_handshake_on_connect": False})


def gunicorn_ssl_context(
    config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]
) -> CurrentContext:
    """Gunicorn's ``ssl_context`` hook: one context per worker, rebuilt when the files change."""
    global _rest_context
    if _rest_context is None:
        _rest_context = Reloading(
            (config.certfile, config.keyfile), default_ssl_context_factory, "TLS certificate"
        )
    return CurrentContext(_rest_context)


# -- gRPC


def grpc_server_credentials(cert_file: str, key_file: str) -> Any:
    import grpc

    def read() -> Any:
        with open(key_file, "rb") as key, open(cert_file, "rb") as cert:
            return grpc.ssl_server_certificate_configuration([(key.read(), cert.read())])

    current = Reloading((cert_file, key_file), read, "TLS certificate (gRPC)")
    served: list[Any] = [current.get()]

    def fetch() -> Any:
        latest = current.get()
        if latest is served[0]:
            return None  # unchanged: gRPC keeps the one it has
        served[0] = latest
        return latest

    return grpc.dynamic_ssl_server_credentials(served[0], fetch, require_client_authentication=False)


def grpc_credentials(ssl_config: SslConfig | None, tls_cert_file: str, tls_key_file: str) -> Any:
    """The gRPC port's TLS: TF Serving's --ssl_config_file first, else --tls_cert_file/--tls_key_file
    (reloaded when they change), else none."""
    if ssl_config is not None:
        return grpc_ssl_config_credentials(ssl_config)
    if tls_cert_file:
        return grpc_server_credentials(tls_cert_file, tls_key_file)
    return None


def grpc_ssl_config_credentials(config: SslConfig) -> Any:
    """TF Serving's ``--ssl_config_file``: the certificate as given, and with
    ``client_verify`` a client certificate signed by ``custom_ca`` is required (TF Serving's
    REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY)."""
    import grpc

    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )
