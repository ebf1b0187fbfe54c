"""Authentication of model API requests: API keys from a mounted Secret, and service-account tokens
reviewed by the API server (``kube_auth.py``); both off unless configured.

``--api_keys_dir`` names a directory with one file per key, as Kubernetes mounts a Secret: the file's name
is the key's *name* (what logs and metrics show), its content the key. A client sends
``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). Keys rotate without a restart: the directory
is looked at again at most once a second, and a Secret volume's update (the kubelet swaps its ``..data``
link) is seen at the next look. A presented key is compared with every key in constant time (SHA-256
digests, ``hmac.compare_digest``, no early exit), so timing tells nothing about which key nearly matched.

Refusals follow RFC 6750: 401 with ``WWW-Authenticate: Bearer realm="modelservice"`` for a missing or
unknown credential (``error="invalid_token"`` for the latter). Probes, ``/metrics`` and the OpenAPI
document stay open (``--auth_metrics`` protects ``/metrics`` too), so the kubelet and Prometheus need
no key. This module is worker-side and imports no TensorFlow; the gRPC server in the model process uses
the same ``Authenticator``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import metrics
from .errors import ServingError, Unavailable
from .kube_auth import verb_of
from .protocols.rapidjson import error_body
from .reloading import RECHECK_SECONDS, Reloading

log = logging.getLogger(__name__)

REALM = "modelservice"
# Paths any caller may GET without a credential: the kubelet's probes and the API description.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"})
METRICS_PATHS = frozenset({"/metrics", "/monitoring/prometheus/metrics"})


class Unauthenticated(ServingError):
    code = "UNAUTHENTICATED"

    def __init__(self, message: str, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value (RFC 6750 section 3)."""
        if self.invalid_token:
            return f'Bearer realm="{REALM}", error="invalid_token"'
        return f'Bearer realm="{REALM}"'


class PermissionDenied(ServingError):
    code = "PERMISSION_DENIED"


@dataclass(frozen=True)
class Identity:
    """Who a request comes from: ``kind`` "api-key" (``name`` is the key's name) or "anonymous"."""

    kind: str
    name: str

    @property
    def label(self) -> str:
        return self.name if self.kind != "anonymous" else "-"


ANONYMOUS = Identity("anonymous", "")


def _digest(secret: str | bytes) -> bytes:
    data = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hashlib.sha256(data).digest()


class ApiKeys:
    """The keys in a directory (a mounted Secret), re-read when it changes."""

    def __init__(
        self, directory: str, clock: Callable[[], float] = time.monotonic, recheck_s: float = RECHECK_SECONDS
    ) -> None:
        self.directory = directory
        self._keys = Reloading((directory,), self._load, "API keys", clock, recheck_s)

    @property
    def names(self) -> list[str]:
        return sorted(name for name, _ in self._keys.get())

    def _load(self) -> tuple[tuple[str, bytes], ...]:
        keys = tuple(self._read())
        log.info("API keys from %s: %d key(s): %s", self.directory, len(keys),
                 ", ".join(sorted(n for n, _ in keys)) or "none")  # fmt: skip
        return keys

    def _read(self) -> Iterable[tuple[str, bytes]]:
        try:
            entries = sorted(os.listdir(self.directory))
        except OSError as exc:
            log.error("Cannot read API keys from %s: %s; every request is refused", self.directory, exc)
            return
        for entry in entries:
            if entry.startswith("."):  # ..data, ..2026_11_22_..., editor files
                continue
            path = os.path.join(self.directory, entry)
            try:
                with open(path, "rb") as handle:
                    key = handle.read().strip()
            except (IsADirectoryError, OSError):
                continue
            if key:
                yield entry, _digest(key)

    def identify(self, token: str) -> str | None:
        """The name of the key ``token`` is, or None; the same work whichever key matches."""
        presented = _digest(token)
        found: str | None = None
        for name, digest in self._keys.get():
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        return found


