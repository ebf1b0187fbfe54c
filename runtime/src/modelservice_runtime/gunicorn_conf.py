"""Gunicorn settings for the runtime, in sections; each says why it is set.

``modelservice-runtime`` (cli.py) applies ``settings(config)``; the hooks below are plain functions so
that Gunicorn calls them in the right process (the master for ``on_starting`` and ``child_exit``).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.monkey
import gunicorn.util
from gevent.event import Event
from gunicorn.glogging import Logger
from gunicorn.http.body import LengthReader
from gunicorn.workers.ggevent import GeventWorker

from . import admission, logs
from .config import RuntimeConfig
from .ipc import send_all
from .protocols.rapidjson import error_body
from .tls import gunicorn_ssl_context


class RuntimeLogger(Logger):  # type: ignore[misc]
    """Gunicorn's logger without its access log: the app writes one JSON line per request itself.

    With ``logconfig_dict`` set, Gunicorn would otherwise build its access-log atoms for every request
    (measurable CPU on a hot path) to log a second, differently formatted line."""

    @property
    def access_log_enabled(self) -> bool:
        return False


class Slots:
    """At most ``size`` holders at once; the others wait in arrival order. Unlike gevent's Semaphore, a
    freed slot goes to the first waiter directly, so the greenlet that frees one cannot take it back for
    its connection's next request while others wait (measured: a p99 of 60-190 ms in some runs of 32
    connections over two workers, against about 25 ms)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[Any] = collections.deque()

    def acquire(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        handed = Event()
        self._waiters.append(handed)
        try:
            handed.wait()
        except BaseException:  # killed while waiting (the worker stops): give back what it was given
            if handed.is_set():
                self.release()
            else:
                self._waiters.remove(handed)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._free += 1

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class FairSocket:
    """A connection's socket as the worker uses it: reads that let other greenlets run, and one write
    per response.

    **Fair reads.** A gevent socket returns data without switching to other greenlets as long as the
    kernel has some, so a fast upload of tens of MiB (or Gunicorn draining one after a 413) held the
    event loop for seconds: the worker's other requests waited, and its heartbeat stopped until the
    arbiter killed it (seen with a 65 MiB body under a 2 s worker timeout). Every ``YIELD_BYTES`` read,
    it yields once.

    **One write per response.** Gunicorn writes a response's head and its body with two ``sendall``
    calls, each a trip through the TCP stack (on loopback or a pod's network, the receiver's side of it
    too) for an answer that fits in one segment. After ``hold_head()`` the next write (the head) is kept
    until the one after it (the body) and both leave in one ``send``; a body over ``JOIN_BYTES`` follows
    the head instead of being copied behind it. ``release()``, at the end of the request, sends a head
    that no body followed (HEAD, 204, an empty body). Any other use of the socket (``sendfile``, the
    100-continue, ``close``) sends a held head first, so nothing overtakes it.
    """

    YIELD_BYTES = 256 * 1024
    JOIN_BYTES = 64 * 1024
    __slots__ = ("_head", "_holding", "_read", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._read = 0
        self._holding = False
        self._head: bytes | None = None

    def recv(self, size: int) -> bytes:
        data: bytes = self._sock.recv(size)
        self._read += len(data)
        if self._read >= self.YIELD_BYTES:
            self._read = 0
            gevent.sleep(0)
        return data

    def hold_head(self) -> None:
        self._holding = True

    def settimeout(self, seconds: float | None) -> None:
        self._sock.settimeout(seconds)

    @property
    def wrote(self) -> bool:
        """Whether the response has begun since ``hold_head()``: its head, held or sent, is fixed."""
        return not self._holding

    def sendall(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= self.JOIN_BYTES:
                data = head + data
            else:
                send_all(self._sock, head)
        elif self._holding:
            self._holding = False
            self._head = bytes(data)
            return
        send_all(self._sock, data)

    def release(self) -> None:
        self._holding = False
        head, self._head = self._head, None
        if head is not None:
            send_all(self._sock, head)

    def __getattr__(self, name: str) -> Any:
        if self._head is not None:
            self.release()
        return getattr(self._sock, name)


DRAIN_READ_BYTES = 1024 * 1024


def finish_body(req: Any) -> None:
    """Read what the app left of a request's body (a 413's, an error's) in ``DRAIN_READ_BYTES`` reads.

    Before the next request on the connection, Gunicorn discards the rest of the body 1 KiB at a time,
    and its buffer copies all it holds on every such read: draining a 65 MiB upload after its 413 took
    2.4 s of the worker's CPU, during which the worker's heartbeat could stall long enough for the
    arbiter to kill it (seen in CI under a 2 s worker timeout). Large reads make it linear; the reads
    go through ``FairSocket``, which yields to the other greenlets. A body that fails to read (a reset,
    a bad chunk) is marked failed by Gunicorn, which then closes the connection; one cut short by the
    client's close ends at the end of its data, and the parser then finds no next request."""
    body = getattr(req, "body", None)
    if body is None or body.failed:
        return
    reader = body.reader
    if isinstance(reader, LengthReader) and reader.length == 0 and not body.buf.tell():
        return  # the app read it all: the common case costs no read
    with contextlib.suppress(Exception):  # Body.failed is set; Gunicorn closes the connection
        while body.read(DRAIN_READ_BYTES):
            pass


class ReadAheadBody:
    """A POST's body, read off the connection before the request waits for a request slot, and then
    handed to the app (``wsgi.input``) and to Gunicorn as the body it would have read.

    A slot bounds what a worker has in the model process, not what it is receiving: while the app read
    the body inside its slot, a client that sent a head and then the body slowly, or not at all, held
    the slot for as long; ``--threads`` such clients left a worker's other POSTs waiting with no end
    (no 503, no answer). Up to ``READ_AHEAD_BYTES`` are read ahead: every body of a usual request, while
    what a worker holds for connections without a slot stays bounded (connections x 256 KiB, where
    reading all of a 64 MiB body ahead would allow connections x 64 MiB); the rest of a larger body is
    read by the app in its slot, as before. What fails while reading (the client went away, a bad chunk,
    ``--client_timeout_seconds`` without a byte) is raised where the app reads, as it was, and calls
    ``on_failure`` (the request's ``force_close``: its answer says "Connection: close", since where the
    next request would start is unknown). ``failed``, ``reader`` and ``buf`` are the Gunicorn
    body's (``finish_body``); the worker puts that body back once the request is done, so an idle
    kept-alive connection holds no bytes of its last request."""

    def __init__(self, body: Any, size: int, on_failure: Callable[[], None]) -> None:
        self.body = body
        self._on_failure = on_failure
        self._error: Exception | None = None
        try:
            self._ahead: bytes = body.read(size)
        except Exception as exc:  # re-raised where the app reads, as it was before
            self._ahead, self._error = b"", exc
            on_failure()
        self._pos = 0

    def read(self, size: int | None = None) -> bytes:
        want = -1 if size is None or size < 0 else size
        if self._pos == 0 and (want < 0 or want >= len(self._ahead)):
            ahead = self._ahead  # the usual case: the app reads it all in one call, without a copy
        else:
            ahead = self._ahead[self._pos : len(self._ahead) if want < 0 else self._pos + want]
        self._pos += len(ahead)
        if want >= 0 and len(ahead) == want:
            return ahead
        if self._error is not None:
            if ahead:
                return ahead
            error, self._error = self._error, None
            raise error
        try:
            rest: bytes = self.body.read(None if want < 0 else want - len(ahead))
        except Exception:
            self._on_failure()
            raise
        return ahead + rest if ahead else rest

    def readline(self, size: int | None = None) -> bytes:
        if self._pos < len(self._ahead):
            end = self._ahead.find(b"\n", self._pos) + 1 or len(self._ahead)
            if size is not None and size >= 0:
                end = min(end, self._pos + size)
            line = self._ahead[self._pos : end]
            self._pos = end
            return line
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        try:
            rest: bytes = self.body.readline(size)
        except Exception:
            self._on_failure()
            raise
        return rest

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __getattr__(self, name: str) -> Any:
        if name in ("failed", "reader", "buf"):
            return getattr(self.body, name)
        raise AttributeError(name)


READ_AHEAD_BYTES = 256 * 1024  # as offload.HEAVY_BYTES: larger bodies are rare, and read in the slot


def read_ahead(req: Any, sock: Any, limit: int) -> None:
    """``ReadAheadBody`` in place of a POST's body, unless it is declared larger than ``limit`` (the app
    refuses it from its Content-Length). A client that waits for "100 Continue" gets it first (Gunicorn
    would send it later, when the app starts)."""
    length = req.body is not None and getattr(req.body.reader, "length", None)
    if req.body is None or (isinstance(length, int) and length > limit):
        return
    if req._expected_100_continue:
        sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        req._expected_100_continue = False
    req.body = ReadAheadBody(req.body, min(limit + 1, READ_AHEAD_BYTES), req.force_close)


def write_json_error(sock: Any, status: int, reason: str, message: str) -> None:
    """What Gunicorn answers a request it cannot parse (a bad request line, method or header, a head
    over the limits, an unknown expectation), as JSON like every other error of the runtime, instead of
    its HTML page: ``{"error": "Bad Request: Invalid HTTP header name: 'Bad Header'"}``. The worker puts
    it in place of ``gunicorn.util.write_error``, which its ``handle_error`` calls; status codes and
    messages stay Gunicorn's."""
    body = error_body(f"{reason}: {message}" if message else reason).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


class RuntimeWorker(GeventWorker):  # type: ignore[misc]
    """Gunicorn's gevent worker: one thread, a greenlet per connection, and what the runtime adds.

    **Why gevent.** A worker's requests spend most of their time waiting on the model process. With a
    thread per request (gthread), every request paid thread wake-ups and GIL hand-offs on the way in and
    out; greenlets switch in a microsecond, and the requests of one turn of the event loop share one
    write to the model process and one read back (``ipc.MuxTransport``).

    **Request slots** (``--threads``, as gthread's thread count bounded it before): at most that many
    POSTs per worker are in the model process at once; the others wait for a slot, in arrival order. A
    POST's body (its first 256 KiB) is read before it waits (``read_ahead``): a small slow upload holds no slot.

    **Queueing delay** (``admission.py``): a request has waited for the event loop (a turn of the loop
    that serves other requests first: the loop's *lag*, measured by a greenlet that sleeps
    ``LAG_PERIOD_S`` and sees how late it wakes) and then for a slot. Both together are its sojourn.

    **Drain on SIGTERM:** Kubernetes sends SIGTERM and removes the pod from the Service's endpoints at
    the same time; the endpoint update takes a moment to reach every proxy, which keeps sending requests
    meanwhile. So for ``--drain_seconds`` the worker keeps serving and answers ``/v2/health/ready`` with
    503; then it stops accepting, answers what is in flight and what arrives on kept-alive connections
    with "Connection: close", closes a connection once it has been idle for two seconds of the stop,
    lets in-flight requests finish (up to ``--graceful_timeout_seconds``) and exits.
    """

    LAG_PERIOD_S = 0.01
    STOP_KEEPALIVE_LINGER_S = 2.0
    _draining = False
    _lag = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle: dict[Any, float] = {}  # the connections waiting for a request, and since when
        self._busy: dict[Any, Any] = {}  # the connections serving a request, and its request
        self._closer: gevent.Greenlet[..., None] | None = None  # _close_idle, once stopping

    def run(self) -> None:
        # After the fork and the monkey-patching: the slots and the lag probe belong to this worker.
        config = getattr(self.app, "runtime_config", None)
        self._slots = Slots(getattr(config, "threads", 16))
        self._body_limit = getattr(config, "max_request_bytes", 64 * 1024 * 1024)
        self._client_timeout = getattr(config, "client_timeout_seconds", 60.0) or None
        gunicorn.util.write_error = write_json_error  # this process's: the worker's handle_error uses it
        gevent.spawn(self._measure_lag)
        real = gevent.monkey.get_original  # the thread's own lock and id, not gevent's patched ones
        logs.hold_access_lines_for_the_turn(
            gevent.get_hub().loop, real("_thread", "RLock")(), real("threading", "get_ident")
        )
        # What the worker has built by now (Flask, its app, the modules) lives as long as the worker: out
        # of the collector's sight, later collections walk only what requests allocate. A small gain,
        # within this VM's noise: 1.05x the small model's single-row throughput at the median of 11
        # rounds side by side, 1.02x (p99 0.86x) in 7 rounds of bench.side_by_side.
        gc.collect()
        gc.freeze()
        super().run()

    def _measure_lag(self) -> None:
        while self.alive:
            start = time.monotonic()
            gevent.sleep(self.LAG_PERIOD_S)
            self._lag = max(0.0, time.monotonic() - start - self.LAG_PERIOD_S)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if isinstance(client, ssl.SSLSocket) and not self._handshake(client, addr):
            client.close()
            return
        client = FairSocket(client)
        # A connection is idle while it waits for its next request: at stop, such are closed (_stop).
        self._idle[client] = time.monotonic()
        try:
            super().handle(listener, client, addr)
        finally:
            self._idle.pop(client, None)

    def _handshake(self, client: Any, addr: Any) -> bool:
        # TLS (tls.CurrentContext leaves the handshake to here): a client gets --client_timeout_seconds
        # to complete it; then waiting for its request is the keep-alive's timeout, as without TLS.
        # Gunicorn's handle() asks for the handshake again, which then returns at once.
        client.settimeout(self._client_timeout)
        try:
            client.do_handshake()
        except (OSError, ValueError) as exc:  # a timeout, not TLS (plain HTTP), a reset, ...
            self.log.debug("TLS handshake with %s failed: %s", addr, exc)
            return False
        client.settimeout(None)
        return True

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        self._idle.pop(sock, None)
        self._busy[sock] = req
        # While the request is served, its body's reads and its answer's writes wait at most this long
        # each (``--client_timeout_seconds``), as nginx's client_body_timeout and send_timeout: a read
        # that times out fails the body (the app answers 408), a write closes the connection. Waiting for
        # the next request is the keep-alive's timeout (Gunicorn's), so the socket's is lifted after.
        sock.settimeout(self._client_timeout)
        try:
            served = self._serve(listener_name, req, sock, addr)
        except TimeoutError:
            self.log.info(
                "Closed the connection of %s %s from %s: its answer waited %gs for the client to read it",
                req.method, req.path, addr, self._client_timeout,
            )  # fmt: skip
            raise StopIteration from None  # Gunicorn's handle() closes the connection
        sock.settimeout(None)
        self._idle[sock] = time.monotonic()  # only now: a body still being read off is not idle
        return served

    def _serve(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        sock.hold_head()
        try:
            if req.method != "POST":  # probes and /metrics never wait behind model requests
                served = super().handle_request(listener_name, req, sock, addr)
            else:
                read_ahead(req, sock, self._body_limit)  # before the slot: a slow upload holds none
                queued_at = time.monotonic() - self._lag
                with self._slots:
                    admission.set_queued_at(queued_at)
                    try:
                        served = super().handle_request(listener_name, req, sock, addr)
                    finally:
                        admission.set_queued_at(None)
        finally:
            sock.release()
            del self._busy[sock]
        # Stopping, a connection closes after an answer that said so: Gunicorn closes those. One whose
        # answer said keep-alive (its head left before the stop) stays open for the client's next
        # request, answered with a close, or until it has been idle long enough (_close_idle).
        finish_body(req)
        if isinstance(req.body, ReadAheadBody):  # Gunicorn keeps the request until the next one comes
            req.body = req.body.body
        return served

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining or not self.alive:
            return
        self._draining = True
        drain_seconds = getattr(getattr(self.app, "runtime_config", None), "drain_seconds", 0.0)
        wsgi = getattr(self, "wsgi", None)
        if wsgi is not None and hasattr(wsgi, "extensions"):
            wsgi.extensions["modelservice.draining"] = True
        # The signal handler runs between two bytecodes of whatever the loop's thread was doing, writing
        # a log line included: its own line is written from a greenlet, as gevent's handlers do.
        gevent.spawn(
            self.log.info, "Draining worker %s: not ready, stopping in %.1fs", self.pid, drain_seconds
        )
        gevent.spawn_later(drain_seconds, self._stop, sig, frame)

    def _stop(self, sig: int, frame: Any) -> None:
        # Gunicorn's handle_exit only flips `alive`: the worker stops accepting and waits, up to the
        # graceful timeout, for every connection's greenlet to end. A request that arrives from now on
        # is answered with "Connection: close" (Gunicorn's handle_request). So is one in flight whose
        # answer has not begun: answered keep-alive and then closed, its client's next request would
        # meet a closed socket (a broken pipe, seen in a rollout under load through a Service).
        super().handle_exit(sig, frame)
        for sock, req in self._busy.items():
            if not sock.wrote:
                req.force_close()
        self._closer = gevent.spawn(self._close_idle, time.monotonic())

    def _close_idle(self, stopped_at: float) -> None:
        # A kept-alive connection that waits for its next request would hold the worker up to the
        # keep-alive time. Each is closed once it has been idle for STOP_KEEPALIVE_LINGER_S of the stop
        # (as Gunicorn's gthread worker does: a client that was about to send one more request gets its
        # answer and the close, not a reset). The worker exits, ending this, once no connection is left.
        while True:
            now = time.monotonic()
            wake = now + self.STOP_KEEPALIVE_LINGER_S
            for client, since in list(self._idle.items()):
                due = max(since, stopped_at) + self.STOP_KEEPALIVE_LINGER_S
                if due > now:
                    wake = min(wake, due)
                    continue
                del self._idle[client]
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)  # its greenlet reads the end of the stream and ends
            gevent.sleep(wake - now)


def settings(config: RuntimeConfig) -> dict[str, Any]:
    return {
        # -- Binding ----------------------------------------------------------------------------------
        "bind": [f"{config.rest_api_host}:{config.rest_api_port}"],
        # -- Workers ----------------------------------------------------------------------------------
        # gevent (RuntimeWorker): HTTP and JSON on every core (one worker per core by default), each
        # worker with up to `threads` requests at once that mostly wait on the model process, which
        # holds the one copy of the models (engine.py). A request's wait for the event loop and for a
        # slot is the queueing delay that overload control watches (admission.py).
        "worker_class": RuntimeWorker,
        "workers": config.workers,
        # Connections per worker (idle kept-alive ones included): gevent's default.
        "worker_connections": 1000,
        # Each worker listens on its own SO_REUSEPORT socket (Gunicorn 27 opens them after the fork),
        # so the kernel spreads new connections over the workers by their addresses. On one shared
        # socket the workers race to accept, and kept-alive connections opened at once (a client's
        # pool, a proxy) can all land on one worker, whose GIL then caps the pod while the other
        # cores idle: `make bench` caught splits of 32 connections as 32/0, 31/1 and 28/4, at 40-60%
        # of the throughput of an even split. The cost: connections still in the backlog of a worker
        # that exits (a crash, a timeout) are reset instead of going to another worker.
        "reuse_port": True,
        # The app is created in each worker after the fork; no worker imports TensorFlow.
        "preload_app": False,
        # -- Timeouts ---------------------------------------------------------------------------------
        # The worker timeout is a heartbeat of the worker's event loop; models load in the model
        # process, so a long load never holds a worker up.
        "timeout": config.worker_timeout_seconds,
        # On SIGTERM a worker first drains (--drain_seconds, not ready but serving), then stops accepting
        # and lets in-flight requests finish for this long.
        "graceful_timeout": config.graceful_timeout_seconds,
        # Keep connections open between requests of a client (load balancers and SDKs reuse them).
        "keepalive": 75,
        # -- Housekeeping -----------------------------------------------------------------------------
        # Heartbeat files on tmpfs: a slow or read-only root filesystem must not stall the heartbeat.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        # Gunicorn 27's control socket would go under $HOME, read-only in the pod; nothing uses it.
        "control_socket_disable": True,
        # -- TLS (tls.py): one context per worker, rebuilt when the certificate files change -----------
        **(
            {
                "certfile": config.tls_cert_file,
                "keyfile": config.tls_key_file,
                "ssl_context": gunicorn_ssl_context,
            }
            if config.tls_cert_file
            else {}
        ),
        # We log each request ourselves, as JSON with its request id.
        "accesslog": None,
        "logger_class": RuntimeLogger,
        "errorlog": "-",
        "loglevel": config.log_level,
        "logconfig_dict": logging_dict(config),
        "proc_name": "modelservice-runtime",
        # -- Hooks ------------------------------------------------------------------------------------
        "on_starting": on_starting,
        "post_fork": post_fork,
        "pre_request": pre_request,
        "child_exit": child_exit,
    }


def logging_dict(config: RuntimeConfig) -> dict[str, Any]:
    formatter = "json" if config.log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "modelservice_runtime.logs.JsonFormatter"},
            "text": {"()": "modelservice_runtime.logs.TextFormatter"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": formatter, "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": config.log_level.upper()},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": config.log_level.upper(), "propagate": False},
            "tensorflow": {"level": "WARNING"},
            "absl": {"level": "WARNING"},
        },
    }


def prepare_multiprocess_metrics() -> str:
    """Give the workers a fresh PROMETHEUS_MULTIPROC_DIR; call before any import of prometheus_client."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)  # stale files from a previous run count double
        os.makedirs(directory, exist_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix="modelservice-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def on_starting(server: Any) -> None:
    server.log.info("Started the master; metrics directory %s", os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def post_fork(server: Any, worker: Any) -> None:
    # Models load in the model process, not here: a worker starts in well under a second.
    server.log.info("Forked worker %s", worker.pid)


def pre_request(worker: Any, req: Any) -> None:
    """Nothing. Gunicorn's default logs every request's method and path at debug level, which the
    access log already writes: it cost a log-level check per request (0.6% of a worker's samples)."""


def child_exit(server: Any, worker: Any) -> None:
    # Drop the live gauges of a dead worker so that /metrics stops reporting its models' states.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
