"""Real pods on the local cluster's real node (tests/cluster/node.py): the runtime image built from
Dockerfile.runtime, real TensorFlow SavedModels on a hostPath PersistentVolume, requests from the host
through each Service's ClusterIP (kube-proxy's iptables rules), real probes, real drains on rollout, the
HPA on real CPU (metrics-server scraping the real kubelet), and the Helm chart's operator in a pod.

The real node has two cores' worth of room beside the control plane: examples run with one replica and
a CPU request of 100m here (what is proven is that each example's shape serves for real; replica maths
are kwok's tests). The node's ``nvidia.com/gpu`` is advertised, not real: TensorFlow runs on the CPU.
"""

from __future__ import annotations

import base64
import copy
import datetime
import errno
import functools
import http.client
import http.server
import json
import os
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness, node
from tests.e2e.conftest import (
    ROOT,
    Kubectl,
    OperatorProcess,
    condition,
    create_models_namespace,
    delete_namespace,
    eventually,
    example_doc,
    helm,
)  # fmt: skip
from tests.minio import MinIO
from tests.tlsutil import CertificateAuthority

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not node.enabled(), reason="MODELSERVICE_REAL_NODE=0: the cluster has no real node"),
]
REAL_NODE = {
    "nodeSelector": {"modelservice.io/real-node": "true"},
    "tolerations": [{"key": node.TAINT, "operator": "Exists", "effect": "NoSchedule"}],
}
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]  # a setosa and a virginica
POD_TIMEOUT = 300  # a TensorFlow pod starting on two busy cores


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris (versions 1 and 2) and digits, trained from scikit-learn's bundled data; readable by the
    runtime's non-root user (the directory is mounted into the pods as it is)."""
    out = tmp_path_factory.mktemp("real-models")
    for script in ("iris", "digits"):
        subprocess.run([sys.executable, f"examples/models/{script}.py", "--out", str(out)], cwd=ROOT,
                       check=True, timeout=600, capture_output=True)  # fmt: skip
    os.chmod(out, 0o755)
    return out


@pytest.fixture()
def real_kubectl(cluster: Path, models: Path) -> Iterator[Kubectl]:
    assert harness.images(), "no images to run: `make images` builds them (make e2e does it first)"
    name = create_models_namespace(cluster, str(models))
    yield Kubectl(cluster, name)
    delete_namespace(cluster, name)


def on_real_node(name: str, **spec: Any) -> dict[str, Any]:
    """``examples/<name>.yaml`` scheduled onto the real node, one replica, 100m CPU, GPU product of the
    real node; ``spec`` entries replace the example's."""
    doc = example_doc(name)
    body = doc["spec"]
    body["scheduling"] = copy.deepcopy(REAL_NODE)
    body["replicas"] = 1
    body.setdefault("resources", {}).setdefault("requests", {})["cpu"] = "100m"
    if "autoscaling" in body:
        body["autoscaling"]["minReplicas"] = 1
    if "gpu" in body and "product" in body["gpu"]:
        body["gpu"]["product"] = node.GPU_PRODUCT
    body.update(spec)
    return doc


def apply(kubectl: Kubectl, doc: dict[str, Any]) -> None:
    kubectl.apply(yaml.safe_dump(doc))


def wait_ready(kubectl: Kubectl, name: str, timeout: int = POD_TIMEOUT) -> None:
    kubectl.run("wait", "--for=condition=Ready", f"ms/{name}", f"--timeout={timeout}s", timeout=timeout + 30)


def cluster_ip(kubectl: Kubectl, service: str) -> tuple[str, int]:
    body = kubectl.json("get", "svc", service)
    port = next(p["port"] for p in body["spec"]["ports"] if p["name"] == "http")
    return body["spec"]["clusterIP"], port


def unrouted(error: object) -> bool:
    """How a Service answers before kube-proxy has routed it: refused (its reject rule for a Service
    without endpoints) or unreachable (no rule yet, so the ClusterIP leads nowhere)."""
    return isinstance(error, OSError) and error.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH)