def bearer_token(authorization: str | None, api_key: str | None) -> str | None:
    """The credential a request presents: ``Authorization: Bearer <token>``, else ``X-API-Key``."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return api_key.strip() if api_key and api_key.strip() else None


Reviewer = Callable[[str, str], Any]  # (token, verb) -> kube_auth.Verdict


class Authenticator:
    """Decides who a request comes from, or refuses it (401 / 403): an API key first, then (with
    Kubernetes authentication) the token as a service account's, reviewed by the API server."""

    def __init__(self, api_keys: ApiKeys | None = None, reviewer: Reviewer | None = None) -> None:
        self.api_keys = api_keys
        self.reviewer = reviewer

    @property
    def enabled(self) -> bool:
        return self.api_keys is not None or self.reviewer is not None

    @property
    def _wanted(self) -> str:
        if self.api_keys is not None and self.reviewer is not None:
            return "API key or service-account token"
        return "API key" if self.api_keys is not None else "service-account token"

    def authenticate(
        self, authorization: str | None, api_key: str | None = None, verb: str = "create"
    ) -> Identity:
        if not self.enabled:
            return ANONYMOUS
        token = bearer_token(authorization, api_key)
        if token is None:
            if authorization:
                raise Unauthenticated(
                    f"Unsupported Authorization scheme: send Authorization: Bearer <{self._wanted}>"
                )
            raise Unauthenticated(f"Missing credential: send Authorization: Bearer <{self._wanted}>")
        if self.api_keys is not None:
            name = self.api_keys.identify(token)
            if name is not None:
                return Identity("api-key", name)
        if self.reviewer is not None:
            verdict = self.reviewer(token, verb)
            if verdict.result == "allowed":
                return Identity("kubernetes", verdict.user)
            if verdict.result == "forbidden":
                raise PermissionDenied(verdict.message)
            raise Unauthenticated(verdict.message, invalid_token=True)
        raise Unauthenticated(
            "Invalid credential: the API key is not one of this server's", invalid_token=True
        )


def build_authenticator(api_keys_dir: str, reviewer: Reviewer | None = None) -> Authenticator:
    return Authenticator(ApiKeys(api_keys_dir) if api_keys_dir else None, reviewer)


IDENTITY_KEY = "modelservice.identity"


class AuthMiddleware:
    """Authentication in front of Flask: a refusal costs no routing, and the identity it finds is put in
    the WSGI environ for the access log, the metrics and rate limits."""

    def __init__(self, app: Any, authenticator: Authenticator, protect_metrics: bool = False) -> None:
        self.app = app
        self.authenticator = authenticator
        self.open_paths = OPEN_PATHS if protect_metrics else OPEN_PATHS | METRICS_PATHS

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ.get("REQUEST_METHOD")
        if method == "OPTIONS" or (method in ("GET", "HEAD") and environ.get("PATH_INFO") in self.open_paths):
            return self.app(environ, start_response)
        try:
            identity = self.authenticator.authenticate(
                environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"),
                verb_of(method or "POST"),
            )  # fmt: skip
        except Unavailable as exc:  # the API server could not review a token: try again
            body = error_body(exc.message).encode()
            start_response("503 Service Unavailable", [("Content-Type", "application/json"),
                           ("Content-Length", str(len(body))), ("Retry-After", "1")])  # fmt: skip
            return [body]
        except (Unauthenticated, PermissionDenied) as exc:
            result = "unauthenticated" if isinstance(exc, Unauthenticated) else "forbidden"
            metrics.AUTH_REQUESTS.labels(result, "-").inc()
            body = error_body(exc.message).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            if isinstance(exc, Unauthenticated):
                headers.append(("WWW-Authenticate", exc.challenge))
            if environ.get("HTTP_X_REQUEST_ID"):
                headers.append(("X-Request-ID", environ["HTTP_X_REQUEST_ID"]))
            status = "401 Unauthorized" if isinstance(exc, Unauthenticated) else "403 Forbidden"
            start_response(status, headers)
            return [body]
        if identity.kind != "anonymous":
            metrics.AUTH_REQUESTS.labels("allowed", identity.label).inc()
        environ[IDENTITY_KEY] = identity
        return self.app(environ, start_response)
