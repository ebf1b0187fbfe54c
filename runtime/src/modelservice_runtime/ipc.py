"""The local IPC between the HTTP workers and the model process: a Unix socket, one frame per message.

**Framing.** A message is ``<u64 length><pickle>`` (protocol 5). A numeric array up to 64 KiB travels as
(dtype, shape, raw bytes) and is rebuilt with ``np.frombuffer``: numpy's own reduce goes through Python
code that cost a one-row request about 9 of its 14 us to pickle and unpickle on the worker's side,
and as much again on the model process's side; larger arrays and object arrays keep numpy's reduce. Both
ends are this package, in one pod, as one user: the socket lives in a private directory (0700), so
pickle's trust model is the process boundary we already have.

**Requests carry an id** (``(id, op, args)``, answered by ``(id, reply)``), so one connection carries
many requests at once and their replies in any order.

**Connections.** An HTTP worker (one event loop of greenlets, ``gunicorn_conf.py``) keeps one
connection per model process (``MuxTransport``): the requests its greenlets make in one turn of the loop
go out in one write, and one read brings back every reply that has arrived. The model process
(``EngineServer``) reads every frame a read brings and starts each (``engine.submit``); the replies of
one batch go out in one write per connection (``coalesced``). Against one connection per worker thread
with a request at a time (the previous design), that serves 16% more one-row predicts side by side,
with a lower p99 (the README's benchmark section has the measurement). ``SocketTransport`` is the
blocking client for threads: one connection per thread, one request at a time (the model processes ask
the first one for rate-limit tokens with it).
"""

from __future__ import annotations

import contextlib
import copyreg
import functools
import io
import itertools
import logging
import os
import pickle
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np

from . import errors
from .errors import DeadlineExceeded, ServingError, Unavailable

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<Q")
FIRST_READ = 256 * 1024
OK, ERROR = 0, 1

ENGINE_DOWN = "The model process is not running (it is starting or restarting); retry"
ENGINE_LOST = "The model process stopped while serving this request; retry"
READ_TIMEOUT_S = 5.0


SMALL_ARRAY = 64 * 1024
_PLAIN_KINDS = frozenset("biufc")  # numbers and bools: their dtype string says all there is


def _array(dtype: str, shape: tuple[int, ...], data: bytearray) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _reduce_array(array: np.ndarray) -> Any:
    if array.nbytes <= SMALL_ARRAY and array.dtype.kind in _PLAIN_KINDS and array.dtype.fields is None:
        # A bytearray, not bytes: the rebuilt array is writable, as numpy's own pickle makes it.
        return _array, (array.dtype.str, array.shape, bytearray(np.ascontiguousarray(array).data))
    return array.__reduce_ex__(pickle.HIGHEST_PROTOCOL)


_DISPATCH = {**copyreg.dispatch_table, np.ndarray: _reduce_array}  # by exact type: subclasses keep theirs