def post(address: tuple[str, int], path: str, body: dict[str, Any], routed_within: float = 30) -> Any:
    """POST JSON to a ClusterIP. A Service that just got its endpoint is refused until kube-proxy has
    written its rules (a second or so after the pod turned Ready): that much is retried, nothing else."""
    request = urllib.request.Request(
        f"http://{address[0]}:{address[1]}{path}", data=json.dumps(body).encode()
    )
    deadline = time.monotonic() + routed_within
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200
                return json.load(response)
        except urllib.error.URLError as exc:
            if not unrouted(exc.reason) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def grpc_class_ids(kubectl: Kubectl, service: str) -> list[int]:
    """Predict IRIS_ROWS with TF Serving's Python stub through the Service's gRPC port (retrying only while
    kube-proxy has not routed the port yet, as ``post`` does)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    body = kubectl.json("get", "svc", service)
    port = next(p["port"] for p in body["spec"]["ports"] if p["name"] == "grpc")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "iris"
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(IRIS_ROWS, dtype=tf.float32))
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(f"{body['spec']['clusterIP']}:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while True:
            try:
                response = stub.Predict(request, timeout=30)
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    return [int(v) for v in tf.make_ndarray(response.outputs["class_ids"]).ravel()]


def pods_of(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", "pods", "-l", f"serving.modelservice.io/name={name}")[
        "items"
    ]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def v2_infer(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": [len(rows), 4], "datatype": "FP32",
                        "data": [x for row in rows for x in row]}]}  # fmt: skip


def digits_request(models: Path) -> tuple[dict[str, Any], list[int]]:
    """Three of the sample PNGs digits.py wrote (``<index>-<label>.png``) as TF Serving's b64 JSON."""
    samples = sorted((models / "digits-samples").glob("*.png"))[:3]
    body = {
        "instances": [{"image_bytes": {"b64": base64.b64encode(p.read_bytes()).decode()}} for p in samples]
    }
    return body, [int(p.stem.split("-")[1]) for p in samples]


@pytest.fixture()
def model_sources(models: Path, tmp_path: Path) -> Iterator[tuple[MinIO, str]]:
    """MinIO holding iris (s3://models/iris/{1,2}) and an HTTP server with iris.tar.gz, both on the real
    node's bridge gateway, where its pods reach the host (as they reach the API server)."""
    minio = MinIO.start(node.GATEWAY)
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "iris.tar.gz", "w:gz") as tar:
        tar.add(models / "iris", arcname="iris")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    web = http.server.ThreadingHTTPServer((node.GATEWAY, 0), handler)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        minio.upload_tree("models", "iris", models / "iris")
        yield minio, f"http://{node.GATEWAY}:{web.server_address[1]}"
    finally:
        web.shutdown()
        thread.join(timeout=10)
        minio.stop()


def s3_secret(name: str, minio: MinIO, secret_key: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
    })  # fmt: skip


