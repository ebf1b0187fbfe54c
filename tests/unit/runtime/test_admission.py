"""Overload control by queueing delay (CoDel's rule), on an injected clock, and its 503 in front of Flask."""

from __future__ import annotations

import time
from pathlib import Path

from modelservice_runtime import admission
from modelservice_runtime.admission import QueueDelayShedder, target_for
from modelservice_runtime.app import SheddingMiddleware, create_app
from modelservice_runtime.config import RuntimeConfig

from .test_dataplane import repository_with


def drive(shedder: QueueDelayShedder, sojourns: list[float], step: float, start: float = 0.0) -> list[bool]:
    return [shedder.admit(s, start + i * step) for i, s in enumerate(sojourns)]


def test_a_queue_that_drains_within_the_interval_is_never_shed() -> None:
    shedder = QueueDelayShedder(target_s=0.5, interval_s=1.0)
    # Bursts well above the target, but each interval also sees a request that hardly waited.
    sojourns = [2.0, 3.0, 0.01, 2.5] * 50
    assert all(drive(shedder, sojourns, step=0.1))
    assert not shedder.overloaded


def test_many_clients_queueing_below_the_target_are_never_shed() -> None:
    # 128 closed-loop clients against ~2,000 req/s queue for ~50 ms each: no refusal at a 100 ms target.
    shedder = QueueDelayShedder(target_s=0.1, interval_s=0.2)
    assert all(drive(shedder, [0.05] * 10_000, step=0.0004))


def test_a_standing_queue_above_the_target_sheds_only_the_requests_that_waited_too_long() -> None:
    shedder = QueueDelayShedder(target_s=0.5, interval_s=1.0)
    first = drive(shedder, [0.8] * 10, step=0.1)  # the first interval only measures
    assert all(first)
    assert shedder.admit(0.9, 1.05) is False and shedder.overloaded  # the next interval sheds
    assert shedder.admit(0.2, 1.1) is True  # a request under the target still goes through


def test_shedding_stops_once_an_interval_sees_the_queue_back_under_target() -> None:
    shedder = QueueDelayShedder(target_s=0.5, interval_s=1.0)
    drive(shedder, [0.8] * 11, step=0.1)
    assert shedder.overloaded
    drive(shedder, [0.8, 0.1, 0.8], step=0.3, start=1.1)  # min 0.1 over (1.1, 2.1)
    assert shedder.admit(0.9, 2.2) is True and not shedder.overloaded


def test_the_target_derives_from_the_deadline_unless_set() -> None:
    assert target_for(30_000, 0) == 0.1  # capped at 100 ms
    assert target_for(500, 0) == 0.05  # a tenth of the deadline
    assert target_for(0, 0) == 0.1  # no deadline
    assert target_for(30_000, 80) == 0.08  # --max_queue_delay_ms


def test_a_shed_request_gets_503_json_with_retry_after_and_probes_are_never_shed(tmp_path: Path) -> None:
    app = create_app(RuntimeConfig(), repository=repository_with(tmp_path, delay=0), start_repository=False)
    shedder = QueueDelayShedder(target_s=0.05, interval_s=0.01)
    app.wsgi_app = SheddingMiddleware(app.wsgi_app.app, shedder)  # type: ignore[attr-defined,method-assign]
    client = app.test_client()
    try:
        statuses = []
        for _ in range(3):
            admission.set_queued_at(time.monotonic() - 0.2)  # as the Gunicorn worker stamps it
            statuses.append(client.post("/v1/models/m:predict", json={"instances": [1.0]}))
            time.sleep(0.02)
        assert statuses[0].status_code == 200
        refused = statuses[-1]
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "Server overloaded" in refused.get_json()["error"]
        assert client.get("/v2/health/ready").status_code == 200  # GETs are never shed
        admission.set_queued_at(None)  # not served by Gunicorn: nothing to measure, never shed
        assert client.post("/v1/models/m:predict", json={"instances": [1.0]}).status_code == 200
    finally:
        admission.set_queued_at(None)
