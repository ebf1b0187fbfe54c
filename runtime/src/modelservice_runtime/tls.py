"""TLS on the REST and gRPC ports from a certificate and key on disk (a mounted ``kubernetes.io/tls``
Secret, as cert-manager writes it), reloaded when they change.

``--tls_cert_file`` / ``--tls_key_file``. REST: Gunicorn's ``ssl_context`` hook hands every worker one
context, rebuilt when the files change (looked at at most once a second), instead of Gunicorn's default of
reading and parsing the files on every connection. gRPC: ``grpc.dynamic_ssl_server_credentials`` asks for
the certificate on each new connection, and gets a new one when the files changed. Connections open
during a rotation keep their session; new ones get the new certificate. No restart either way.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0


def files_stamp(*paths: str) -> Any:
    """What changes when the files do: each one's identity and time, and where a Secret volume's
    ``..data`` link points (the kubelet swaps it on every update)."""
    stamp: list[Any] = []
    for path in paths:
        data = os.path.join(os.path.dirname(path) or ".", "..data")
        target = os.readlink(data) if os.path.islink(data) else ""
        try:
            stat = os.stat(path)
        except OSError:
            stamp.append((path, target, None))
            continue
        stamp.append((path, target, stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(stamp)


class Reloading:
    """A value built from files, rebuilt when they change (checked at most every ``recheck_s``)."""

    def __init__(
        self,
        paths: tuple[str, ...],
        build: Callable[[], Any],
        clock: Callable[[], float] = time.monotonic,
        recheck_s: float = RECHECK_SECONDS,
    ) -> None:
        self.paths = paths
        self.build = build
        self.clock = clock
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp = files_stamp(*paths)
        self._value = build()
        self._checked = clock()

    def get(self) -> Any:
        now = self.clock()
        if now - self._checked < self.recheck_s:
            return self._value
        with self._lock:
            if now - self._checked >= self.recheck_s:
                self._checked = now
                stamp = files_stamp(*self.paths)
                if stamp != self._stamp:
                    try:
                        value = self.build()
                    except (OSError, ssl.SSLError, ValueError) as exc:  # half-written: keep the old one
                        log.warning(
                            "TLS files %s changed but cannot be loaded yet: %s", ", ".join(self.paths), exc
                        )
                    else:
                        self._value, self._stamp = value, stamp
                        log.info("TLS certificate reloaded from %s", self.paths[0])
        return self._value


# -- REST (Gunicorn)

_rest_context: Reloading | None = None


def gunicorn_ssl_context(
    config: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    """Gunicorn's ``ssl_context`` hook: one context per worker, rebuilt when the files change."""
    global _rest_context
    if _rest_context is None:
        _rest_context = Reloading((config.certfile, config.keyfile), default_ssl_context_factory)
    context: ssl.SSLContext = _rest_context.get()
    return context


# -- gRPC


def grpc_server_credentials(cert_file: str, key_file: str) -> Any:
    import grpc

    def read() -> Any:
        with open(key_file, "rb") as key, open(cert_file, "rb") as cert:
            return grpc.ssl_server_certificate_configuration([(key.read(), cert.read())])

    current = Reloading((cert_file, key_file), read)
    served: list[Any] = [current.get()]

    def fetch() -> Any:
        latest = current.get()
        if latest is served[0]:
            return None  # unchanged: gRPC keeps the one it has
        served[0] = latest
        return latest

    return grpc.dynamic_ssl_server_credentials(served[0], fetch, require_client_authentication=False)