def dumps(message: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(message)
    return buffer.getvalue()


def _frames(bodies: Sequence[bytes]) -> list[memoryview]:
    parts: list[memoryview] = []
    for body in bodies:
        parts += [memoryview(_HEAD.pack(len(body))), memoryview(body)]
    return parts


def send_frames(sock: socket.socket, bodies: Sequence[bytes]) -> None:
    """Write whole frames with ``sendmsg`` (no copy to prepend the headers) on a blocking socket, or one
    with a timeout (``TimeoutError`` then)."""
    parts = _frames(bodies)
    while parts:
        _consume(parts, sock.sendmsg(parts[:_MAX_PARTS]))


def _consume(parts: list[memoryview], sent: int) -> None:
    """Take the ``sent`` bytes off the front of ``parts``."""
    while parts and sent >= parts[0].nbytes:
        sent -= parts[0].nbytes
        parts.pop(0)
    if parts and sent:
        parts[0] = parts[0][sent:]


def send_all(sock: Any, data: bytes) -> None:
    """``sendall`` with one system call when the kernel takes the data at once (a small message). gevent's
    ``sendall`` first asks for the socket's send buffer size, one more system call every time. On a
    gevent socket ``send`` waits for room as ``sendall`` does, up to the socket's timeout."""
    sent: int = sock.send(data)
    if sent < len(data):
        view = memoryview(data)
        while sent < len(data):
            sent += sock.send(view[sent:])


def send_message(sock: socket.socket, message: Any) -> None:
    send_frames(sock, [dumps(message)])


def recv_message(sock: socket.socket) -> Any:
    """One message, on a blocking connection that carries one request (or reply) at a time: whatever
    one ``recv`` returns belongs to this message, so small messages take one system call."""
    first = sock.recv(FIRST_READ)
    if not first:
        raise EOFError("connection closed")
    while len(first) < _HEAD.size:
        more = sock.recv(FIRST_READ)
        if not more:
            raise EOFError("connection closed")
        first += more
    (length,) = _HEAD.unpack_from(first)
    have = len(first) - _HEAD.size
    if have >= length:
        return pickle.loads(memoryview(first)[_HEAD.size : _HEAD.size + length])
    body = bytearray(length)
    body[:have] = memoryview(first)[_HEAD.size :]
    view = memoryview(body)
    while have < length:
        n = sock.recv_into(view[have:], length - have)
        if n == 0:
            raise EOFError("connection closed")
        have += n
    return pickle.loads(body)


class FrameReader:
    """Frames out of a stream that may carry several at once, or part of one: ``feed`` what a read
    returned and get every message it completed."""

    def __init__(self) -> None:
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        if self._partial:
            self._partial += data
            buffer: bytes | bytearray = self._partial
        else:
            buffer = data  # the common case: whole frames, parsed where they lie
        messages = []
        view = memoryview(buffer)
        position, size = 0, len(buffer)
        try:
            while size - position >= _HEAD.size:
                (length,) = _HEAD.unpack_from(buffer, position)
                end = position + _HEAD.size + length
                if end > size:
                    break
                messages.append(pickle.loads(view[position + _HEAD.size : end]))
                position = end
        finally:
            view.release()
        if buffer is self._partial:
            del self._partial[:position]
        elif position < size:
            self._partial += memoryview(data)[position:]
        return messages


@contextlib.contextmanager
def coalesced() -> Iterator[None]:
    """Replies that ``EngineServer`` sends from this thread inside the block are written at its end, in
    one write per connection: a batch's replies to one worker travel together."""
    held: dict[_Connection, list[bytes]] = {}
    _held.replies = held
    try:
        yield
    finally:
        _held.replies = None
        for conn, bodies in held.items():
            conn.send(bodies)


_held = threading.local()
_MAX_PARTS = 512  # sendmsg takes at most IOV_MAX (1024) buffers; two per frame


def error_from_reply(class_name: str, code: str, message: str) -> ServingError:
    cls = getattr(errors, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ServingError)):
        cls = ServingError
    error: ServingError = cls(message)
    error.code = code
    return error


def _unwrap(reply: tuple[Any, ...]) -> tuple[int, Any]:
    """(generation, value) of an OK reply; an ERROR reply raises its ServingError."""
    if reply[0] == OK:
        return reply[1], reply[2]
    raise error_from_reply(*reply[2:])