def test_models_from_s3_and_http_are_downloaded_before_the_runtime_starts_and_a_wrong_key_says_why(
    operator: OperatorProcess, real_kubectl: Kubectl, model_sources: tuple[MinIO, str]
) -> None:
    minio, web = model_sources
    real_kubectl.apply(s3_secret("s3-creds", minio, minio.secret_key))
    real_kubectl.apply(s3_secret("s3-stale", minio, "a-rotated-away-key"))
    s3 = {"secretRef": {"name": "s3-creds"}, "endpoint": minio.endpoint, "region": minio.region}
    sources = {
        "iris-s3": {"name": "iris", "storageUri": "s3://models/iris", "storage": s3},
        "iris-web": {"name": "iris", "storageUri": f"{web}/iris.tar.gz"},
        "iris-denied": {"name": "iris", "storageUri": "s3://models/iris",
                        "storage": {**s3, "secretRef": {"name": "s3-stale"}}},
    }  # fmt: skip
    for name, model in sources.items():
        doc = on_real_node("iris-cpu", model=model)
        doc["metadata"]["name"] = name
        apply(real_kubectl, doc)

    # A wrong key: Ready=False with the S3 server's answer, read from the init container's message.
    denied = eventually(
        lambda: (m := real_kubectl.json("get", "ms", "iris-denied"))
        and condition(m, "Ready").get("reason") == "ModelDownloadFailed" and m,
        timeout=POD_TIMEOUT, what="iris-denied Ready=False/ModelDownloadFailed",
    )  # fmt: skip
    assert condition(denied, "Ready")["status"] == "False"
    assert (
        f"downloading model: 403 Forbidden from s3 endpoint {minio.endpoint} for s3://models/iris: "
        "SignatureDoesNotMatch" in condition(denied, "Ready")["message"]
    ), condition(denied, "Ready")
    assert condition(denied, "Degraded")["status"] == "True"

    for name in ("iris-s3", "iris-web"):
        wait_ready(real_kubectl, name)
        answer = post(cluster_ip(real_kubectl, name), "/v1/models/iris:predict", {"instances": IRIS_ROWS})
        assert [p["class_ids"] for p in answer["predictions"]] == [0, 2], (name, answer)
        (pod,) = pods_of(real_kubectl, name)
        (init,) = pod["status"]["initContainerStatuses"]
        assert init["name"] == "storage-initializer" and init["state"]["terminated"]["exitCode"] == 0

    # The key is fixed in the Secret: the kubelet's next retry of the init container reads it, and the
    # ModelService turns Ready by itself.
    real_kubectl.apply(s3_secret("s3-stale", minio, minio.secret_key))
    wait_ready(real_kubectl, "iris-denied", timeout=POD_TIMEOUT + 120)
    answer = post(
        cluster_ip(real_kubectl, "iris-denied"), "/v1/models/iris:predict", {"instances": IRIS_ROWS}
    )
    assert [p["class_ids"] for p in answer["predictions"]] == [0, 2]


def test_api_keys_rate_limits_and_the_cache_guard_a_real_pod_whose_probes_need_no_key(
    operator: OperatorProcess, real_kubectl: Kubectl
) -> None:
    real_kubectl.apply(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "iris-keys"},
        "stringData": {"team-a": "key-a-0123456789", "team-b": "key-b-0123456789"},
    }))  # fmt: skip
    doc = on_real_node("iris-cpu", runtime={
        "grpc": {"enabled": True}, "auth": {"apiKeys": {"secretRef": {"name": "iris-keys"}}},
        "rateLimit": {"requestsPerSecond": 1, "burst": 3}, "cache": {"maxBytes": 1048576},
    })  # fmt: skip
    doc["metadata"]["name"] = "iris-guarded"
    apply(real_kubectl, doc)
    wait_ready(real_kubectl, "iris-guarded")  # the kubelet's probes reach /v2/health/ready without a key
    address = cluster_ip(real_kubectl, "iris-guarded")
    url = f"http://{address[0]}:{address[1]}/v1/models/iris-guarded:predict"  # the model is named after it
    body = json.dumps({"instances": IRIS_ROWS}).encode()

    def call(key: str | None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, data=body, headers=headers), timeout=30
            ) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
        except urllib.error.URLError as exc:
            if not unrouted(exc.reason):
                raise
            return 0, {}, b""

    status, headers, _ = eventually(lambda: (r := call(None)) and r[0] != 0 and r, what="the Service routes")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="modelservice"'
    assert call("key-z")[0] == 401
    first = call("key-a-0123456789")
    assert first[0] == 200 and first[1]["X-ModelService-Cache"] == "miss", first
    assert [p["class_ids"] for p in json.loads(first[2])["predictions"]] == [0, 2]
    second = call("key-a-0123456789")
    assert second[1]["X-ModelService-Cache"] == "hit" and second[2] == first[2]
    statuses = [call("key-a-0123456789")[0] for _ in range(4)]  # a bucket of 3 at 1/s: some 429s
    assert 429 in statuses, statuses
    assert call("key-b-0123456789")[0] == 200  # another client, another bucket


