"""A POST's body is read off the connection before the request waits for a request slot
(``gunicorn_conf.read_ahead``), on Gunicorn's own body readers: the app and Gunicorn then read it as
they would have read the connection."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.errors import InvalidChunkSize
from gunicorn.http.unreader import SocketUnreader

from modelservice_runtime.gunicorn_conf import READ_AHEAD_BYTES, ReadAheadBody, finish_body, read_ahead
from tests.unit.runtime.test_finish_body import NEXT_REQUEST, Source


class Client(Source):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


class Request(SimpleNamespace):
    must_close = False

    def force_close(self) -> None:  # Gunicorn's: the answer says "Connection: close"
        self.must_close = True


def post(data: bytes, length: int | None, expect_continue: bool = False) -> tuple[Request, Client]:
    client = Client(data)
    unreader = SocketUnreader(client)
    reader = (
        LengthReader(unreader, length) if length is not None else ChunkedReader(SimpleNamespace(), unreader)
    )
    req = Request(body=Body(reader), _expected_100_continue=expect_continue, unreader=unreader)
    return req, client


def test_the_whole_body_is_read_before_the_app_asks_and_handed_over_without_a_copy() -> None:
    payload = b'{"instances": [[1, 2, 3, 4]]}'
    req, client = post(payload + NEXT_REQUEST, len(payload))
    read_ahead(req, client, limit=1024)
    reads = len(client.reads)
    body = req.body.read(len(payload))  # the app's one read (limits.request_body)
    assert body == payload and body is req.body._ahead
    assert req.body.read(10) == b"" and len(client.reads) == reads  # nothing more from the connection
    finish_body(req)
    assert req.unreader.read() == NEXT_REQUEST


def test_reads_of_any_size_lines_and_iteration_see_the_same_bytes() -> None:
    payload = b"line one\nline two\nthree"
    for reads in ([3, 100], [None], [0, 5, 5, 5, 5, 5]):
        req, client = post(payload + NEXT_REQUEST, len(payload))
        read_ahead(req, client, limit=1024)
        assert b"".join(req.body.read(n) for n in reads) == payload[: sum(n or 99 for n in reads)]
    req, client = post(payload, len(payload))
    read_ahead(req, client, limit=1024)
    assert req.body.readline() == b"line one\n" and req.body.readline(4) == b"line"
    assert req.body.readlines() == [b" two\n", b"three"]


def test_a_chunked_body_over_the_limit_shows_the_app_one_byte_more_and_the_rest_stays_on_the_connection() -> (
    None
):
    chunk = b"z" * 1000
    framed = b"".join([b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 3) + b"0\r\n\r\n"
    req, client = post(framed + NEXT_REQUEST, None)
    read_ahead(req, client, limit=1500)
    assert len(req.body.read(1501)) == 1501  # the app sees more than the limit: 413
    finish_body(req)  # then the rest is read off, through the same body
    assert req.unreader.read() == NEXT_REQUEST


def test_a_body_declared_larger_than_the_limit_is_not_read() -> None:
    req, client = post(b"x" * 100, 100)
    original = req.body
    read_ahead(req, client, limit=50)
    assert req.body is original and client.reads == []


def test_a_client_waiting_for_100_continue_gets_it_before_the_read() -> None:
    req, client = post(b"{}", 2, expect_continue=True)
    read_ahead(req, client, limit=1024)
    assert client.sent == [b"HTTP/1.1 100 Continue\r\n\r\n"] and not req._expected_100_continue
    assert req.body.read() == b"{}"


def test_a_body_cut_short_by_the_client_reads_short_as_before() -> None:
    req, client = post(b"short", 100)  # the app compares with Content-Length: 400, client went away
    read_ahead(req, client, limit=1024)
    assert req.body.read(100) == b"short"


def test_a_bad_chunk_met_while_reading_ahead_is_raised_where_the_app_reads() -> None:
    req, client = post(b"zz\r\nhello\r\n0\r\n\r\n", None)
    read_ahead(req, client, limit=1024)  # nothing raised here, in the worker
    assert isinstance(req.body, ReadAheadBody)
    assert req.must_close  # the app's answer (400) says the connection closes
    with pytest.raises(InvalidChunkSize):
        req.body.read(1024)
    assert req.body.failed  # Gunicorn's body knows: it closes the connection


class Stalled(Client):
    """A client that sends ``data`` and then nothing: the next read times out, as a gevent socket with
    ``--client_timeout_seconds`` set raises."""

    def recv(self, size: int) -> bytes:
        data = super().recv(size)
        if not data:
            raise TimeoutError("timed out")
        return data


def test_a_body_that_stops_arriving_past_the_read_ahead_fails_where_the_app_reads_and_closes() -> None:
    payload = b"x" * (READ_AHEAD_BYTES + 100)
    req, _ = post(b"", len(payload) + 50)
    client = Stalled(payload)
    req.body = Body(LengthReader(SocketUnreader(client), len(payload) + 50))
    read_ahead(req, client, limit=len(payload) + 50)
    assert not req.must_close  # the first 256 KiB came
    assert req.body.read(READ_AHEAD_BYTES) == payload[:READ_AHEAD_BYTES]
    with pytest.raises(TimeoutError):  # the app answers 408 (limits.request_body)
        req.body.read(1000)
    assert req.must_close and req.body.failed


def test_a_body_larger_than_the_read_ahead_is_read_ahead_in_part_and_the_rest_in_the_slot() -> None:
    payload = bytes(range(256)) * (READ_AHEAD_BYTES // 256 * 3 + 7)
    req, client = post(payload + NEXT_REQUEST, len(payload))
    read_ahead(req, client, limit=len(payload))
    assert len(req.body._ahead) == READ_AHEAD_BYTES  # what a worker holds for a connection without a slot
    assert req.body.read(len(payload)) == payload
    finish_body(req)
    assert req.unreader.read() == NEXT_REQUEST