class _Connection:
    """A worker's connection, as the model process sees it (non-blocking). ``send`` is called from any
    thread that finishes a request; the lock keeps frames whole and in order and a closed socket closed.

    ``send`` never waits for the worker to read: what the socket does not take at once waits in the
    outbox, and the server's epoll thread writes it as the worker reads (``flush`` on ``EPOLLOUT``).
    So a batch's replies to the other workers leave at once even when one worker's socket is full (a
    big reply it has not read yet, its event loop busy or stopped); before, the batch thread waited for
    that worker, up to ``READ_TIMEOUT_S``, and the next batch with it. A worker that takes nothing for
    ``READ_TIMEOUT_S`` while replies wait is dropped (``stalled``): its requests fail there, with 503.
    (``EPOLLOUT`` comes once the worker has read most of what its socket holds, as ``MuxTransport``
    does; one that reads a little and stops is written to by the stall check's last try, and dropped
    within about twice that time.)
    """

    def __init__(self, sock: socket.socket, epoll: select.epoll) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.lock = threading.Lock()
        self.closed = False
        self._epoll = epoll
        self._outbox: list[memoryview] = []
        self._progress_at = 0.0  # when the worker last took bytes while replies waited

    def send(self, bodies: Sequence[bytes]) -> None:
        with self.lock:
            if self.closed:
                return  # the worker hung up: nobody waits for this reply
            waiting = bool(self._outbox)
            self._outbox += _frames(bodies)
            if not waiting:  # else they go behind what waits, written on EPOLLOUT
                self._write()

    def flush(self) -> None:
        """On ``EPOLLOUT``: the worker has read; write what waits."""
        with self.lock:
            if not self.closed and self._outbox:
                self._write()

    def stalled(self, now: float) -> bool:
        """Whether replies have waited for the worker to read, with no progress, for ``READ_TIMEOUT_S``.
        Called without the lock: ``_progress_at`` is set only while replies wait (not during the first
        attempt to write them), so one read of it is the whole answer."""
        waiting_since = self._progress_at
        return waiting_since != 0.0 and now - waiting_since > READ_TIMEOUT_S

    def _write(self) -> None:
        # Callers hold the lock.
        parts = self._outbox
        was_waiting = self._progress_at != 0.0
        try:
            while parts:
                _consume(parts, self.sock.sendmsg(parts[:_MAX_PARTS]))
                if was_waiting:
                    self._progress_at = time.monotonic()
        except BlockingIOError:
            if not was_waiting:
                self._progress_at = time.monotonic()
                self._watch(select.EPOLLIN | select.EPOLLOUT)
            return
        except OSError:  # the worker is gone: its requests fail there
            self.close()
            return
        if was_waiting:
            self._progress_at = 0.0
            self._watch(select.EPOLLIN)

    def _watch(self, mask: int) -> None:
        # The epoll thread may be forgetting this connection (it unregisters before it takes the lock).
        with contextlib.suppress(OSError, ValueError):
            self._epoll.modify(self.sock.fileno(), mask)

    def close(self) -> None:
        # Callers hold the lock. A closed socket object no longer writes to its old descriptor number,
        # which a new connection may have by now.
        self.closed = True
        self._outbox = []
        self._progress_at = 0.0
        self.sock.close()