def test_tls_from_a_secret_serves_https_and_the_kubelet_probes_over_it(
    operator: OperatorProcess, real_kubectl: Kubectl, tmp_path: Path
) -> None:
    ca = CertificateAuthority(tmp_path, "e2e CA")
    ca.issue(tmp_path / "tls.crt", tmp_path / "tls.key", common_name="iris-tls")
    real_kubectl.run("create", "secret", "tls", "iris-tls", f"--cert={tmp_path / 'tls.crt'}",
                     f"--key={tmp_path / 'tls.key'}")  # fmt: skip
    doc = on_real_node("iris-cpu", runtime={"tls": {"secretRef": {"name": "iris-tls"}}})
    doc["metadata"]["name"] = "iris-tls"
    apply(real_kubectl, doc)
    wait_ready(real_kubectl, "iris-tls")  # startup and readiness probes over HTTPS
    address = cluster_ip(real_kubectl, "iris-tls")
    context = ssl.create_default_context(cafile=str(ca.path))
    context.check_hostname = False  # the certificate names the Service, the test dials its ClusterIP

    def predict() -> dict[str, Any]:
        connection = http.client.HTTPSConnection(address[0], address[1], context=context, timeout=30)
        try:
            connection.connect()
        except OSError as exc:
            if not unrouted(exc):
                raise
            return {}
        try:
            connection.request("POST", "/v1/models/iris-tls:predict", json.dumps({"instances": IRIS_ROWS}),
                               {"Content-Type": "application/json"})  # fmt: skip
            response = connection.getresponse()
            assert response.status == 200
            body: dict[str, Any] = json.loads(response.read())
            return body
        finally:
            connection.close()

    answer = eventually(predict, what="an HTTPS answer through the Service")
    assert [p["class_ids"] for p in answer["predictions"]] == [0, 2]
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)):
        plain = http.client.HTTPConnection(address[0], address[1], timeout=30)
        plain.request("GET", "/v2/health/ready")
        plain.getresponse()


CLIENT = """
import json, sys, urllib.error, urllib.request
token = open("/var/run/secrets/kubernetes.io/serviceaccount/token").read()
request = urllib.request.Request(sys.argv[1], data=json.dumps({"instances": json.loads(sys.argv[2])}).encode(),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=30) as answer:
        print(answer.status, answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.read().decode())
"""


