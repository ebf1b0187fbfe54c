"""The access log writes one JSON line per request straight to the pod's log handler, the same line that
logging would write, and goes through logging whenever anything else is on the way."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import threading
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import pytest

from modelservice_runtime import logs
from modelservice_runtime.config import config_from_args
from modelservice_runtime.gunicorn_conf import logging_dict
from modelservice_runtime.logs import AccessLog, JsonFormatter, RequestState, configure_logging, request_state

FIELDS = {"method": "POST", "path": "/v1/models/m:predict", "status": 200, "duration_ms": 1.5, "model": "m",
          "client": None}  # fmt: skip


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The runtime's logging, configured as in a pod, into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logs._installed
    configure_logging("json", "info")
    buffer = io.StringIO()
    logs._installed.setStream(buffer)
    token = request_state.set(RequestState("req-1", 0.0))
    try:
        yield buffer
    finally:
        request_state.reset(token)
        root.handlers[:], level, logs._installed = saved
        root.setLevel(level)


def pods_handler_only() -> None:
    """Take pytest's log capture off the root logger for this test: only the pod's handler is left."""
    logging.getLogger().handlers[:] = [logs._installed]


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_the_direct_line_is_the_line_logging_writes_but_for_the_time(stream: io.StringIO) -> None:
    log = AccessLog("test.access.same")
    pods_handler_only()
    assert log._direct() is logs._installed
    log.served(FIELDS)
    log.logger.info("Served %s %s with %d", "POST", "/v1/models/m:predict", 200, extra=FIELDS)
    direct, through_logging = lines(stream)
    assert direct["time"] != "" and str(direct["time"]).endswith("Z")
    assert {**direct, "time": None} == {**through_logging, "time": None}
    assert direct["request_id"] == "req-1" and direct["status"] == 200 and "client" not in direct


def test_the_workers_logging_as_gunicorn_configures_it_takes_the_direct_path(stream: io.StringIO) -> None:
    # Gunicorn applies gunicorn_conf.logging_dict in the workers: its root handler is a new StreamHandler,
    # not the one configure_logging installed, and the direct path must still be taken there.
    error_log = logging.getLogger("gunicorn.error")
    saved = error_log.handlers[:], error_log.propagate, error_log.level
    try:
        logging.config.dictConfig(logging_dict(config_from_args(["--model_name=m", "--model_base_path=/m"])))
        [handler] = logging.getLogger().handlers
        assert handler is not logs._installed
        assert AccessLog("test.access.gunicorn")._direct() is handler
        handler.filters.append(lambda record: True)
        assert AccessLog("test.access.gunicorn")._direct() is None
    finally:
        error_log.handlers[:], error_log.propagate, level = saved
        error_log.setLevel(level)


def test_a_handler_on_the_way_gets_a_record_and_the_pods_log_still_gets_the_line(stream: io.StringIO) -> None:
    log = AccessLog("test.access.handler")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    pods_handler_only()
    log.logger.addHandler(Collect())
    assert log._direct() is None
    log.served({**FIELDS, "method": "GET", "path": "/v2/health/ready", "status": 503, "client": "team-a"})
    assert [r.getMessage() for r in records] == ["Served GET /v2/health/ready with 503"]
    assert records[0].__dict__["client"] == "team-a"
    [line] = lines(stream)
    assert line["message"] == "Served GET /v2/health/ready with 503" and line["client"] == "team-a"


def test_a_text_log_gets_text_lines() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logs._installed
    try:
        configure_logging("text", "info")
        buffer = io.StringIO()
        logs._installed.setStream(buffer)
        pods_handler_only()
        AccessLog("test.access.text").served(FIELDS)
    finally:
        root.handlers[:], level, logs._installed = saved
        root.setLevel(level)
    assert " INFO test.access.text Served POST /v1/models/m:predict with 200" in buffer.getvalue()


def test_below_info_nothing_is_written(stream: io.StringIO) -> None:
    log = AccessLog("test.access.quiet")
    log.logger.setLevel(logging.WARNING)
    assert not log.enabled()
    log.logger.setLevel(logging.NOTSET)
    assert log.enabled()


def test_a_stream_that_fails_does_not_fail_the_request(
    stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    stream.close()
    pods_handler_only()
    AccessLog("test.access.closed").served(FIELDS)
    assert "Served POST /v1/models/m:predict with 200" in capsys.readouterr().err


def test_json_lines_carry_the_millisecond_of_their_time() -> None:
    formatter = JsonFormatter()
    entry = formatter.entry(1_700_000_000.25, "info", "x", 1, "m")
    assert entry["time"] == "2023-11-14T22:13:20.250Z"


# ------------------------------------------------------------------- a gevent worker's turns of the loop


class Writes(io.StringIO):
    """A stream that records each write it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


