"""Several model processes in one pod (one per GPU, ``--model_processes``), exercised on CPU through real
Gunicorn: each process loads its own copy and serves gRPC on the shared port, requests on both APIs
reach every process, and what must be one for the pod (rate limits) is one whichever process a
connection lands on."""

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
RATE, BURST = 2.0, 6
CHANNELS = 12  # new connections: SO_REUSEPORT spreads them over both processes' gRPC listeners
# gRPC shares one connection among a process's channels to the same target unless told otherwise.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    port = free_port()
    with served(
        tmp_path_factory.mktemp("processes"), "--model_name=linear", f"--model_base_path={model_root / 'linear'}",
        "--model_processes=2", f"--port={port}", "--workers=2",
        f"--rate_limit_requests_per_second={RATE}", f"--rate_limit_burst={BURST}",
    ) as started:  # fmt: skip
        yield started, port


def grpc_request(value: float) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[value, 0.0, 0.0, 1.0]], dtype=tf.float32))
    return request


def test_each_model_process_loads_its_own_copy_and_both_serve(server: tuple[Server, int]) -> None:
    started, _ = server
    assert len(started.processes()["engine"]) == 2
    loads = [
        e
        for e in started.log_entries()
        if "Model process" in e.get("message", "") and "serving" in e["message"]
    ]
    assert len(loads) == 2, loads


def test_the_rate_limit_holds_for_the_pod_over_grpc_whichever_process_a_connection_reaches(
    server: tuple[Server, int],
) -> None:
    _, port = server
    time.sleep(BURST / RATE + 0.5)  # a full bucket, whatever the test before took

    def one_channel(index: int) -> list[grpc.StatusCode]:
        codes = []
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(2):
                try:
                    stub.Predict(grpc_request(float(index)), timeout=30)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        return codes

    begun = time.monotonic()
    with ThreadPoolExecutor(CHANNELS) as pool:
        codes = Counter(code for result in pool.map(one_channel, range(CHANNELS)) for code in result)
    elapsed = time.monotonic() - begun
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    # One bucket of 6 refilled at 2/s for the pod; a bucket per process would serve up to twice that.
    assert codes[grpc.StatusCode.OK] <= BURST + RATE * elapsed + 1, (codes, elapsed)


def test_rest_and_grpc_draw_from_the_same_bucket(server: tuple[Server, int]) -> None:
    started, port = server
    time.sleep(BURST / RATE + 0.5)
    begun = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        rest = list(pool.map(lambda _: requests.post(
            started.url + "/v1/models/linear:predict", json={"instances": [[1.0, 0.0, 0.0, 1.0]]},
            headers={"Connection": "close"}, timeout=30).status_code, range(BURST)))  # fmt: skip
    assert rest == [200] * BURST
    codes = []
    for _ in range(CHANNELS):  # connections of their own: some reach each process
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) as channel:
            try:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                    grpc_request(1.0), timeout=30
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
    elapsed = time.monotonic() - begun
    # REST emptied the pod's bucket: gRPC gets only what refilled meanwhile, on either process.
    assert codes.count(grpc.StatusCode.OK) <= RATE * elapsed + 1, (codes, elapsed)
