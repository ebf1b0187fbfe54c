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
from collections.abc import Callable
from typing import IO, Any

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
                stream = handler.stream
                if type(stream) is LoopTurnStream:
                    stream.write_at_end_of_turn(line)
                else:
                    stream.write(line)
                    handler.flush()
            except Exception:  # as logging does: a log that cannot be written must not fail the request
                handler.handleError(logging.makeLogRecord({"msg": message, "name": self.logger.name}))


class LoopTurnStream:
    """A gevent worker's log stream: the access-log lines of one turn of the event loop leave in one write,
    at the end of that turn, instead of a write each.

    In a pod, stderr is a pipe that the container runtime reads and copies to the node's log file: each
    write is a system call in the worker and a wake-up and a read in the reader. The requests whose
    replies come back from the model process in one read finish in one turn of the loop, so their lines
    now share one write. Any other record (the handler writes it and flushes) goes out at once behind
    what was held, so log records keep their order; so does a line from another thread (gevent's pool),
    which has no turn of this loop to wait for. Text written to ``sys.stderr`` itself, not through
    logging (a warning, gevent's report of a greenlet's crash), can overtake the held lines. A line waits
    at most for the rest of its turn: a worker killed outright loses at most those; one that exits
    flushes them (``logging.shutdown``).

    ``lock`` is a real re-entrant lock: gevent's pool threads write here too, and a signal handler that
    logs can run in the loop's thread while it holds the lock.
    """

    def __init__(self, stream: IO[str], loop: Any, lock: Any, thread_id: Callable[[], int]) -> None:
        taken = [lock.acquire(False) for _ in range(2)]
        for held in taken:
            if held:
                lock.release()
        if taken != [True, True]:
            raise ValueError("LoopTurnStream needs a re-entrant lock")
        self.stream = stream
        self._loop = loop  # gevent's loop, to call back at the end of this turn
        self._lock = lock
        self._thread_id = thread_id  # the real thread's id (gevent's patched one is the greenlet's)
        self._owner = thread_id()  # the loop's thread
        self._held: list[str] = []
        self._scheduled = False

    def write_at_end_of_turn(self, text: str) -> None:
        if self._thread_id() != self._owner:
            self.write(text)
            self.flush()
            return
        with self._lock:
            self._held.append(text)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._scheduled = False
        with contextlib.suppress(Exception):  # as logging does: a log that cannot be written stops nothing
            self.flush()

    def _write_held(self) -> None:  # under the lock; lines that fail to leave are not tried again
        if self._held:
            text = "".join(self._held)
            self._held.clear()
            self.stream.write(text)

    def write(self, text: str) -> int:
        with self._lock:
            self._write_held()
            return self.stream.write(text)

    def flush(self) -> None:
        with self._lock:
            self._write_held()
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding ...
        return getattr(self.stream, name)


def hold_access_lines_for_the_turn(loop: Any, lock: Any, thread_id: Callable[[], int]) -> None:
    """In a gevent worker, from its loop's thread: the root's plain stream handlers write through a
    ``LoopTurnStream``. ``lock`` and ``thread_id`` are the real ones, not gevent's patched ones."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and type(handler.stream) is not LoopTurnStream:
            handler.setStream(LoopTurnStream(handler.stream, loop, lock, thread_id))


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
