"""The local IPC between the HTTP workers and the model process: a Unix socket, one frame per message.

**Framing.** A message is ``<u64 length><pickle>`` (protocol 5). A numeric array up to 64 KiB travels as
(dtype, shape, raw bytes) and is rebuilt with ``np.frombuffer``: numpy's own reduce goes through Python
code that cost a one-row request about 9 of its 14 us to pickle and unpickle on the worker's side,
and as much again on the model process's side; larger arrays and object arrays keep numpy's reduce. A small
message is one ``send`` and one ``recv``; a large one is written with one ``sendmsg`` and read straight
into one buffer. Both ends
are this package, in one pod, as one user: the socket lives in a private directory (0700), so pickle's
trust model is the process boundary we already have.

**Connections.** Each worker thread keeps its own connection (``SocketTransport``), so a request is one
write and one read with no multiplexing; the model process serves each connection on its own thread
(``EngineServer``) and its batcher joins requests from all of them. Measured on the bench machine: a
round trip with a one-row request costs about 40 us of CPU on both sides together (``make bench``'s
``ipc`` line).
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
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import errors
from .errors import DeadlineExceeded, ServingError, Unavailable

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<Q")
FIRST_READ = 256 * 1024
LARGE = 256 * 1024
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


def send_message(sock: socket.socket, message: Any) -> None:
    body = dumps(message)
    if len(body) < LARGE:
        sock.sendall(_HEAD.pack(len(body)) + body)
        return
    # A large body (big tensors) is not copied to prepend the header: both go in one sendmsg.
    parts = [memoryview(_HEAD.pack(len(body))), memoryview(body)]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= parts[0].nbytes:
            sent -= parts[0].nbytes
            parts.pop(0)
        if parts and sent:
            parts[0] = parts[0][sent:]


def recv_message(sock: socket.socket) -> Any:
    """One message. A connection carries one request (or reply) at a time, so whatever one ``recv``
    returns belongs to this message: small messages take one system call."""
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


def error_from_reply(class_name: str, code: str, message: str) -> ServingError:
    cls = getattr(errors, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ServingError)):
        cls = ServingError
    error: ServingError = cls(message)
    error.code = code
    return error


class _Connection:
    """One worker thread's connection, as the model process sees it: at most one request in flight."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.busy = False  # a request was read and its reply is not sent yet
        self.closing = False  # the worker hung up meanwhile: close after the reply attempt


class EngineServer:
    """The model process's side: one thread waits on every connection at once (epoll), reads each
    request as it arrives and starts it (``engine.submit``); the reply is written by whichever thread
    finishes the operation, the batch thread for a batched predict. So a batch of N requests costs the
    model process one wake-up to read them and one to run them, not N thread hand-offs each way.
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

    def serve_forever(self) -> None:
        listener = self._listener.fileno()
        while not self._closed.is_set():
            try:
                events = self._epoll.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old kernels
                continue
            for fd, _ in events:
                if fd == listener:
                    self._accept()
                elif fd == self._wake_r:
                    return
                else:
                    self._read(fd)

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
            sock.setblocking(True)
            sock.settimeout(READ_TIMEOUT_S)  # a frame that started arriving finishes promptly
            self._connections[sock.fileno()] = _Connection(sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _read(self, fd: int) -> None:
        conn = self._connections.get(fd)
        if conn is None:
            return
        try:
            op, args = recv_message(conn.sock)
        except (EOFError, OSError, pickle.UnpicklingError):
            self._forget(fd, conn)
            return
        with conn.lock:
            conn.busy = True
        self.engine.submit(op, args, functools.partial(self._reply, conn))

    def _forget(self, fd: int, conn: _Connection) -> None:
        with contextlib.suppress(OSError, ValueError):  # a reply thread may have closed it already
            self._epoll.unregister(fd)
        if self._connections.get(fd) is conn:
            del self._connections[fd]
        with conn.lock:
            if conn.busy:
                conn.closing = True  # the thread still working on its request closes it
                return
        conn.sock.close()

    def _reply(self, conn: _Connection, result: Any) -> None:
        generation = self.engine.generation
        if isinstance(result, ServingError):
            message: tuple[Any, ...] = (ERROR, generation, type(result).__name__, result.code, result.message)
        else:
            message = (OK, generation, result)
        with conn.lock:
            conn.busy = False
            if not conn.closing:
                try:
                    send_message(conn.sock, message)
                    return
                except OSError:
                    pass
            conn.sock.close()

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
        try:
            send_message(sock, (op, tuple(args)))
            reply = recv_message(sock)
        except TimeoutError:
            self._drop()  # the late answer would be read by the next request on this connection
            raise DeadlineExceeded("Deadline exceeded") from None
        except (EOFError, OSError):
            self._drop()
            raise Unavailable(ENGINE_LOST) from None
        if reply[0] == OK:
            return reply[1], reply[2]
        raise error_from_reply(*reply[2:])

    def close(self) -> None:
        self._drop()


class EngineTransports:
    """A worker's side with one or several model processes (one per GPU): each worker thread sticks to
    one of them, assigned round-robin, so the threads of every worker spread over the GPUs."""

    def __init__(self, paths: Sequence[str], timeout_s: float | None) -> None:
        self.transports = [SocketTransport(path, timeout_s) for path in paths]
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
