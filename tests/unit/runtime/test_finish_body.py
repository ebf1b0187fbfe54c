"""What an app leaves of a request body (a 413's upload) is read in large reads before the next request
on the connection (``gunicorn_conf.finish_body``), on Gunicorn's own body readers."""

from __future__ import annotations

from types import SimpleNamespace

from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader

from modelservice_runtime.gunicorn_conf import finish_body

NEXT_REQUEST = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"


class Source:
    """A client's socket: ``data`` given out as the reads ask, up to ``burst`` bytes a read."""

    def __init__(self, data: bytes, burst: int = 4 * 1024 * 1024) -> None:
        self.data = memoryview(data)
        self.burst = burst
        self.reads: list[int] = []

    def recv(self, size: int) -> bytes:
        self.reads.append(size)
        taken = bytes(self.data[: min(size, self.burst)])
        self.data = self.data[len(taken) :]
        return taken


def request(body: Body) -> SimpleNamespace:
    return SimpleNamespace(body=body)


def test_an_unread_upload_is_read_to_its_end_and_no_further() -> None:
    size = 16 * 1024 * 1024 + 5
    source = Source(b"x" * size + NEXT_REQUEST)
    unreader = SocketUnreader(source)
    body = Body(LengthReader(unreader, size))
    assert body.read(100) == b"x" * 100  # the app read a little, then answered 413
    finish_body(request(body))
    assert body.read(1024) == b""  # Gunicorn's own drain finds nothing left
    assert unreader.read() == NEXT_REQUEST  # the next request is still there, whole
    assert len(source.reads) <= 2 * size // SocketUnreader.max_body_chunk + 4  # reads as large as Gunicorn's


def test_a_body_the_app_read_whole_costs_no_read() -> None:
    source = Source(b'{"instances": [1]}' + NEXT_REQUEST)
    unreader = SocketUnreader(source)
    body = Body(LengthReader(unreader, 18))
    assert body.read() == b'{"instances": [1]}'
    reads = len(source.reads)
    finish_body(request(body))
    assert len(source.reads) == reads
    assert unreader.read() == NEXT_REQUEST


def test_an_unread_chunked_upload_is_read_to_its_end() -> None:
    chunk = b"y" * (3 * 1024 * 1024)
    framed = b"".join([b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 4) + b"0\r\n\r\n"
    unreader = SocketUnreader(Source(framed + NEXT_REQUEST))
    body = Body(ChunkedReader(SimpleNamespace(), unreader))
    finish_body(request(body))
    assert body.read(1024) == b""
    assert unreader.read() == NEXT_REQUEST


def test_a_client_gone_mid_body_ends_the_drain_at_the_end_of_its_data() -> None:
    unreader = SocketUnreader(Source(b"x" * 1000))  # 1,000 of the 1,000,000 bytes announced, then EOF
    body = Body(LengthReader(unreader, 1_000_000))
    finish_body(request(body))
    assert unreader.read() == b""  # Gunicorn's parser then sees no more data and ends the connection


def test_a_connection_reset_mid_body_marks_it_failed_without_raising() -> None:
    class Reset(Source):
        def recv(self, size: int) -> bytes:
            if not self.data:
                raise ConnectionResetError("reset by peer")
            return super().recv(size)

    body = Body(LengthReader(SocketUnreader(Reset(b"x" * 1000)), 1_000_000))
    finish_body(request(body))
    assert body.failed  # Gunicorn then closes the connection instead of reading a next request
