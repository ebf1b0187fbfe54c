"""One connection per HTTP worker carries many requests at once: ids match replies to requests, the
replies of a batch leave in one write, and a worker's greenlets share one connection (``MuxTransport``)
against a real ``EngineServer`` on a Unix socket."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import gevent
import numpy as np
import pytest

from modelservice_runtime import ipc
from modelservice_runtime.errors import DeadlineExceeded, InvalidArgument, Unavailable
from tests.unit.runtime.engine_server import running


def frames(*messages: Any) -> bytes:
    return b"".join(ipc._HEAD.pack(len(body)) + body for body in map(ipc.dumps, messages))


def test_frames_cut_anywhere_arrive_whole_and_in_order() -> None:
    messages = [(1, "predict", ({"x": np.arange(4, dtype=np.float32)},)), (2, "available", ()), (3, "ü", ())]
    stream = frames(*messages)
    for cut in range(1, len(stream)):
        reader = ipc.FrameReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert [m[:2] for m in got] == [m[:2] for m in messages], cut
        np.testing.assert_array_equal(got[0][2][0]["x"], messages[0][2][0]["x"])


def test_a_stream_fed_one_byte_at_a_time_gives_each_message_when_its_last_byte_comes() -> None:
    reader = ipc.FrameReader()
    stream = frames((1, "a", ()), (2, "b", ()))
    got = [reader.feed(stream[i : i + 1]) for i in range(len(stream))]
    assert sum(1 for g in got if g) == 2
    assert got[len(frames((1, "a", ()))) - 1] == [(1, "a", ())]
    assert got[-1] == [(2, "b", ())]


class SlowFirst:
    """An engine whose first request is answered last: replies leave in another order than requests."""

    generation = 7

    def __init__(self) -> None:
        self.held: list[Any] = []
        self.lock = threading.Lock()

    def submit(self, op: str, args: Any, reply: Any) -> None:
        if op == "fail":
            reply(InvalidArgument(f"bad {args[0]}"))
            return
        if op == "hang":
            return  # never answered: its caller's deadline passes
        with self.lock:
            self.held.append((args[0], reply))
            if len(self.held) < 3:
                return
            held, self.held = self.held, []
        for value, send in reversed(held):
            send(value * 10)


@pytest.fixture()
def connected(tmp_path: Path) -> Iterator[tuple[ipc.EngineServer, ipc.MuxTransport]]:
    """A model process (``SlowFirst``) and a worker's transport to it."""
    path = str(tmp_path / "engine.sock")
    with running(SlowFirst(), path) as server:
        transport = ipc.MuxTransport(path, timeout_s=10)
        yield server, transport
        transport.close()


def times_ten(transport: ipc.MuxTransport, values: Iterable[int]) -> list[Any]:
    """Each value sent by a greenlet of its own, all at once, as a worker's requests are: the replies'
    values in the order sent."""
    calls = [gevent.spawn(transport, "times_ten", (n,)) for n in values]
    gevent.joinall(calls, timeout=10, raise_error=True)
    return [call.value[1] if call.value is not None else None for call in calls]


def test_replies_find_their_requests_by_id_in_whatever_order_they_come(connected: Any) -> None:
    _, transport = connected
    calls = [gevent.spawn(transport, "times_ten", (n,)) for n in (1, 2, 3)]
    gevent.joinall(calls, timeout=10, raise_error=True)
    assert [call.value for call in calls] == [(7, 10), (7, 20), (7, 30)]  # (generation, value)


def test_a_workers_greenlets_share_one_connection_to_the_model_process(connected: Any) -> None:
    engine_server, transport = connected
    assert times_ten(transport, range(30)) == [n * 10 for n in range(30)]
    assert len(engine_server._connections) == 1


def test_an_error_reply_raises_its_serving_error_and_the_connection_goes_on(connected: Any) -> None:
    _, transport = connected
    with pytest.raises(InvalidArgument, match="bad input"):
        transport("fail", ("input",))
    assert times_ten(transport, (4, 5, 6)) == [40, 50, 60]


