"""The model process's framing: what a worker sends arrives as it was, through a real socket pair."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from modelservice_runtime import ipc


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        yield left, right


def round_trip(pair: tuple[socket.socket, socket.socket], message: Any) -> Any:
    left, right = pair
    received: list[Any] = []
    reader = threading.Thread(target=lambda: received.append(ipc.recv_message(right)))
    reader.start()  # a large message fills the socket buffer: someone must read while it is written
    ipc.send_message(left, message)
    reader.join(timeout=10)
    assert received, "the message never arrived"
    return received[0]


def assert_same_array(got: Any, sent: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == sent.dtype
    assert got.shape == sent.shape
    np.testing.assert_array_equal(got, sent)


ARRAYS = {
    "float32 row": np.arange(32, dtype=np.float32).reshape(1, 32),
    "float64 matrix": np.linspace(-1, 1, 12).reshape(3, 4),
    "big-endian int32": np.arange(6, dtype=">i4").reshape(2, 3),
    "int64 scalar": np.array(7, dtype=np.int64),
    "bool": np.array([[True, False, True]]),
    "uint8 image": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
    "complex64": np.array([1 + 2j, -3j], dtype=np.complex64),
    "float16": np.array([0.5, 1.5], dtype=np.float16),
    "empty batch": np.zeros((0, 32), dtype=np.float32),
    "column of a matrix (not contiguous)": np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1],
    "transposed (Fortran order)": np.arange(6, dtype=np.int16).reshape(2, 3).T,
    "larger than the small-array path": np.arange(64 * 4096, dtype=np.float32).reshape(64, 4096),
    "fixed-width unicode": np.array(["a", "bcd"]),
    "fixed-width bytes": np.array([b"x\x00y", b"z"]),
}


@pytest.mark.parametrize("name", ARRAYS)
def test_arrays_arrive_with_their_dtype_shape_and_values(pair: Any, name: str) -> None:
    sent = ARRAYS[name]
    op, args = round_trip(pair, ("predict", ("model", None, {"x": sent})))
    assert op == "predict"
    assert_same_array(args[2]["x"], sent)


def test_arrays_arrive_writable_as_numpy_pickles_them(pair: Any) -> None:
    got = round_trip(pair, {"small": np.ones((1, 10), np.float32), "large": np.ones((64, 4096), np.float32)})
    for array in got.values():
        array[0, 0] = 2.0  # raises on a read-only array
        assert array[0, 0] == 2.0


def test_object_arrays_of_strings_keep_every_byte(pair: Any) -> None:
    sent = np.empty((2, 1), dtype=object)
    sent[:, 0] = [b"tail NUL\x00\x00", "text"]
    got = round_trip(pair, sent)
    assert got.dtype == object
    assert got.shape == (2, 1)
    assert got[0, 0] == b"tail NUL\x00\x00"
    assert got[1, 0] == "text"


def test_structured_arrays_keep_their_fields(pair: Any) -> None:
    sent = np.array([(1, 2.5)], dtype=[("id", "<i4"), ("score", "<f8")])
    got = round_trip(pair, sent)
    assert got.dtype.names == ("id", "score")
    assert got["score"][0] == 2.5


def test_array_subclasses_keep_their_class(pair: Any) -> None:
    sent = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    got = round_trip(pair, sent)
    assert isinstance(got, np.ma.MaskedArray)
    assert got.mask.tolist() == [False, True]


def test_replies_with_errors_and_plain_values_round_trip(pair: Any) -> None:
    message = (ipc.ERROR, 3, "InvalidArgument", "INVALID_ARGUMENT", "bad input ü")
    assert round_trip(pair, message) == message
