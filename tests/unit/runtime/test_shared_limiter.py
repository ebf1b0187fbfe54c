"""With several model processes (one per GPU), the first keeps the pod's rate limits and the others'
gRPC servers take their tokens from it over the IPC (``engine.SharedLimiter``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelservice_runtime.engine import FIRST_SOCKET_ENV, SharedLimiter, grpc_limiter
from modelservice_runtime.errors import Unavailable
from modelservice_runtime.ratelimit import RateLimiter
from tests.unit.runtime.engine_server import running


class FirstProcess:
    """What the first model process answers to "admit": a token from its buckets."""

    generation = 1

    def __init__(self) -> None:
        self.limiter = RateLimiter(0.01, 2)

    def submit(self, op: str, args: Any, reply: Any) -> None:
        assert op == "admit"
        reply(self.limiter.take(*args))


@pytest.fixture()
def first(tmp_path: Path) -> Iterator[tuple[FirstProcess, str]]:
    engine, path = FirstProcess(), str(tmp_path / "engine-0.sock")
    with running(engine, path):
        yield engine, path


def test_a_second_model_process_takes_tokens_from_the_first_ones_bucket(
    first: tuple[FirstProcess, str],
) -> None:
    engine, path = first
    shared = SharedLimiter(path)
    decisions = [shared.take("team-a", "iris") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].limit == 2 and decisions[-1].retry_after_s > 0
    assert not engine.limiter.take("team-a", "iris").allowed  # one bucket: the first process's
    assert shared.take("team-b", "iris").allowed  # per client, as there


def test_while_the_first_model_process_is_down_a_request_is_unavailable_and_says_why(tmp_path: Path) -> None:
    shared = SharedLimiter(str(tmp_path / "engine-0.sock"))
    with pytest.raises(
        Unavailable, match="The model process that keeps the pod's rate limits is not running"
    ):
        shared.take("team-a", "iris")


def test_only_processes_other_than_the_first_share_its_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    class Engine:
        limiter = RateLimiter(1.0, 1)

    engine: Any = Engine()
    monkeypatch.setenv(FIRST_SOCKET_ENV, "/run/engine-0.sock")
    assert grpc_limiter(engine, "/run/engine-0.sock") is engine.limiter
    assert isinstance(grpc_limiter(engine, "/run/engine-1.sock"), SharedLimiter)
    engine.limiter = None  # no rate limits configured
    assert grpc_limiter(engine, "/run/engine-1.sock") is None
    monkeypatch.delenv(FIRST_SOCKET_ENV)
    engine.limiter = Engine.limiter
    assert grpc_limiter(engine, "/run/engine-0.sock") is engine.limiter  # one model process
