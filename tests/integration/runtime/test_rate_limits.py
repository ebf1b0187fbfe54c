"""Rate limits through real Gunicorn: the buckets live in the model process, so a limit holds for the pod
whatever worker a request reaches; REST answers 429 with Retry-After and RateLimit-* fields, gRPC
RESOURCE_EXHAUSTED."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench.loadgen import free_port
from tests.integration.runtime.server import Server, served

pytestmark = pytest.mark.integration
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
RATE, BURST = 5.0, 10


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    keys = tmp_path_factory.mktemp("keys")
    (keys / "team-a").write_text("key-a")
    (keys / "team-b").write_text("key-b")
    port = free_port()
    with served(
        tmp_path_factory.mktemp("limits"), "--model_name=linear", f"--model_base_path={model_root / 'linear'}",
        f"--api_keys_dir={keys}", f"--rate_limit_requests_per_second={RATE}", f"--rate_limit_burst={BURST}",
        f"--port={port}", "--workers=2",
    ) as started:  # fmt: skip
        yield started, port


def predict(server: Server, key: str) -> requests.Response:
    return requests.post(server.url + "/v1/models/linear:predict", json=ROW, timeout=30,
                         headers={"Authorization": f"Bearer {key}", "Connection": "close"})  # fmt: skip


def test_the_limit_holds_for_the_pod_across_workers_and_refusals_say_when_to_retry(
    server: tuple[Server, int],
) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:  # new connections: Gunicorn spreads them over both workers
        answers = list(pool.map(lambda _: predict(server[0], "key-a"), range(40)))
    elapsed = time.monotonic() - started
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) == {200, 429}, statuses
    # A bucket of 10 refilled at 5/s: at most 10 + 5 x elapsed served, whichever worker took them.
    assert BURST <= statuses[200] <= BURST + RATE * elapsed + 1, (statuses, elapsed)
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["RateLimit-Limit"] == "10" and refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1 and int(refused.headers["RateLimit-Reset"]) >= 1
    assert refused.json()["error"].startswith("Rate limit exceeded for client 'team-a' on model 'linear'")
    served = next(a for a in answers if a.status_code == 200)
    assert served.headers["RateLimit-Limit"] == "10" and "Retry-After" not in served.headers
    # Another client has its own bucket.
    assert predict(server[0], "key-b").status_code == 200
    time.sleep(1.0 / RATE + 0.1)
    assert predict(server[0], "key-a").status_code == 200  # refilled
    metrics = requests.get(server[0].url + "/metrics", timeout=10).text
    assert (
        f'modelservice_rate_limited_requests_total{{client="team-a",model="linear"}} {statuses[429]}.0'
        in metrics
    )


def test_grpc_is_limited_per_client_too(server: tuple[Server, int]) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0, 3.0, 4.0]], dtype=tf.float32))
    codes: Counter[grpc.StatusCode] = Counter()
    trailing: dict[str, str] = {}
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(BURST + 5):
            try:
                stub.Predict(request, timeout=30, metadata=[("authorization", "Bearer key-b")])
                codes[grpc.StatusCode.OK] += 1
            except grpc.RpcError as exc:
                codes[exc.code()] += 1
                trailing = dict(exc.trailing_metadata() or ())
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 4, codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert trailing["ratelimit-limit"] == "10" and int(trailing["retry-after"]) >= 1
