"""API keys through real Gunicorn and the model process's gRPC server: refusals, rotation without a
restart, open probes, and the key's name in logs and metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench.loadgen import free_port
from tests.integration.runtime.server import Server, served

pytestmark = pytest.mark.integration
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("api-keys")
    (directory / "team-a").write_text("key-a\n")
    (directory / "ci").write_text("key-ci\n")
    return directory


@pytest.fixture(scope="module")
def server(
    model_root: Path, keys: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int]]:
    port = free_port()
    with served(
        tmp_path_factory.mktemp("auth"), "--model_name=linear", f"--model_base_path={model_root / 'linear'}",
        f"--api_keys_dir={keys}", f"--port={port}", "--workers=2",
    ) as started:  # fmt: skip
        yield started, port


def predict(server: Server, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(server.url + "/v1/models/linear:predict", json=ROW, headers=headers, timeout=30)


@pytest.mark.parametrize(
    "path", ["/v1/models/linear:predict", "/v1/models/linear", "/v1/models/linear/metadata",
             "/v2/models/linear", "/v2/models/linear/infer", "/v1/models/linear:classify"],
)  # fmt: skip
def test_every_model_api_refuses_a_request_without_a_key_or_with_a_wrong_one(
    server: tuple[Server, int], path: str
) -> None:
    url = server[0].url + path
    call = requests.post if path.endswith(("predict", "infer", "classify")) else requests.get
    missing = call(url, json=ROW, timeout=30)
    assert missing.status_code == 401, missing.text
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="modelservice"'
    assert missing.json() == {"error": "Missing credential: send Authorization: Bearer <API key>"}
    wrong = call(url, json=ROW, headers={"Authorization": "Bearer key-z"}, timeout=30)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="modelservice", error="invalid_token"'


def test_a_valid_key_is_served_and_named_in_logs_and_metrics(server: tuple[Server, int]) -> None:
    answer = predict(server[0], {"Authorization": "Bearer key-a"})
    assert answer.status_code == 200 and answer.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    assert predict(server[0], {"X-API-Key": "key-ci"}).status_code == 200
    metrics = requests.get(server[0].url + "/metrics", timeout=10)  # open: Prometheus needs no key
    assert metrics.status_code == 200
    assert 'modelservice_auth_requests_total{client="team-a",result="allowed"}' in metrics.text
    assert 'modelservice_auth_requests_total{client="-",result="unauthenticated"}' in metrics.text
    server[0].wait_for_log_entries(lambda entries: any(entry.get("client") == "team-a" for entry in entries))


def test_probes_stay_open(server: tuple[Server, int]) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert requests.get(server[0].url + path, timeout=10).status_code == 200


def test_keys_rotate_without_a_restart(server: tuple[Server, int], keys: Path) -> None:
    pids = server[0].processes()
    (keys / "team-b").write_text("key-b")
    (keys / "ci").unlink()
    deadline = time.monotonic() + 10
    while predict(server[0], {"Authorization": "Bearer key-b"}).status_code != 200:
        assert time.monotonic() < deadline, "the new key was not taken within 10 s"
        time.sleep(0.2)
    time.sleep(1.2)  # every worker has looked again by now
    assert all(predict(server[0], {"Authorization": "Bearer key-ci"}).status_code == 401 for _ in range(6))
    assert all(predict(server[0], {"Authorization": "Bearer key-a"}).status_code == 200 for _ in range(6))
    assert server[0].processes() == pids
    (keys / "ci").write_text("key-ci\n")


def test_grpc_needs_the_same_keys_and_its_health_stays_open(server: tuple[Server, int]) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0, 3.0, 4.0]], dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as missing:
            stub.Predict(request, timeout=30)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert missing.value.details() == "Missing credential: send Authorization: Bearer <API key>"
        with pytest.raises(grpc.RpcError) as wrong:
            stub.Predict(request, timeout=30, metadata=[("authorization", "Bearer nope")])
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = stub.Predict(request, timeout=30, metadata=[("authorization", "Bearer key-a")])
        assert tf.make_ndarray(answer.outputs["output_0"]).tolist() == [[2.0, 4.0, 6.0, 8.0]]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
