"""The local IPC between the HTTP workers and the model process: a Unix socket, one frame per message.

**Framing.** A message is a pickle (protocol 5) whose large buffers travel out of band, so a numpy array
crosses the socket as its raw bytes, not copied into the pickle and out again::

    <u32 pickle length> <u16 buffer count> <u64 buffer length> ...   header
    <pickle> <buffer 0> <buffer 1> ...                              body

and is read back with one ``recv_into`` per part, the arrays pointing into the received bytes. Both ends
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
import logging
import os
import pickle
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

from . import errors
from .errors import DeadlineExceeded, ServingError, Unavailable

log = logging.getLogger(__name__)

_HEAD = struct.Struct("<IH")
_LEN = struct.Struct("<Q")
OK, ERROR = 0, 1

ENGINE_DOWN = "The model process is not running (it is starting or restarting); retry"
ENGINE_LOST = "The model process stopped while serving this request; retry"


def _send_parts(sock: socket.socket, parts: list[Any]) -> None:
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def send_message(sock: socket.socket, message: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    header = _HEAD.pack(len(body), len(raws)) + b"".join(_LEN.pack(r.nbytes) for r in raws)
    if not raws:
        sock.sendall(header + body)
    else:
        _send_parts(sock, [header, body, *raws])


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError("connection closed")
        got += n
    return data


def recv_message(sock: socket.socket) -> Any:
    body_length, count = _HEAD.unpack(_recv_exact(sock, _HEAD.size))
    lengths = [_LEN.unpack_from(_recv_exact(sock, _LEN.size * count), i * _LEN.size)[0] for i in range(count)]
    if not count:
        return pickle.loads(_recv_exact(sock, body_length))
    data = _recv_exact(sock, body_length + sum(lengths))
    view = memoryview(data)
    buffers, offset = [], body_length
    for length in lengths:
        buffers.append(view[offset : offset + length])
        offset += length
    return pickle.loads(view[:body_length], buffers=buffers)


def error_from_reply(class_name: str, code: str, message: str) -> ServingError:
    cls = getattr(errors, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ServingError)):
        cls = ServingError
    error: ServingError = cls(message)
    error.code = code
    return error


class EngineServer:
    """The model process's side: accept workers' connections, run each operation, reply."""

    def __init__(self, engine: Any, path: str) -> None:
        self.engine = engine
        self.path = path
        if os.path.exists(path):
            os.unlink(path)  # a previous model process's socket: it is gone
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)
        self._listener.listen(256)
        self._closed = threading.Event()

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                raise
            threading.Thread(target=self._serve, args=(conn,), name="engine-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    op, args = recv_message(conn)
                except (EOFError, OSError):
                    return
                reply: tuple[Any, ...]
                try:
                    reply = (OK, self.engine.generation, self.engine.call(op, args))
                except ServingError as exc:
                    reply = (ERROR, self.engine.generation, type(exc).__name__, exc.code, exc.message)
                except Exception as exc:  # a bug must answer 500, not leave the worker waiting
                    log.exception("Model process operation %s failed", op)
                    message = f"Internal error: {type(exc).__name__}: {exc}"
                    reply = (ERROR, self.engine.generation, "Internal", "INTERNAL", message)
                try:
                    send_message(conn, reply)
                except OSError:
                    return

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
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
            raise DeadlineExceeded("Deadline exceeded waiting for the model process") from None
        except (EOFError, OSError):
            self._drop()
            raise Unavailable(ENGINE_LOST) from None
        if reply[0] == OK:
            return reply[1], reply[2]
        raise error_from_reply(*reply[2:])

    def close(self) -> None:
        self._drop()