def test_a_request_past_its_deadline_stops_waiting_and_the_next_one_uses_the_same_connection(
    connected: Any,
) -> None:
    engine_server, transport = connected
    transport.timeout_s = 0.2
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        transport("hang", ())
    assert time.monotonic() - started < 5
    transport.timeout_s = 10
    assert times_ten(transport, (1, 2, 3)) == [10, 20, 30]
    assert len(engine_server._connections) == 1


def test_requests_waiting_when_the_model_process_goes_away_fail_with_503_and_the_next_reconnects(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "engine.sock")
    transport = ipc.MuxTransport(path, timeout_s=10)
    with running(SlowFirst(), path) as first:
        waiting = gevent.spawn(transport, "hang", ())
        gevent.sleep(0.2)  # it is sent and waits
    for conn in list(first._connections.values()):  # the process is gone: so are its connections
        with conn.lock:
            conn.close()
    with pytest.raises(Unavailable, match="stopped while serving"):
        waiting.get(timeout=10)
    with pytest.raises(Unavailable, match="not running"):
        transport("times_ten", (1,))  # nobody listens: it says so at once

    with running(SlowFirst(), path):
        assert times_ten(transport, (1, 2, 3)) == [10, 20, 30]
    transport.close()


class Batch:
    """An engine that answers requests ``size`` at a time, in one batch (``coalesced``), as the batch
    thread does: each with ``answer`` of its argument."""

    generation = 1

    def __init__(self, size: int, answer: Callable[[Any], Any]) -> None:
        self.size, self.answer = size, answer
        self.held: list[Any] = []

    def submit(self, op: str, args: Any, reply: Any) -> None:
        self.held.append((args[0], reply))
        if len(self.held) == self.size:
            with ipc.coalesced():
                for value, send_reply in self.held:
                    send_reply(self.answer(value))
            self.held = []


def test_replies_made_inside_coalesced_leave_in_one_write_per_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    send = ipc._Connection.send

    def counted(conn: ipc._Connection, bodies: Any) -> None:
        writes.append(len(bodies))
        send(conn, bodies)

    monkeypatch.setattr(ipc._Connection, "send", counted)
    path = str(tmp_path / "engine.sock")
    with running(Batch(3, lambda value: value * 10), path):
        transport = ipc.MuxTransport(path, timeout_s=10)
        assert times_ten(transport, (1, 2, 3)) == [10, 20, 30]
        assert writes == [3]
        transport.close()


BIG = 32 * 1024 * 1024  # far more than a Unix socket buffers


def pairs() -> Batch:
    """Two requests a batch, each answered with as many bytes as it asks for."""
    return Batch(2, lambda size: b"x" * size)


def worker_socket(path: str, request_id: int, size: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    sock.sendall(frames((request_id, "predict", (size,))))
    return sock


def read_to_end(sock: socket.socket) -> int:
    total = 0
    while chunk := sock.recv(1 << 20):
        total += len(chunk)
    return total


def test_a_worker_that_has_not_read_its_big_reply_holds_up_no_other_workers_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipc, "READ_TIMEOUT_S", 60.0)
    path = str(tmp_path / "engine.sock")
    engine = pairs()
    with running(engine, path):
        slow = worker_socket(path, 1, BIG)  # its event loop is busy: it reads nothing for now
        deadline = time.monotonic() + 5
        while not engine.held and time.monotonic() < deadline:
            time.sleep(0.01)
        quick = worker_socket(path, 2, 10)  # the batch: the big reply first, then this one
        assert ipc.recv_message(quick) == (2, (ipc.OK, 1, b"x" * 10))  # within recv's 10 s, not 60
        # The big reply waited for its worker, whole: it arrives once that worker reads.
        assert ipc.recv_message(slow) == (1, (ipc.OK, 1, b"x" * BIG))
        slow.close()
        quick.close()


def test_a_worker_that_reads_none_of_its_replies_for_the_read_timeout_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipc, "READ_TIMEOUT_S", 0.5)
    path = str(tmp_path / "engine.sock")
    with running(pairs(), path) as server:
        stalled = worker_socket(path, 1, BIG)
        other = worker_socket(path, 2, 10)
        assert ipc.recv_message(other) == (2, (ipc.OK, 1, b"x" * 10))
        deadline = time.monotonic() + 10
        while len(server._connections) == 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server._connections) == 1, "the stalled worker's connection was kept"
        assert read_to_end(stalled) < BIG  # what its socket held, then the end: its requests fail there
        other.sendall(frames((3, "predict", (5,)), (4, "predict", (6,))))
        assert ipc.recv_message(other) == (3, (ipc.OK, 1, b"x" * 5))  # the others go on
        stalled.close()
        other.close()


