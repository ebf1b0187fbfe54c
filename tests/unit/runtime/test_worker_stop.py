"""How a stopping gevent worker (``gunicorn_conf.RuntimeWorker``) ends its kept-alive connections: a request
in flight whose answer has not begun is told to close, and each idle connection is closed once it has been
idle for the linger time of the stop, not sooner."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent
import pytest
from gunicorn.config import Config

from modelservice_runtime.gunicorn_conf import FairSocket, RuntimeWorker


class Connection:
    """A connection's socket as ``_close_idle`` sees it: it records when it was shut down."""

    def __init__(self) -> None:
        self.shut_at: float | None = None

    def shutdown(self, how: int) -> None:
        assert how == socket.SHUT_RDWR
        self.shut_at = time.monotonic()


class Request:
    def __init__(self) -> None:
        self.must_close = False

    def force_close(self) -> None:
        self.must_close = True


@pytest.fixture
def worker() -> Iterator[RuntimeWorker]:
    worker = RuntimeWorker(0, 0, [], None, 30, Config(), None)
    worker.STOP_KEEPALIVE_LINGER_S = 0.3
    yield worker
    if worker._closer is not None:
        worker._closer.kill()
    worker.tmp.close()


def stop(worker: RuntimeWorker) -> float:
    stopped_at = time.monotonic()
    worker._stop(15, None)
    assert not worker.alive
    return stopped_at


def test_at_stop_a_request_whose_answer_has_not_begun_is_told_to_close(worker: RuntimeWorker) -> None:
    waiting, answering = FairSocket(object()), FairSocket(object())
    waiting_req, answering_req = Request(), Request()
    for sock, req in ((waiting, waiting_req), (answering, answering_req)):
        sock.hold_head()
        worker._busy[sock] = req
    answering.sendall(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n")  # held, but fixed
    stop(worker)
    assert waiting_req.must_close  # its head will say "Connection: close"
    assert not answering_req.must_close  # it said keep-alive: the connection stays for the next request


def test_each_idle_connection_is_closed_after_the_linger_time_of_the_stop_and_not_sooner(
    worker: RuntimeWorker,
) -> None:
    linger = worker.STOP_KEEPALIVE_LINGER_S
    idle_before, idle_after = Connection(), Connection()
    worker._idle[idle_before] = time.monotonic() - 10  # idle long before the stop
    stopped_at = stop(worker)
    gevent.sleep(linger / 2)
    worker._idle[idle_after] = time.monotonic()  # a response that ended after the stop
    gevent.sleep(linger * 0.6)
    assert idle_before.shut_at is not None and idle_before.shut_at - stopped_at >= linger
    assert idle_after.shut_at is None, "closed before it had been idle for the linger time"
    gevent.sleep(linger)
    assert idle_after.shut_at is not None and idle_after.shut_at - stopped_at >= linger * 1.5
    assert worker._idle == {}


def test_a_connection_that_gets_a_request_while_it_lingers_is_not_closed(worker: RuntimeWorker) -> None:
    connection = Connection()
    worker._idle[connection] = time.monotonic()
    stop(worker)
    gevent.sleep(worker.STOP_KEEPALIVE_LINGER_S / 2)
    del worker._idle[connection]  # its next request arrived: handle_request took it out
    gevent.sleep(worker.STOP_KEEPALIVE_LINGER_S)
    assert connection.shut_at is None
