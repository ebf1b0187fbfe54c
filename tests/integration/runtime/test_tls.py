"""TLS through real Gunicorn and the model process's gRPC server, with a test CA: both ports serve the
certificate, plain HTTP is refused, and a rotated certificate is served without a restart."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench.loadgen import free_port
from tests.integration.runtime.server import Server, served, start_server, stop
from tests.tlsutil import CertificateAuthority

pytestmark = pytest.mark.integration
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


@pytest.fixture(scope="module")
def tls_server(
    model_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, int, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority(directory, "first CA")
    ca.issue(directory / "tls.crt", directory / "tls.key")
    port = free_port()
    server = start_server(
        directory, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--workers=2",
        f"--tls_cert_file={directory / 'tls.crt'}", f"--tls_key_file={directory / 'tls.key'}", f"--port={port}",
        "--client_timeout_seconds=2",
    )  # fmt: skip
    https = server.url.replace("http://", "https://")
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(https + "/v2/health/ready", verify=str(ca.path), timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert server.process.poll() is None and time.monotonic() < deadline, server.log()
        time.sleep(0.25)
    try:
        yield server, port, directory
    finally:
        stop(server)


def https_url(server: Server) -> str:
    return server.url.replace("http://", "https://")


def grpc_predict(port: int, ca: Path) -> list[list[float]]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0, 3.0, 4.0]], dtype=tf.float32))
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    values: list[list[float]] = tf.make_ndarray(answer.outputs["output_0"]).tolist()
    return values


def test_rest_and_grpc_serve_the_certificate_and_plain_http_is_refused(
    tls_server: tuple[Server, int, Path],
) -> None:
    server, port, directory = tls_server
    ca = directory / "first-CA.crt"
    answer = requests.post(
        https_url(server) + "/v1/models/linear:predict", json=ROW, verify=str(ca), timeout=30
    )
    assert answer.status_code == 200 and answer.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    assert grpc_predict(port, ca) == [[2.0, 4.0, 6.0, 8.0]]
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + "/v1/models/linear:predict", json=ROW, timeout=10)
    with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the CA
        requests.get(https_url(server) + "/v2/health/live", timeout=10)


def test_a_client_that_connects_and_never_starts_tls_is_closed_after_the_client_timeout(
    tls_server: tuple[Server, int, Path],
) -> None:
    # Before, the handshake waited with no end: each such connection held one of a worker's
    # connections (1,000 each) for good.
    server, _, directory = tls_server
    rest_port = int(server.url.rsplit(":", 1)[1])
    silent = [socket.create_connection(("127.0.0.1", rest_port), timeout=15) for _ in range(4)]
    try:
        started = time.monotonic()
        answer = requests.post(
            https_url(server) + "/v1/models/linear:predict", json=ROW, verify=str(directory / "first-CA.crt"),
            timeout=30,
        )  # fmt: skip
        assert answer.status_code == 200
        for sock in silent:
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""  # closed by the server
        assert 1.5 < time.monotonic() - started < 10
    finally:
        for sock in silent:
            sock.close()
    assert "Traceback" not in server.log()


def _peer_issuer(port: int, ca: Path) -> str:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
        issuer = dict(item[0] for item in tls.getpeercert()["issuer"])  # type: ignore[index]
    return str(issuer["commonName"])


def test_a_rotated_certificate_is_served_without_a_restart(tls_server: tuple[Server, int, Path]) -> None:
    server, port, directory = tls_server
    pids = server.processes()
    second = CertificateAuthority(directory, "second CA")
    second.issue(directory / "tls.crt", directory / "tls.key")  # what cert-manager's renewal does
    rest_port = int(server.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 15
    while True:
        try:
            if _peer_issuer(rest_port, second.path) == "second CA":
                break
        except (ssl.SSLError, OSError):
            pass
        assert time.monotonic() < deadline, "REST still serves the old certificate"
        time.sleep(0.3)
    # Every worker looks again within a second of its next connection (one that caught the key and the
    # certificate half-written, as this test writes them, tries again a second later).
    deadline = time.monotonic() + 15
    while True:
        try:
            answer = requests.post(https_url(server) + "/v1/models/linear:predict", json=ROW,
                                   verify=str(second.path), timeout=30, headers={"Connection": "close"})  # fmt: skip
            if all(
                requests.get(https_url(server) + "/v2/health/live", verify=str(second.path), timeout=10,
                             headers={"Connection": "close"}).status_code == 200 for _ in range(6)
            ):  # fmt: skip
                break
        except requests.exceptions.SSLError:
            pass
        assert time.monotonic() < deadline, "a worker still serves the old certificate"
        time.sleep(0.3)
    assert answer.status_code == 200
    deadline = time.monotonic() + 15
    while True:
        try:
            assert grpc_predict(port, second.path) == [[2.0, 4.0, 6.0, 8.0]]
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "gRPC still serves the old certificate"
            time.sleep(0.3)
    assert server.processes() == pids


def test_tf_servings_ssl_config_file_requires_client_certificates_of_its_ca_on_grpc(
    model_root: Path, tmp_path: Path
) -> None:
    """TF Serving's ``--ssl_config_file`` with ``client_verify``: mutual TLS on gRPC, REST left as it is."""
    ca = CertificateAuthority(tmp_path, "server CA")
    ca.issue(tmp_path / "tls.crt", tmp_path / "tls.key")
    clients = CertificateAuthority(tmp_path, "client CA")
    clients.issue(tmp_path / "client.crt", tmp_path / "client.key", common_name="team-a")
    stranger = CertificateAuthority(tmp_path, "stranger CA")
    stranger.issue(tmp_path / "stranger.crt", tmp_path / "stranger.key", common_name="mallory")

    def pem(path: Path) -> str:
        return '"' + path.read_text().replace("\n", "\\n") + '"'

    config = tmp_path / "ssl.config"
    config.write_text(f"server_key: {pem(tmp_path / 'tls.key')}\nserver_cert: {pem(tmp_path / 'tls.crt')}\n"
                      f"custom_ca: {pem(clients.path)}\nclient_verify: true\n")  # fmt: skip
    port = free_port()
    # Ready as seen over REST, which stays plain HTTP, as TF Serving leaves it.
    with served(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--workers=1",
        f"--ssl_config_file={config}", f"--port={port}",
    ):  # fmt: skip

        def predict(certificate: str | None) -> list[list[float]]:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "linear"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0, 3.0, 4.0]], dtype=tf.float32))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca.path.read_bytes(),
                private_key=(tmp_path / f"{certificate}.key").read_bytes() if certificate else None,
                certificate_chain=(tmp_path / f"{certificate}.crt").read_bytes() if certificate else None,
            )
            with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
                answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                    request, timeout=30
                )
            values: list[list[float]] = tf.make_ndarray(answer.outputs["output_0"]).tolist()
            return values

        assert predict("client") == [[2.0, 4.0, 6.0, 8.0]]
        for refused in (None, "stranger"):  # no certificate, or one the custom CA did not sign
            with pytest.raises(grpc.RpcError) as caught:
                predict(refused)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (refused, caught.value)