def client_pod(name: str, account: str, url: str) -> dict[str, Any]:
    """A pod on the real node that calls ``url`` once with its own service-account token."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            **copy.deepcopy(REAL_NODE), "serviceAccountName": account, "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": harness.images()["RUNTIME_IMAGE"], "imagePullPolicy": "Never",
                "command": ["python3", "-c", CLIENT, url, json.dumps(IRIS_ROWS)],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
            }],
        },
    }  # fmt: skip


def test_a_pod_with_the_rbac_right_is_served_with_its_service_account_token_and_one_without_is_refused(
    operator: OperatorProcess, real_kubectl: Kubectl, cluster: Path
) -> None:
    namespace = real_kubectl.namespace
    doc = on_real_node("iris-cpu", runtime={"auth": {"kubernetes": {"enabled": True}}})
    doc["metadata"]["name"] = "iris-rbac"
    apply(real_kubectl, doc)
    for account in ("client-a", "client-b"):
        real_kubectl.run("create", "serviceaccount", account)
    real_kubectl.apply(yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "predict-iris"},
         "rules": [{"apiGroups": ["serving.modelservice.io"], "resources": ["modelservices/predict"],
                    "resourceNames": ["iris-rbac"], "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "predict-iris"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "predict-iris"},
         "subjects": [{"kind": "ServiceAccount", "name": "client-a"}]},
    ]))  # fmt: skip
    wait_ready(real_kubectl, "iris-rbac")
    ms = real_kubectl.json("get", "ms", "iris-rbac")
    binding = ms["status"]["authDelegatorBinding"]
    assert binding == f"modelservice:auth-delegator:{namespace}:iris-rbac-runtime"
    (pod,) = pods_of(real_kubectl, "iris-rbac")
    assert pod["spec"]["serviceAccountName"] == "iris-rbac-runtime"

    url = f"http://iris-rbac.{namespace}.svc:8501/v1/models/iris-rbac:predict"
    for name, account in (("allowed", "client-a"), ("refused", "client-b")):
        real_kubectl.apply(yaml.safe_dump(client_pod(name, account, url)))
    answers = {}
    for name in ("allowed", "refused"):
        real_kubectl.run("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "--timeout=120s",
                         timeout=150)  # fmt: skip
        status, _, body = real_kubectl.run("logs", name).stdout.strip().partition(" ")
        answers[name] = (int(status), json.loads(body))
    assert answers["allowed"][0] == 200
    assert [p["class_ids"] for p in answers["allowed"][1]["predictions"]] == [0, 2]
    assert answers["refused"] == (403, {"error": (
        f'system:serviceaccount:{namespace}:client-b may not create modelservices/predict "iris-rbac" in '
        f'namespace "{namespace}"'
    )})  # fmt: skip

    # Deleted with its ModelService: a cluster-scoped binding that garbage collection cannot follow.
    real_kubectl.run("delete", "ms", "iris-rbac", "--wait=false")
    admin = Kubectl(cluster)
    eventually(lambda: admin.run("get", "clusterrolebinding", binding, check=False).returncode != 0,
               timeout=60, what=f"ClusterRoleBinding {binding} deleted")  # fmt: skip


# ------------------------------------------------------------------------------------------ examples


def test_every_example_serves_real_predictions_through_its_service_from_non_root_read_only_pods(
    operator: OperatorProcess, real_kubectl: Kubectl, models: Path
) -> None:
    examples = {"iris-cpu": "iris", "iris-canary": "iris-canary", "iris-bluegreen": "iris-bluegreen",
                "iris-autoscaling": "iris-autoscaled", "digits-gpu": "digits"}  # fmt: skip
    for example in examples:
        apply(real_kubectl, on_real_node(example))
    for name in examples.values():
        wait_ready(real_kubectl, name)

    for name in ("iris", "iris-canary", "iris-bluegreen", "iris-autoscaled"):
        answer = post(cluster_ip(real_kubectl, name), "/v1/models/iris:predict" if name in ("iris", "iris-autoscaled")
                      else f"/v1/models/{name}:predict", {"instances": IRIS_ROWS})  # fmt: skip
        assert [p["class_ids"] for p in answer["predictions"]] == [0, 2], (name, answer)
    body, labels = digits_request(models)
    answer = post(cluster_ip(real_kubectl, "digits"), "/v1/models/digits:predict", body)
    assert [p["digit"] for p in answer["predictions"]] == labels
    # iris-cpu turns gRPC on: TF Serving's own stub gets the same classes through the Service's port 8500.
    assert grpc_class_ids(real_kubectl, "iris") == [0, 2]

    for name in examples.values():
        pods = sorted(pods_of(real_kubectl, name), key=lambda p: p["metadata"]["creationTimestamp"])
        # One replica each; the autoscaled example's HPA may add one when it sees the model load's CPU
        # against the 100m request (the HPA test below covers scaling): check the first.
        assert len(pods) == 1 or (name == "iris-autoscaled" and pods), [p["metadata"]["name"] for p in pods]
        pod = pods[0]
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        statuses = pod["status"]["containerStatuses"]
        assert all(s["ready"] and s["restartCount"] == 0 for s in statuses), statuses
        container = pod["spec"]["containers"][0]
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(container), "probes rendered"
        probe = real_kubectl.run("exec", pod["metadata"]["name"], "--", "python3", "-c",
                                 "import os\ntry:\n    open('/probe', 'w')\nexcept OSError as e:\n    print(os.getuid(), e.strerror)")  # fmt: skip
        assert probe.stdout.split(None, 1) == ["10001", "Read-only file system\n"], probe.stdout
    gpu_pod = pods_of(real_kubectl, "digits")[0]
    assert gpu_pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    # Pod to Service by name: CoreDNS resolves it, kube-proxy routes the ClusterIP from inside the pod network.
    url = f"http://iris.{real_kubectl.namespace}.svc.cluster.local:8501/v1/models/iris"
    fetch = real_kubectl.run("exec", gpu_pod["metadata"]["name"], "--", "python3", "-c",
                             f"import json, urllib.request; print(json.load(urllib.request.urlopen({url!r}, timeout=10)))")  # fmt: skip
    assert "'state': 'AVAILABLE'" in fetch.stdout, fetch.stdout + fetch.stderr


# -------------------------------------------------------------------------------- rollout under load


def _now() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]


class SteadyLoad:
    """Requests from the host to a ClusterIP from a few threads until stopped; every answer that is not a
    200, and every connection error, is a failure (nothing is retried). Without ``keep_alive`` each request
    has its own connection (kube-proxy picks an endpoint per connection); with it each thread keeps one
    connection open as HTTP clients do, and opens a new one only when the server answered
    ``Connection: close`` (a draining pod does)."""

    def __init__(self, address: tuple[str, int], path: str, body: dict[str, Any], threads: int = 3,
                 keep_alive: bool = False) -> None:  # fmt: skip
        self.address, self.path, self.body = address, path, json.dumps(body).encode()
        self.keep_alive = keep_alive
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self.stop_event.is_set():
            connection = connection or http.client.HTTPConnection(*self.address, timeout=30)
            try:
                connection.request("POST", self.path, self.body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                with self.lock:
                    if response.status == 200:
                        self.versions[json.loads(payload)["model_version"]] += 1
                    else:
                        self.failures.append(f"{_now()} {response.status} {payload[:200]!r}")
                if not self.keep_alive or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failures.append(f"{_now()} {exc!r}")
                connection.close()
                connection = None
            time.sleep(0.02)
        if connection is not None:
            connection.close()

    def __enter__(self) -> SteadyLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.mark.parametrize("keep_alive", [False, True], ids=["connection-per-request", "keep-alive"])
def test_a_rollout_under_steady_load_through_the_service_fails_no_request(
    operator: OperatorProcess, real_kubectl: Kubectl, keep_alive: bool
) -> None:
    doc = on_real_node("iris-cpu")
    doc["spec"]["replicas"] = 2
    doc["spec"]["model"] = {"storageUri": "pvc://models/iris", "version": "1"}
    apply(real_kubectl, doc)
    wait_ready(real_kubectl, "iris")
    address = cluster_ip(real_kubectl, "iris")
    post(address, "/v2/models/iris/infer", v2_infer(IRIS_ROWS))  # kube-proxy routes the new Service

    with SteadyLoad(address, "/v2/models/iris/infer", v2_infer(IRIS_ROWS), keep_alive=keep_alive) as load:
        eventually(lambda: load.versions["1"] > 20, timeout=60, what="answers from version 1")
        doc["spec"]["model"]["version"] = "2"
        apply(real_kubectl, doc)

        def rolled_out() -> bool:
            status = real_kubectl.json("get", "ms", "iris").get("status", {})
            pods = pods_of(real_kubectl, "iris")
            revisions = {p["metadata"]["labels"]["serving.modelservice.io/revision"] for p in pods}
            return (status.get("rollout", {}).get("phase") in (None, "Healthy", "Completed")
                    and revisions == {status.get("stable", {}).get("revision")} and len(pods) == 2
                    and all(ready(p) for p in pods) and load.versions["2"] > 20)  # fmt: skip

        eventually(rolled_out, timeout=POD_TIMEOUT, interval=2, what="the rollout to version 2")
        before = load.versions["2"]
        eventually(
            lambda: load.versions["2"] > before + 20, timeout=60, what="more answers after the rollout"
        )
    assert load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:10]}"
    assert load.versions["1"] > 20 and load.versions["2"] > 40, load.versions
    old_pods = [e for e in real_kubectl.json("get", "events")["items"] if e["reason"] == "Killing"]
    assert len(old_pods) >= 2, "both version 1 pods were stopped while the load ran"


# ------------------------------------------------------------------------------------ HPA on real CPU


def test_the_hpa_scales_real_pods_on_real_cpu_and_back_down(
    operator: OperatorProcess, real_kubectl: Kubectl
) -> None:
    doc = on_real_node("iris-cpu", autoscaling={
        "minReplicas": 1, "maxReplicas": 2,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
    })  # fmt: skip
    apply(real_kubectl, doc)
    wait_ready(real_kubectl, "iris")
    hpa = eventually(lambda: real_kubectl.json("get", "hpa")["items"], what="the HPA")[0]["metadata"]["name"]

    def cpu_known() -> bool:
        metrics = real_kubectl.json("get", "hpa", hpa).get("status", {}).get("currentMetrics") or []
        return any(
            (m.get("resource") or {}).get("current", {}).get("averageUtilization") is not None
            for m in metrics
        )

    eventually(cpu_known, timeout=120, interval=2, what="metrics-server's first CPU sample of the real pod")
    address = cluster_ip(real_kubectl, "iris")
    post(address, "/v2/models/iris/infer", v2_infer(IRIS_ROWS))  # kube-proxy routes the new Service
    with SteadyLoad(address, "/v2/models/iris/infer", v2_infer(IRIS_ROWS), threads=4) as load:
        eventually(lambda: sum(ready(p) for p in pods_of(real_kubectl, "iris")) == 2,
                   timeout=POD_TIMEOUT, interval=2, what="a second pod for the CPU load")  # fmt: skip
        scaled_up_at = real_kubectl.json("get", "hpa", hpa)["status"]
    assert scaled_up_at["desiredReplicas"] == 2
    assert load.failures == [], load.failures[:10]
    eventually(lambda: len(pods_of(real_kubectl, "iris")) == 1, timeout=240, interval=2,
               what="the HPA scaling back down once the load stopped")  # fmt: skip


# --------------------------------------------------------------------------------- the chart, for real


def test_the_chart_runs_the_operator_in_a_pod_that_reconciles_an_example_to_real_endpoints(
    operator: OperatorProcess, real_kubectl: Kubectl, tmp_path: Path
) -> None:
    images = harness.images()
    repository, tag = images["OPERATOR_IMAGE"].rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "runtimeImage": images["RUNTIME_IMAGE"], **REAL_NODE,
    }  # fmt: skip
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    release_ns = f"{real_kubectl.namespace}-system"
    operator.stop()  # one operator at a time: the chart's takes over
    try:
        helm("install", "ms", str(ROOT / "charts" / "modelservice-operator"), "--namespace", release_ns,
             "--create-namespace", "-f", str(tmp_path / "values.yaml"), "--skip-crds", "--wait", "--timeout=180s",
             timeout=240)  # fmt: skip
        admin = Kubectl(real_kubectl.kubeconfig, release_ns)
        (operator_pod,) = admin.json("get", "pods")["items"]
        assert operator_pod["spec"]["nodeName"] == node.NODE_NAME and ready(operator_pod)
        assert operator_pod["spec"]["serviceAccountName"] == "ms-modelservice-operator"

        apply(real_kubectl, on_real_node("iris-cpu"))
        wait_ready(real_kubectl, "iris")
        slices = real_kubectl.json("get", "endpointslices", "-l", "kubernetes.io/service-name=iris")["items"]
        endpoints = [e for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")]
        assert [e["targetRef"]["name"] for e in endpoints] == [
            p["metadata"]["name"] for p in pods_of(real_kubectl, "iris")
        ]
        answer = post(cluster_ip(real_kubectl, "iris"), "/v1/models/iris:predict", {"instances": IRIS_ROWS})
        assert [p["class_ids"] for p in answer["predictions"]] == [0, 2]
        log = admin.run("logs", operator_pod["metadata"]["name"]).stdout
        assert f"{real_kubectl.namespace}/iris" in log, log[-2000:]
    finally:
        helm("uninstall", "ms", "--namespace", release_ns, "--wait", "--timeout=120s", check=False)
        Kubectl(real_kubectl.kubeconfig).run("delete", "namespace", release_ns, "--wait=false", check=False)
        operator.start()