class HeldSend:
    """A socket whose ``sendmsg`` waits until the test lets it go: a write in progress, as another thread
    (the epoll thread's stall check) sees it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.entered, self.go = threading.Event(), threading.Event()

    def sendmsg(self, parts: Any) -> int:
        self.entered.set()
        assert self.go.wait(10)
        return self.sock.sendmsg(parts)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def test_a_reply_being_written_is_not_taken_for_one_the_worker_has_stopped_reading() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left.setblocking(False)
    epoll = select.epoll()
    epoll.register(left.fileno(), select.EPOLLIN)
    held = HeldSend(left)
    conn = ipc._Connection(cast(socket.socket, held), epoll)
    sender = threading.Thread(target=conn.send, args=([ipc.dumps((1, (ipc.OK, 1, "reply")))],))
    sender.start()
    try:
        assert held.entered.wait(10)
        assert not conn.stalled(time.monotonic()), "a write in progress counted as a stalled worker"
    finally:
        held.go.set()
        sender.join(10)
    right.settimeout(10)
    assert ipc.recv_message(right) == (1, (ipc.OK, 1, "reply"))
    assert not conn.stalled(time.monotonic() + 2 * ipc.READ_TIMEOUT_S)
    epoll.close()
    left.close()
    right.close()


def test_a_connection_that_a_failed_write_closed_is_forgotten(tmp_path: Path) -> None:
    # Its socket left the epoll set when it closed, so no end of stream will ever come to forget it by.
    path = str(tmp_path / "engine.sock")
    with running(pairs(), path) as server:
        client = worker_socket(path, 1, 10)
        deadline = time.monotonic() + 10
        while not server._connections and time.monotonic() < deadline:
            time.sleep(0.01)
        (conn,) = server._connections.values()
        with conn.lock:
            conn.close()  # as _write does when the worker is gone
        while server._connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server._connections == {}
        client.close()


class _ReusedDescriptor:
    """A connection's socket closed by a batch thread while the epoll thread was about to read it (the
    window between recv taking the descriptor number and reading): the number now belongs to another
    socket, so a read would take that socket's bytes."""

    def __init__(self) -> None:
        self.reads = 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        return b"someone else's bytes"

    def fileno(self) -> int:
        return 1_000_000

    def close(self) -> None:
        pass


def test_a_read_event_for_a_connection_a_failed_write_closed_reads_nothing_and_forgets_it(
    tmp_path: Path,
) -> None:
    server = ipc.EngineServer(None, str(tmp_path / "engine.sock"))
    sock = _ReusedDescriptor()
    conn = ipc._Connection(cast(socket.socket, sock), server._epoll)
    server._connections[sock.fileno()] = conn
    with conn.lock:
        conn.close()  # as _write does when the worker is gone, between epoll's event and the read
    server._read(sock.fileno())
    assert sock.reads == 0
    assert server._connections == {}
    server.close()


def test_a_worker_that_read_late_is_written_to_and_kept_not_dropped(tmp_path: Path) -> None:
    server = ipc.EngineServer(None, str(tmp_path / "engine.sock"))
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left.setblocking(False)
    server._epoll.register(left.fileno(), select.EPOLLIN)
    conn = ipc._Connection(left, server._epoll)
    server._connections[left.fileno()] = conn
    conn.send([b"x" * BIG])
    assert conn.stalled(time.monotonic() + 2 * ipc.READ_TIMEOUT_S)  # the rest waits for the worker
    right.settimeout(10)
    taken = len(right.recv(1 << 20))  # it reads now, after a long while
    conn._progress_at -= 2 * ipc.READ_TIMEOUT_S  # the last progress long ago, as the check sees it
    server._drop_stalled()
    assert server._connections == {left.fileno(): conn} and not conn.closed
    assert not conn.stalled(time.monotonic())  # the check's last try wrote: progress
    assert taken > 0
    server.close()
    left.close()
    right.close()
