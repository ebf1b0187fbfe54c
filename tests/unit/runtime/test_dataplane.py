"""Deadlines and not-ready answers, with fake models: the request never waits past its deadline."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modelservice_runtime.app import create_app
from modelservice_runtime.batcher import BatchingParameters
from modelservice_runtime.config import ModelConfig, RuntimeConfig
from modelservice_runtime.dataplane import DataPlane, batchable
from modelservice_runtime.errors import DeadlineExceeded, NotFound, Unavailable
from modelservice_runtime.protocols.tensors import DT_FLOAT, TensorSpec
from modelservice_runtime.repository import ModelRepository


class SlowModel:
    def __init__(self, name: str, version: int, delay: float) -> None:
        self.name, self.version, self.delay = name, version, delay

    def input_specs(self, signature_name: str) -> dict[str, TensorSpec]:
        return {"x": TensorSpec("x", DT_FLOAT, (-1,))}

    def output_specs(self, signature_name: str) -> dict[str, TensorSpec]:
        return {"y": TensorSpec("y", DT_FLOAT, (-1,))}

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.delay)
        return {"y": inputs["x"]}


def repository_with(tmp_path: Path, delay: float) -> ModelRepository:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"pb")
    repo = ModelRepository([ModelConfig("m", str(tmp_path / "m"))], lambda n, v, p: SlowModel(n, v, delay))
    repo.poll_once()
    return repo


def test_a_call_past_the_deadline_is_answered_504_on_time(tmp_path: Path) -> None:
    plane = DataPlane(repository_with(tmp_path, delay=1.0), timeout_ms=50)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as raised:
        plane.predict(plane.model("m"), "", {"x": np.zeros(2, np.float32)})
    assert raised.value.status == 504
    assert time.monotonic() - started < 0.5
    plane.close()


def test_deadline_error_reaches_the_client_as_tf_serving_json(tmp_path: Path) -> None:
    config = RuntimeConfig(rest_api_timeout_in_ms=50)
    app = create_app(config, repository=repository_with(tmp_path, delay=1.0), start_repository=False)
    response = app.test_client().post("/v1/models/m:predict", json={"instances": [1.0]})
    assert response.status_code == 504
    assert response.get_data(as_text=True) == '{\n    "error": "Deadline exceeded"\n}'


def test_a_model_still_loading_is_503_so_clients_retry(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"pb")
    release = threading.Event()

    def blocking_loader(name: str, version: int, path: str) -> SlowModel:
        release.wait(5)
        return SlowModel(name, version, 0)

    repo = ModelRepository([ModelConfig("m", str(tmp_path / "m"))], blocking_loader)
    poller = threading.Thread(target=repo.poll_once)
    poller.start()
    try:

        def loading_started() -> bool:
            try:
                return bool(repo.statuses("m"))
            except NotFound:
                return False

        deadline = time.monotonic() + 5
        while not loading_started() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(Unavailable, match=r"Latest\(m\); version 1 is still loading"):
            repo.resolve("m")
    finally:
        release.set()
        poller.join()
    assert repo.resolve("m").version == 1


# ---------------------------------------------------------------------------------- draining, batching


def test_readiness_turns_503_while_draining(tmp_path: Path) -> None:
    app = create_app(RuntimeConfig(), repository=repository_with(tmp_path, delay=0), start_repository=False)
    assert app.test_client().get("/v2/health/ready").status_code == 200
    app.extensions["modelservice.draining"] = True
    response = app.test_client().get("/v2/health/ready")
    assert response.status_code == 503 and "shutting down" in response.get_json()["error"]


def test_batched_predictions_through_the_dataplane_keep_each_requests_rows(tmp_path: Path) -> None:
    calls: list[int] = []

    class Recording(SlowModel):
        def predict(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            calls.append(len(inputs["x"]))
            time.sleep(0.01)
            return {"y": inputs["x"] + 1}

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"pb")
    repo = ModelRepository([ModelConfig("m", str(tmp_path / "m"))], lambda n, v, p: Recording(n, v, 0))
    repo.poll_once()
    plane = DataPlane(
        repo, timeout_ms=5000, batching=BatchingParameters(max_batch_size=16, batch_timeout_micros=5000)
    )
    model = plane.model("m")

    def one(i: int) -> None:
        out = plane.predict(model, "", {"x": np.full(2, i, np.float32)})
        np.testing.assert_array_equal(out["y"], [i + 1, i + 1])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(48)))
    plane.close()
    assert sum(calls) == 96 and max(calls) > 2


def test_signatures_with_a_fixed_batch_dimension_are_not_batched() -> None:
    assert batchable({"x": TensorSpec("x", DT_FLOAT, (-1, 4))})
    assert batchable({"x": TensorSpec("x", DT_FLOAT, None)})
    assert not batchable({"x": TensorSpec("x", DT_FLOAT, (1, 4))})
    assert not batchable({"x": TensorSpec("x", DT_FLOAT, ())})
