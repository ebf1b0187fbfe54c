"""Structured logs: one JSON object per line, carrying the request id of the request being served.

The request id comes from ``X-Request-ID`` when the client (or an ingress) sent one, else a new UUID; it
is echoed in the response header so that a client can quote it.
"""

from __future__ import annotations

import contextvars
import logging
import random
import sys
import time
import uuid
from typing import Any

import orjson


class RequestState:
    """What the HTTP layer knows of the request being served: its id and start, and what the views learn
    (which API, model and version; the rate-limit decision; the cache outcome) for its metrics, its
    response headers and its access-log line. ``app.RequestBookkeeping`` makes one per request."""

    __slots__ = ("api", "cache", "model", "rate", "request_id", "started", "version")

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started
        self.api: str | None = None
        self.model: str | None = None
        self.version: str | None = None
        self.rate: Any = None  # a ratelimit.Decision
        self.cache: str | None = None


request_state: contextvars.ContextVar[RequestState | None] = contextvars.ContextVar(
    "request_state", default=None
)


def current_request() -> RequestState:
    """The state of the request this thread serves; a detached one outside a request (what is set on it
    goes nowhere)."""
    return request_state.get() or RequestState("", 0.0)


def new_request_id() -> str:
    """A random (version 4) UUID, from the process's PRNG rather than ``uuid4()``'s ``os.urandom``: a
    request id needs to be unique, not secret, and the system call cost 20 us a request in the bench's
    profile. ``random`` reseeds in each forked worker, so workers do not repeat each other."""
    return uuid.UUID(int=random.getrandbits(128), version=4).hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line, encoded by orjson (the access log writes one per request)."""

    _second: tuple[int, str] = (-1, "")  # (a second, its text): one tuple, swapped whole across threads

    def _time(self, created: float, msecs: float) -> str:
        second, text = self._second
        if int(created) != second:  # strftime once a second, not once a line
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        state = request_state.get()
        if state is not None and state.request_id:
            entry["request_id"] = state.request_id
        for key in ("method", "path", "status", "duration_ms", "model", "client"):
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode("utf-8")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        state = request_state.get()
        return f"{text} request_id={state.request_id}" if state is not None and state.request_id else text


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Neither formatter writes the thread or process name: skip collecting them for every record (the
    # logging HOWTO's "Optimization" flags; the pid stays).
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # nor the caller's file and line (a walk up the stack per record)
    # TensorFlow and Werkzeug are chatty at INFO; their warnings still come through.
    for noisy in ("tensorflow", "absl", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
