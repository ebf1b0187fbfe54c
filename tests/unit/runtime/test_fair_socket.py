"""A worker's connection socket (``gunicorn_conf.FairSocket``): a response's head leaves with its body in
one write, nothing overtakes a held head, and ``ipc.send_all`` finishes what one ``send`` leaves."""

from __future__ import annotations

from typing import Any

from modelservice_runtime.gunicorn_conf import FairSocket
from modelservice_runtime.ipc import send_all


class Recorder:
    """A socket that records what is done to it; ``accepts`` bytes at most per ``send``."""

    def __init__(self, accepts: int = 1 << 30) -> None:
        self.accepts = accepts
        self.calls: list[tuple[str, Any]] = []

    def send(self, data: Any) -> int:
        taken = bytes(data[: self.accepts])
        self.calls.append(("send", taken))
        return len(taken)

    def sendall(self, data: Any) -> None:
        raise AssertionError("sendall asks the kernel for the buffer size first; send is enough")

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> None:
        self.calls.append(("sendfile", file))

    def close(self) -> None:
        self.calls.append(("close", None))


def test_a_response_head_leaves_with_its_body_in_one_send() -> None:
    raw = Recorder()
    sock = FairSocket(raw)
    sock.hold_head()
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    assert raw.calls == []
    sock.sendall(b"{}")
    sock.release()
    assert raw.calls == [("send", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")]


def test_a_head_that_no_body_follows_leaves_when_the_request_ends() -> None:
    raw = Recorder()
    sock = FairSocket(raw)
    sock.hold_head()
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n")  # the answer to a HEAD
    sock.release()
    assert raw.calls == [("send", b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n")]


def test_a_big_body_follows_its_head_instead_of_being_copied_behind_it() -> None:
    raw = Recorder()
    sock = FairSocket(raw)
    body = b"x" * (FairSocket.JOIN_BYTES + 1)
    sock.hold_head()
    sock.sendall(b"HEAD")
    sock.sendall(body)
    assert raw.calls == [("send", b"HEAD"), ("send", body)]


def test_only_the_first_write_after_hold_is_held_and_later_chunks_go_straight() -> None:
    raw = Recorder()
    sock = FairSocket(raw)
    sock.hold_head()
    for part in (b"HEAD", b"chunk-1", b"chunk-2", b"0\r\n\r\n"):
        sock.sendall(part)
    sock.release()
    sock.sendall(b"an error page after the request")
    assert [data for _, data in raw.calls] == [
        b"HEADchunk-1", b"chunk-2", b"0\r\n\r\n", b"an error page after the request"
    ]  # fmt: skip


def test_any_other_use_of_the_socket_sends_the_held_head_first() -> None:
    raw = Recorder()
    sock = FairSocket(raw)
    sock.hold_head()
    sock.sendall(b"HEAD")
    sock.sendfile("a file")  # Gunicorn's sendfile path: the head, then the file
    sock.close()
    assert raw.calls == [("send", b"HEAD"), ("sendfile", "a file"), ("close", None)]


def test_a_request_that_writes_nothing_leaves_nothing_held_for_the_next() -> None:
    raw = Recorder()
    sock = FairSocket(raw)
    sock.hold_head()
    sock.release()  # the app failed before its head: Gunicorn's error page goes out at once
    sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert raw.calls == [("send", b"HTTP/1.1 500 Internal Server Error\r\n\r\n")]


def test_send_all_sends_what_a_short_send_left_in_order() -> None:
    raw = Recorder(accepts=3)
    send_all(raw, b"0123456789")
    assert [data for _, data in raw.calls] == [b"012", b"345", b"678", b"9"]


def test_a_response_counts_as_begun_once_its_head_is_written_held_or_not() -> None:
    # A stopping worker tells a request in flight to close only while its answer has not begun.
    sock = FairSocket(Recorder())
    sock.hold_head()
    assert not sock.wrote
    sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert sock.wrote
    sock.release()
    sock.hold_head()
    assert not sock.wrote