class Turns:
    """A loop whose end-of-turn callbacks run when the test says the turn ends."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def run_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def end_turn(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


@pytest.fixture
def held(stream: io.StringIO) -> Iterator[tuple[Writes, Turns]]:
    """The pod's handler writing through a ``LoopTurnStream`` into ``Writes``, on a loop of ``Turns``
    (each test takes pytest's capture off the root first, as the direct path needs the handler alone)."""
    writes, turns = Writes(), Turns()
    logs._installed.setStream(writes)
    logs.hold_access_lines_for_the_turn(turns, threading.RLock(), threading.get_ident)
    assert type(logs._installed.stream) is logs.LoopTurnStream
    yield writes, turns


def test_the_lines_of_one_turn_leave_in_one_write_at_its_end(held: tuple[Writes, Turns]) -> None:
    writes, turns = held
    pods_handler_only()
    log = AccessLog("test.access.turn")
    for i in range(3):
        log.served({**FIELDS, "path": f"/v1/models/m{i}:predict"})
    assert writes.calls == [] and len(turns.callbacks) == 1  # one flush for the turn, not one a line
    turns.end_turn()
    [write] = writes.calls
    assert [json.loads(line)["path"] for line in write.splitlines()] == [
        f"/v1/models/m{i}:predict" for i in range(3)
    ]
    log.served(FIELDS)  # the next turn holds its own
    turns.end_turn()
    assert len(writes.calls) == 2


def test_any_other_record_leaves_at_once_behind_the_lines_held_before_it(held: tuple[Writes, Turns]) -> None:
    writes, turns = held
    pods_handler_only()
    AccessLog("test.access.order").served(FIELDS)
    logging.getLogger("test.access.order").warning("Model m failed to load")
    assert [json.loads(line)["message"] for line in writes.getvalue().splitlines()] == [
        "Served POST /v1/models/m:predict with 200", "Model m failed to load"
    ]  # fmt: skip
    turns.end_turn()  # nothing is left to write
    assert len(writes.getvalue().splitlines()) == 2


def test_a_line_from_another_thread_leaves_at_once(held: tuple[Writes, Turns]) -> None:
    writes, turns = held
    pods_handler_only()
    thread = threading.Thread(target=AccessLog("test.access.thread").served, args=(FIELDS,))
    thread.start()
    thread.join(timeout=10)
    assert len(writes.getvalue().splitlines()) == 1 and turns.callbacks == []


def test_a_flush_at_exit_writes_what_the_last_turn_held(held: tuple[Writes, Turns]) -> None:
    writes, _ = held
    pods_handler_only()
    AccessLog("test.access.exit").served(FIELDS)
    logs._installed.flush()  # what logging.shutdown does at exit
    assert len(writes.getvalue().splitlines()) == 1


def test_a_stream_that_fails_at_the_end_of_a_turn_stops_nothing(held: tuple[Writes, Turns]) -> None:
    writes, turns = held
    pods_handler_only()
    AccessLog("test.access.broken").served(FIELDS)
    writes.close()
    turns.end_turn()  # the write fails; the loop goes on, and the lines are not tried again
    assert logs._installed.stream._held == []


def test_a_record_logged_while_held_lines_are_being_written_does_not_hang(held: tuple[Writes, Turns]) -> None:
    # A signal handler (the worker's SIGTERM) runs in the loop's thread between two bytecodes, possibly
    # while the stream writes what it held, and it logs.
    writes, turns = held
    pods_handler_only()
    AccessLog("test.access.signal").served(FIELDS)

    def interrupted(text: str) -> int:
        del writes.write  # the signal comes once
        logging.getLogger("test.access.signal").warning("Draining worker")
        return writes.write(text)

    writes.write = interrupted  # type: ignore[method-assign]
    ending = threading.Thread(target=turns.end_turn, daemon=True)
    ending.start()
    ending.join(timeout=10)
    assert not ending.is_alive()
    assert sorted(json.loads(line)["message"] for line in writes.getvalue().splitlines()) == [
        "Draining worker", "Served POST /v1/models/m:predict with 200"
    ]  # fmt: skip


def test_a_lock_that_cannot_be_taken_again_is_refused() -> None:
    with pytest.raises(ValueError, match="re-entrant"):
        logs.LoopTurnStream(io.StringIO(), Turns(), threading.Lock(), threading.get_ident)


def test_requests_woken_in_one_turn_of_a_real_gevent_loop_share_one_write(held: tuple[Writes, Turns]) -> None:
    writes, _ = held
    pods_handler_only()
    logs._installed.setStream(writes)  # the real loop this time
    logs.hold_access_lines_for_the_turn(gevent.get_hub().loop, threading.RLock(), threading.get_ident)
    replies = [gevent.event.AsyncResult() for _ in range(4)]
    written_while_serving: list[int] = []

    def request(i: int) -> None:
        replies[i].get(timeout=10)  # the model process's answer
        AccessLog("test.access.gevent").served({**FIELDS, "path": f"/v1/models/m{i}:predict"})
        written_while_serving.append(len(writes.calls))

    greenlets = [gevent.spawn(request, i) for i in range(4)]
    gevent.sleep(0)  # all four wait
    for reply in replies:  # one read from the model process brings all four answers
        reply.set({"outputs": []})
    gevent.joinall(greenlets, timeout=10)
    assert written_while_serving == [0, 0, 0, 0]
    [write] = writes.calls
    assert len(write.splitlines()) == 4
