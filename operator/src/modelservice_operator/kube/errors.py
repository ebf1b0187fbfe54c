"""Typed API errors that keep the server's Status payload (Kopf's ``_cogs/clients/errors.py`` shape).

What matters to a controller is what to do next, so every error answers ``transient``: 401/403 are a
credentials or RBAC problem someone will fix (never "the spec is invalid"), 429/5xx/timeouts pass by
themselves, and 409 means someone else wrote first. Only a 4xx rejection of our own manifest is not
transient, and even that is retried slowly by the caller, never frozen. ``retry_after`` carries the
server's ``Retry-After`` header or ``details.retryAfterSeconds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class KubeError(Exception):
    """Any failure to talk to the API server."""

    transient = True
    retry_after: float | None = None


class ApiUnreachable(KubeError):
    """A timeout or a broken connection: the request may or may not have been applied."""


class ApiError(KubeError):
    status = 0

    def __init__(self, status: int, payload: Mapping[str, Any] | None = None, retry_after: float | None = None,
                 message: str = "") -> None:  # fmt: skip
        payload = payload or {}
        self.status = status
        self.payload = payload
        self.message = str(payload.get("message") or message or f"HTTP {status}")
        self.reason = str(payload.get("reason") or "")
        details: Mapping[str, Any] = payload.get("details") or {}
        self.causes: Sequence[Mapping[str, Any]] = details.get("causes") or []
        seconds = details.get("retryAfterSeconds")
        self.retry_after = retry_after if retry_after is not None else (float(seconds) if seconds else None)
        super().__init__(f"{status} {self.reason}: {self.message}".strip())

    @property
    def fields(self) -> list[str]:
        """The child's field paths the server named (``spec.template.spec.containers[0].image``)."""
        return [str(c["field"]) for c in self.causes if c.get("field")]

    @property
    def immutable(self) -> bool:
        return "field is immutable" in self.message or any(
            "immutable" in str(c.get("message", "")) for c in self.causes
        )


class ApiUnauthorized(ApiError):
    """401: the credentials are wrong or expired; reloading them may help."""


class ApiForbidden(ApiError):
    """403: RBAC does not allow the call; transient, because granting the rule fixes it."""


class ApiNotFound(ApiError):
    pass


class ApiConflict(ApiError):
    """409: a stale resourceVersion or an existing name: read again and retry."""


class ApiRejected(ApiError):
    """400/422 and other 4xx: the server refused our manifest; retrying the same body cannot help."""

    transient = False


class ApiThrottled(ApiError):
    """429: the API server or its priority-and-fairness queue asks us to slow down."""


class ApiServerError(ApiError):
    """5xx: the API server or a webhook failed."""


def error_for(status: int, payload: Mapping[str, Any] | None, retry_after: float | None = None,
              message: str = "") -> ApiError:  # fmt: skip
    cls: type[ApiError]
    if status == 401:
        cls = ApiUnauthorized
    elif status == 403:
        cls = ApiForbidden
    elif status == 404:
        cls = ApiNotFound
    elif status == 409:
        cls = ApiConflict
    elif status == 429:
        cls = ApiThrottled
    elif status >= 500:
        cls = ApiServerError
    else:
        cls = ApiRejected
    return cls(status, payload, retry_after, message)
