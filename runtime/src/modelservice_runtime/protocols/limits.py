"""What every protocol asks before it serves a model: the rate limit, and the body within its limit."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, RequestTimeout

from ..errors import InvalidArgument
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


def request_body() -> bytes:
    """The request's body, refused with 413 above ``--max_request_bytes``.

    With a Content-Length (what clients send) it is one read from the server's input; Werkzeug's
    ``get_data`` wraps the input in a LimitedStream read in 64 KiB steps through several layers of
    Python (~4% of a worker's CPU on a one-row predict). A chunked body is read to one byte past the
    limit, to tell a body at the limit from a larger one: Werkzeug's reader stops at the limit and
    returns the body cut there, which then failed as bad JSON instead of 413.
    """
    environ = request.environ
    limit: int | None = current_app.config["MAX_CONTENT_LENGTH"]
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "HTTP_TRANSFER_ENCODING" in environ
    if length.isascii() and length.isdigit() and not chunked:
        size = int(length)
        if limit is not None and size > limit:
            raise RequestEntityTooLarge()
        body = _read(environ, size)
        if len(body) != size:
            raise ClientDisconnected()
        return body
    if environ.get("wsgi.input_terminated"):  # the server ends the input where the body ends (Gunicorn)
        body = _read(environ, -1 if limit is None else limit + 1)
        if limit is not None and len(body) > limit:
            raise RequestEntityTooLarge()
        return body
    return request.get_data(cache=False)  # a server that does not: Werkzeug's safe fallback


def _read(environ: dict[str, Any], size: int) -> bytes:
    try:
        body: bytes = environ["wsgi.input"].read(size)
    except TimeoutError:  # no byte of it for --client_timeout_seconds (gunicorn_conf.RuntimeWorker)
        raise RequestTimeout() from None
    except OSError:  # the client went away mid-body (Gunicorn's NoMoreData): 400, as Werkzeug answers
        raise ClientDisconnected() from None
    except ParseException as exc:  # Gunicorn refused the body's framing (a bad chunk size, ...)
        raise InvalidArgument(f"Malformed request body: {exc}") from None
    return body
