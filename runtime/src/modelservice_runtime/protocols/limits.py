"""What every protocol asks before it serves a model: the rate limit."""

from __future__ import annotations

from flask import current_app, request

from ..logs import current_request
from ..ratelimit import admit
from ..security import IDENTITY_KEY


def enforce_rate_limit(model: str) -> None:
    """With --rate_limit_requests_per_second: a token for (this request's client, ``model``) from the
    model process, or 429. The decision's RateLimit-* fields go on the response (app.py)."""
    if current_app.extensions.get("modelservice.rate_limited"):
        identity = request.environ.get(IDENTITY_KEY)
        client = identity.label if identity is not None else "-"
        current_request().rate = admit(current_app.extensions["modelservice.dataplane"], client, model)
