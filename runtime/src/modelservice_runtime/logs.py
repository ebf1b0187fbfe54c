"""Structured logs: one JSON object per line, carrying the request id of the request being served.

The request id comes from ``X-Request-ID`` when the client (or an ingress) sent one, else a new UUID; it
is echoed in the response header so that a client can quote it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
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


ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "model", "client")


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

    def entry(self, created: float, level: str, logger: str, pid: int | None, message: str) -> dict[str, Any]:
        """A line's leading fields, and the request id of the request being served."""
        entry: dict[str, Any] = {
            "time": self._time(created, (created - int(created)) * 1000),
            "level": level,
            "logger": logger,
            "pid": pid,
            "message": message,
        }
        state = request_state.get()
        if state is not None and state.request_id:
            entry["request_id"] = state.request_id
        return entry

    def format(self, record: logging.LogRecord) -> str:
        entry = self.entry(
            record.created, record.levelname.lower(), record.name, record.process, record.getMessage()
        )
        for key in ACCESS_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode("utf-8")


class AccessLog:
    """The access log: one line per request served, from the logger ``name`` at INFO.

    With one plain JSON stream handler the only one on the way (a pod's case: the handler
    ``configure_logging`` installs, or the one Gunicorn builds in the workers from ``logging_dict``), the
    line is encoded and written to its stream here, as that handler would write it: logging's own path (a
    LogRecord of some twenty attributes, the handler chain, the formatter's generic fields) cost 35 us
    of a worker's CPU per one-row predict in ``bench.request_cost`` (access log on against off), this
    path 23. Any other handler, filter or format on the way (a test's handler, a text log) gets a
    regular record through ``logging``, so nothing is lost."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def _direct(self) -> logging.StreamHandler[Any] | None:
        """The root's one handler, if every line goes there and only there and it is a plain stream
        handler with the JSON formatter: the handler ``configure_logging`` installs, or the one
        Gunicorn builds from ``gunicorn_conf.logging_dict`` in the workers."""
        logger: logging.Logger | None = self.logger
        while logger is not None and logger.parent is not None:  # up to, not including, the root
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        root = logging.getLogger()
        if len(root.handlers) != 1 or root.filters:
            return None
        handler = root.handlers[0]
        if type(handler) is not logging.StreamHandler or handler.filters:  # a subclass may emit otherwise
            return None
        return handler if type(handler.formatter) is JsonFormatter else None

    def served(self, fields: dict[str, Any]) -> None:
        """Log a request served: ``fields`` are the line's extra fields (``ACCESS_FIELDS``, None left out),
        of which ``method``, ``path`` and ``status`` also make its message."""
        method, path, status = fields["method"], fields["path"], fields["status"]
        message = f"Served {method} {path} with {status}"
        handler = self._direct()
        if handler is None:
            self.logger.info("Served %s %s with %d", method, path, status, extra=fields)
            return
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter)
        entry = formatter.entry(time.time(), "info", self.logger.name, os.getpid(), message)
        for key, value in fields.items():
            if value is not None:
                entry[key] = value
        line = orjson.dumps(entry, default=str).decode("utf-8") + handler.terminator
        with handler.lock or _no_lock:
            try:
                handler.stream.write(line)
                handler.flush()
            except Exception:  # as logging does: a log that cannot be written must not fail the request
                handler.handleError(logging.makeLogRecord({"msg": message, "name": self.logger.name}))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        state = request_state.get()
        return f"{text} request_id={state.request_id}" if state is not None and state.request_id else text


_no_lock = contextlib.nullcontext()
_installed: logging.StreamHandler[Any] = logging.StreamHandler(sys.stderr)  # configure_logging replaces it


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    global _installed
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _installed = handler
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
