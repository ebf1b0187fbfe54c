"""Several model processes in one pod (one per GPU, ``--model_processes``), exercised on CPU through real
Gunicorn: each process loads its own copy and serves gRPC on the shared port, and what must be one for
the pod (rate limits) is one whichever process a gRPC connection lands on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench.loadgen import free_port
from tests.integration.runtime.server import Server, served, tcp_sockets

pytestmark = pytest.mark.integration
# A bucket of 6 that refills once in 100 s: what a test is served is what the bucket held.
RATE, BURST = 0.01, 6
# gRPC shares one connection among a process's channels to the same target unless told otherwise.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    keys = tmp_path_factory.mktemp("keys")
    for client in ("grpc-only", "rest-then-grpc"):  # a bucket of its own for each test
        (keys / client).write_text(f"key-{client}")
    port = free_port()
    with served(
        tmp_path_factory.mktemp("processes"), "--model_name=linear", f"--model_base_path={model_root / 'linear'}",
        "--model_processes=2", f"--port={port}", "--workers=2", f"--api_keys_dir={keys}",
        f"--rate_limit_requests_per_second={RATE}", f"--rate_limit_burst={BURST}",
    ) as started:  # fmt: skip
        yield started, port


def grpc_predict(channel: grpc.Channel, client: str) -> grpc.StatusCode:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 0.0, 0.0, 1.0]], dtype=tf.float32))
    try:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30, metadata=[("authorization", f"Bearer key-{client}")]
        )
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def connections_by_process(server: Server, port: int) -> dict[int, int]:
    """Established TCP connections to the gRPC port, by the model process that accepted them."""
    return {pid: len(tcp_sockets(pid, port, "01")) for pid in server.processes()["engine"]}


def channels_on_both_processes(stack: ExitStack, server: Server, port: int) -> list[grpc.Channel]:
    """Connections of their own until each model process has accepted some (SO_REUSEPORT spreads them
    by their addresses, so a few more are opened if the first ones all landed on one process)."""
    channels: list[grpc.Channel] = []
    while len(channels) < 40:
        for _ in range(4):
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION))
            grpc.channel_ready_future(channel).result(timeout=30)
            channels.append(channel)
        if len(channels) >= 8 and all(connections_by_process(server, port).values()):
            return channels
    raise AssertionError(
        f"{len(channels)} connections never reached both processes: {connections_by_process(server, port)}"
    )


def test_each_model_process_loads_its_own_copy(server: tuple[Server, int]) -> None:
    started, _ = server
    engines = started.processes()["engine"]
    assert len(engines) == 2
    loaded_by = Counter(
        e["pid"]
        for e in started.log_entries()
        if e.get("message", "").startswith("Loaded model linear version ")
    )
    assert loaded_by == dict.fromkeys(engines, 1), (loaded_by, engines)


def test_the_rate_limit_holds_for_the_pod_over_grpc_whichever_process_a_connection_reaches(
    server: tuple[Server, int],
) -> None:
    started, port = server
    with ExitStack() as stack:
        channels = channels_on_both_processes(stack, started, port)
        codes = Counter(grpc_predict(channel, "grpc-only") for channel in channels for _ in range(2))
    # One bucket of 6 for the pod; a bucket per process would serve up to 12.
    assert codes == {grpc.StatusCode.OK: BURST, grpc.StatusCode.RESOURCE_EXHAUSTED: 2 * len(channels) - BURST}


def test_rest_and_grpc_draw_from_the_same_bucket(server: tuple[Server, int]) -> None:
    started, port = server
    rest = [
        requests.post(started.url + "/v1/models/linear:predict", json={"instances": [[1.0, 0.0, 0.0, 1.0]]},
                      headers={"Authorization": "Bearer key-rest-then-grpc", "Connection": "close"},
                      timeout=30).status_code
        for _ in range(BURST)
    ]  # fmt: skip
    assert rest == [200] * BURST
    with ExitStack() as stack:
        channels = channels_on_both_processes(stack, started, port)
        codes = Counter(grpc_predict(channel, "rest-then-grpc") for channel in channels)
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED: len(channels)}  # REST emptied the pod's bucket
