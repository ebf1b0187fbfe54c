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

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


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
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
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
        request_id = request_id_var.get()
        return f"{text} request_id={request_id}" if request_id else text


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
    # TensorFlow and Werkzeug are chatty at INFO; their warnings still come through.
    for noisy in ("tensorflow", "absl", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
