"""Kubernetes authentication against the real API server: the runtime (on this host, with the admin's
kubeconfig as a pod would use its service account) reviews real service-account tokens with TokenReview
and SubjectAccessReview."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench.loadgen import free_port
from tests.e2e.conftest import Kubectl
from tests.integration.runtime.server import Server, start_server, stop
from tests.models import build_half_plus_two

pytestmark = pytest.mark.e2e
ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: predict-iris}
rules:
- apiGroups: [serving.modelservice.io]
  resources: [modelservices/predict]
  resourceNames: [iris]
  verbs: [create, get]
"""


def binding(subject: str) -> str:
    return f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: predict-iris-{subject}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: predict-iris}}
subjects: [{{kind: ServiceAccount, name: {subject}}}]
"""


@pytest.fixture()
def guarded(cluster: Path, kubectl: Kubectl, tmp_path: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    for account in ("client-a", "client-b"):
        kubectl.run("create", "serviceaccount", account)
    kubectl.apply(ROLE)
    kubectl.apply(binding("client-a"))
    tokens = {
        a: kubectl.run("create", "token", a, "--duration=10m").stdout.strip()
        for a in ("client-a", "client-b")
    }
    build_half_plus_two(tmp_path / "iris", 1)
    port = free_port()
    server = start_server(
        tmp_path, "--model_name=iris", f"--model_base_path={tmp_path / 'iris'}", "--workers=1",
        f"--kubernetes_auth={kubectl.namespace}/iris", f"--port={port}", env={"KUBECONFIG": str(cluster)},
    )  # fmt: skip
    tokens["grpc_port"] = str(port)
    try:
        server.wait_ready()
        yield server, tokens
    finally:
        stop(server)


def predict(server: Server, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(server.url + "/v1/models/iris:predict", json={"instances": [1.0, 2.0, 5.0]},
                         headers=headers, timeout=30)  # fmt: skip


def test_service_account_tokens_are_reviewed_by_the_real_api_server(
    guarded: tuple[Server, dict[str, str]], kubectl: Kubectl
) -> None:
    server, tokens = guarded
    allowed = predict(server, tokens["client-a"])
    assert allowed.status_code == 200 and allowed.json() == {"predictions": [2.5, 3.0, 4.5]}
    refused = predict(server, tokens["client-b"])
    assert refused.status_code == 403
    assert refused.json()["error"].startswith(
        f'system:serviceaccount:{kubectl.namespace}:client-b may not create modelservices/predict "iris" '
        f'in namespace "{kubectl.namespace}"'
    )
    # gRPC asks the same API server the same question.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "iris"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0]], dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{tokens['grpc_port']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answer = stub.Predict(
            request, timeout=30, metadata=[("authorization", f"Bearer {tokens['client-a']}")]
        )
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [[2.5], [3.0]]
        with pytest.raises(grpc.RpcError) as denied:
            stub.Predict(request, timeout=30, metadata=[("authorization", f"Bearer {tokens['client-b']}")])
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    forged = predict(server, tokens["client-a"][:-4] + "AAAA")
    assert forged.status_code == 401 and 'error="invalid_token"' in forged.headers["WWW-Authenticate"]
    assert predict(server, None).status_code == 401
    # The right granted: within the 10 s a refusal is remembered, client-b is served, with no restart.
    kubectl.apply(binding("client-b"))
    deadline = time.monotonic() + 30
    while (answer := predict(server, tokens["client-b"])).status_code != 200:
        assert answer.status_code == 403 and time.monotonic() < deadline, answer.text
        time.sleep(1)
    clients = {entry.get("client", "") for entry in server.log_entries()}
    assert any(client.startswith("system:serviceaccount:") for client in clients), clients