class EngineServer:
    """The model process's side: one thread waits on every connection at once (epoll), reads every
    request each read brings and starts it (``engine.submit``); the reply is written by whichever thread
    finishes the operation, the batch thread for a batched predict, after the whole batch (``coalesced``).
    So a batch of N requests costs the model process one wake-up to read them, one to run them and one
    write per worker, not N thread hand-offs each way.
    """

    def __init__(self, engine: Any, path: str) -> None:
        self.engine = engine
        self.path = path
        if os.path.exists(path):
            os.unlink(path)  # a previous model process's socket: it is gone
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)
        self._listener.listen(256)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        self._epoll = select.epoll()
        self._epoll.register(self._listener.fileno(), select.EPOLLIN)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._connections: dict[int, _Connection] = {}
        self._closed = threading.Event()
        self._stall_check_at = 0.0

    def serve_forever(self) -> None:
        listener = self._listener.fileno()
        while not self._closed.is_set():
            try:
                # Woken at least once a second to drop workers that stopped reading (_drop_stalled).
                events = self._epoll.poll(1.0)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old kernels
                continue
            for fd, mask in events:
                if fd == listener:
                    self._accept()
                elif fd == self._wake_r:
                    return
                else:
                    if mask & select.EPOLLOUT:
                        self._flush(fd)
                    if mask & ~select.EPOLLOUT:
                        self._read(fd)
            self._drop_stalled()

    def _flush(self, fd: int) -> None:
        conn = self._connections.get(fd)
        if conn is not None:
            conn.flush()

    def _drop_stalled(self) -> None:
        now = time.monotonic()
        if now < self._stall_check_at:
            return  # once a second is enough: the loop wakes for every batch under load
        self._stall_check_at = now + 1.0
        for fd, conn in list(self._connections.items()):
            if conn.stalled(now):
                conn.flush()  # it may have read since this loop last looked
                if conn.stalled(time.monotonic()):
                    log.warning(
                        "Dropped a worker's connection: it took none of its waiting replies for %ss",
                        READ_TIMEOUT_S,
                    )
                    self._forget(fd, conn)
            elif conn.closed:  # a write found it gone: its socket left the epoll set when it closed
                self._forget(fd, conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if self._closed.is_set():
                    return
                raise
            sock.setblocking(False)
            self._connections[sock.fileno()] = _Connection(sock, self._epoll)
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _read(self, fd: int) -> None:
        conn = self._connections.get(fd)
        if conn is None:
            return
        try:
            # Under the lock: recv takes the descriptor number and reads with the GIL released, so a
            # batch thread's close (its write failed) in between could have it read a socket another
            # thread opened meanwhile under the same number.
            with conn.lock:
                data = b"" if conn.closed else conn.sock.recv(FIRST_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            if not data:
                raise EOFError("connection closed")
            messages = conn.reader.feed(data)
            for request_id, op, args in messages:
                self.engine.submit(op, args, functools.partial(self._reply, conn, request_id))
        except Exception as exc:  # closed, or not our framing: that worker's connection is done
            if not isinstance(exc, EOFError):
                log.warning("Dropped a connection that sent an unreadable frame: %s", exc)
            self._forget(fd, conn)

    def _forget(self, fd: int, conn: _Connection) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)
        if self._connections.get(fd) is conn:
            del self._connections[fd]
        with conn.lock:
            conn.close()

    def _reply(self, conn: _Connection, request_id: int, result: Any) -> None:
        generation = self.engine.generation
        if isinstance(result, ServingError):
            message: tuple[Any, ...] = (ERROR, generation, type(result).__name__, result.code, result.message)
        else:
            message = (OK, generation, result)
        body = dumps((request_id, message))
        held: dict[_Connection, list[bytes]] | None = getattr(_held, "replies", None)
        if held is not None:
            held.setdefault(conn, []).append(body)
        else:
            conn.send([body])

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class SocketTransport:
    """A worker's side: one connection per thread, opened on first use and after a failure.

    No request is retried: one that reached the model process may be what crashed it."""

    def __init__(self, path: str, timeout_s: float | None) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._ids = itertools.count()

    def _socket(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise Unavailable(ENGINE_DOWN) from None
            self._local.sock = sock
        return sock

    def _drop(self) -> None:
        sock = getattr(self._local, "sock", None)
        self._local.sock = None
        if sock is not None:
            sock.close()

    def __call__(self, op: str, args: Sequence[Any]) -> tuple[int, Any]:
        sock = self._socket()
        request_id = next(self._ids)
        try:
            send_message(sock, (request_id, op, tuple(args)))
            answered, reply = recv_message(sock)
        except TimeoutError:
            self._drop()  # the late answer would be read by the next request on this connection
            raise DeadlineExceeded("Deadline exceeded") from None
        except (EOFError, OSError):
            self._drop()
            raise Unavailable(ENGINE_LOST) from None
        if answered != request_id:  # pragma: no cover - one request at a time: a bug if it happens
            self._drop()
            raise Unavailable(ENGINE_LOST)
        return _unwrap(reply)

    def close(self) -> None:
        self._drop()


class MuxTransport:
    """An HTTP worker's side under gevent: one connection to the model process for all its greenlets.

    A request's frame joins the worker's outbox and the greenlet waits for its id's reply; a writer
    greenlet sends the outbox in one write once the greenlets that ran in this turn of the loop have
    added theirs, and a reader greenlet hands each reply to its waiter. The connection opens on first
    use and again after a failure; a failure fails every request waiting on it (503: the model process
    is gone or restarting). A request past its deadline stops waiting (504) and its late reply is
    dropped by id, so the connection stays. No request is retried: one that reached the model process
    may be what crashed it.
    """

    def __init__(self, path: str, timeout_s: float | None) -> None:
        import gevent
        import gevent.event
        import gevent.lock
        import gevent.socket

        self._gevent = gevent
        self._event_class = gevent.event.Event
        self._result_class = gevent.event.AsyncResult
        self.path = path
        self.timeout_s = timeout_s
        self._ids = itertools.count()
        self._sock: Any = None
        self._wanted: Any = None  # set when the outbox has frames for this connection's writer
        self._waiting: dict[int, Any] = {}
        self._outbox: list[bytes] = []
        self._connecting = gevent.lock.Semaphore()

    def _connect(self) -> None:
        with self._connecting:
            if self._sock is not None:
                return
            sock = self._gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise Unavailable(ENGINE_DOWN) from None
            self._sock, self._wanted = sock, self._event_class()
            self._gevent.spawn(self._read, sock)
            self._gevent.spawn(self._write, sock, self._wanted)

    def _read(self, sock: Any) -> None:
        reader = FrameReader()
        try:
            while True:
                data = sock.recv(FIRST_READ)
                if not data:
                    break
                for request_id, reply in reader.feed(data):
                    waiter = self._waiting.pop(request_id, None)
                    if waiter is not None:  # None: it gave up at its deadline
                        waiter.set(reply)
        except Exception:  # the connection broke, or a frame made no sense: it is done
            log.debug("Lost the connection to the model process at %s", self.path, exc_info=True)
        self._lost(sock)

    def _write(self, sock: Any, wanted: Any) -> None:
        try:
            while True:
                wanted.wait()
                wanted.clear()
                if self._sock is not sock:
                    return
                frames, self._outbox = self._outbox, []
                send_all(sock, b"".join([part for body in frames for part in (_HEAD.pack(len(body)), body)]))
        except OSError:
            self._lost(sock)

    def _lost(self, sock: Any) -> None:
        if self._sock is not sock:
            return
        self._wanted.set()  # its writer wakes, sees the connection gone and ends
        self._sock = self._wanted = None
        sock.close()
        self._outbox = []
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.set((ERROR, -1, "Unavailable", "UNAVAILABLE", ENGINE_LOST))

    def __call__(self, op: str, args: Sequence[Any]) -> tuple[int, Any]:
        if self._sock is None:
            self._connect()
        request_id = next(self._ids)
        body = dumps((request_id, op, tuple(args)))
        waiter = self._waiting[request_id] = self._result_class()
        self._outbox.append(body)
        self._wanted.set()
        try:
            reply = waiter.get(timeout=self.timeout_s)
        except self._gevent.Timeout:
            self._waiting.pop(request_id, None)
            raise DeadlineExceeded("Deadline exceeded") from None
        return _unwrap(cast(tuple[Any, ...], reply))  # set only with a reply tuple

    def close(self) -> None:
        if self._sock is not None:
            self._lost(self._sock)


class EngineTransports:
    """A worker's side with one or several model processes (one per GPU): each worker thread (or
    greenlet) sticks to one of them, assigned round-robin, so the requests of every worker spread over
    the GPUs. ``multiplexed``: the worker runs gevent, and each model process gets one ``MuxTransport``;
    otherwise each thread its own blocking connection."""

    def __init__(self, paths: Sequence[str], timeout_s: float | None, multiplexed: bool = False) -> None:
        kind = MuxTransport if multiplexed else SocketTransport
        self.transports: list[MuxTransport | SocketTransport] = [kind(path, timeout_s) for path in paths]
        self._next = itertools.count()
        self._local = threading.local()

    def index(self) -> int:
        index: int | None = getattr(self._local, "index", None)
        if index is None:
            index = self._local.index = next(self._next) % len(self.transports)
        return index

    def __call__(self, op: str, args: Sequence[Any]) -> tuple[int, Any]:
        return self.transports[self.index()](op, args)

    def each(self, op: str, args: Sequence[Any]) -> list[Any]:
        """The operation on every model process (readiness: all of them must be up)."""
        return [transport(op, args)[1] for transport in self.transports]

    def first(self, op: str, args: Sequence[Any]) -> Any:
        """The operation on the first model process (what must be one for the pod: rate limits)."""
        return self.transports[0](op, args)[1]

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
