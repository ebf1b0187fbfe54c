"""Fixtures for end-to-end tests against the real local control plane (tests/cluster).

The cluster is session-scoped and reused when it is already up (``make cluster-up`` beforehand makes
repeated runs fast); every test gets a fresh namespace with a bound ``models`` PersistentVolumeClaim;
the operator runs as a real ``modelservice-operator run`` subprocess with its own identity.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness

ROOT = Path(__file__).resolve().parents[2]
# The safety net only: child changes reach the operator through its watches. 20 s keeps the one-minute
# steady-state windows meaningful (three passes) while a 2-second repair can only come from a watch.
RESYNC_SECONDS = "20"
# The image `make images` built (pods on the real node run it; kwok's pods never start any image).
RUNTIME_IMAGE = harness.images().get("RUNTIME_IMAGE", "modelservice/runtime:e2e")


class Kubectl:
    def __init__(self, kubeconfig: Path, namespace: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def run(
        self, *args: str, input_text: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """kubectl ``args``; ``timeout`` bounds the process (a ``kubectl wait`` needs more than its own)."""
        command = [str(harness.binary("kubectl")), f"--kubeconfig={self.kubeconfig}"]
        if self.namespace:
            command.append(f"--namespace={self.namespace}")
        result = subprocess.run(
            [*command, *args], input=input_text, text=True, capture_output=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str | Path) -> subprocess.CompletedProcess[str]:
        if isinstance(manifest, Path):
            return self.run("apply", "-f", str(manifest))
        return self.run("apply", "-f", "-", input_text=manifest)


def eventually(check: Callable[[], Any], timeout: float = 90, interval: float = 1.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; the last failure explains a timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except (AssertionError, KeyError, IndexError, StopIteration, json.JSONDecodeError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last result {last!r}")


def condition(ms: dict[str, Any], type_: str) -> dict[str, Any]:
    """A ModelService's condition of ``type_`` ({} until it has one)."""
    found: dict[str, Any] = next(
        (c for c in ms.get("status", {}).get("conditions", []) if c["type"] == type_), {}
    )
    return found


def example_doc(name: str) -> dict[str, Any]:
    """``examples/<name>.yaml``, parsed."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    return doc


def example(name: str, **changes: Any) -> str:
    """``examples/<name>.yaml`` with changes, e.g. ``spec__model__version="2"`` sets spec.model.version."""
    doc = example_doc(name)
    for path, value in changes.items():
        target = doc
        keys = path.split("__")
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return str(yaml.safe_dump(doc))


def helm(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The pinned helm against the local cluster, as its admin."""
    result = subprocess.run(
        [str(harness.binary("helm")), f"--kubeconfig={harness.admin_kubeconfig()}", *args],
        text=True, capture_output=True, timeout=timeout,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def stable_deployment(kubectl: Kubectl, ms_name: str) -> dict[str, Any]:
    """The Deployment of the ModelService's stable revision (``<name>-<revision>``), as its status names it."""
    name = eventually(lambda: kubectl.json("get", "ms", ms_name).get("status", {}).get("deployment"),
                      what=f"status.deployment of {ms_name}")  # fmt: skip
    deployment: dict[str, Any] = kubectl.json("get", "deploy", name)
    return deployment


def token_kubeconfig(path: Path, token: str) -> Path:
    """A kubeconfig for the local cluster that authenticates with a bearer token (a ServiceAccount's)."""
    ca = base64.b64encode((harness.PKI / "ca.crt").read_bytes()).decode()
    server = harness.api_server_url()
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: sa\n"
        f"clusters: [{{name: local, cluster: {{server: '{server}', certificate-authority-data: {ca}}}}}]\n"
        f"users: [{{name: sa, user: {{token: '{token}'}}}}]\n"
        "contexts: [{name: sa, context: {cluster: local, user: sa}}]\n"
    )
    return path


@pytest.fixture(scope="session")
def cluster() -> Path:
    kubeconfig = harness.up()
    admin = Kubectl(kubeconfig)
    # `make demo` leaves its operator running in the cluster; the tests run their own, one at a time.
    if admin.run("get", "namespace", "modelservice-system", check=False).returncode == 0:
        helm(
            "uninstall",
            "modelservice",
            "--namespace=modelservice-system",
            "--wait",
            "--timeout=120s",
            check=False,
        )
        admin.run(
            "delete",
            "namespace",
            "modelservice-system",
            "demo",
            "demo-real",
            "--ignore-not-found",
            "--wait=false",
        )
    admin.apply(ROOT / "crds" / "modelservice.yaml")
    admin.apply(ROOT / "crds" / "kopf-peering.yaml")
    admin.run(
        "wait", "--for=condition=Established", "crd/modelservices.serving.modelservice.io", "--timeout=60s"
    )
    return kubeconfig


class OperatorProcess:
    """``modelservice-operator run`` as a subprocess with the operator's own kubeconfig."""

    def __init__(
        self, log_path: Path, kubeconfig: str | Path | None = None, namespaces: list[str] | None = None,
        env: dict[str, str] | None = None, extra_args: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.log_path = log_path
        self.kubeconfig = kubeconfig  # a path, or several joined with ':' as in $KUBECONFIG
        self.namespaces = namespaces or []
        self.env = env or {}
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        kubeconfig = self.kubeconfig or harness.operator_kubeconfig()
        env = dict(
            os.environ, KUBECONFIG=str(kubeconfig), MODELSERVICE_RESYNC_SECONDS=RESYNC_SECONDS, **self.env
        )
        scope = [f"--namespace={n}" for n in self.namespaces] or ["--all-namespaces"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelservice_operator", "run", *scope,
                 "--liveness-port=0", "--metrics-port=0", f"--runtime-image={RUNTIME_IMAGE}", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def operator(cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(tmp_path_factory.mktemp("operator") / "operator.log")
    process.start()
    yield process
    process.stop()


def create_models_namespace(cluster: Path, host_path: str) -> str:
    """A fresh namespace with a ``models`` PVC bound to its own PersistentVolume on ``host_path``."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(cluster)
    admin.run("create", "namespace", name)
    admin.apply(
        f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: models-{name}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  hostPath: {{path: {host_path}}}
  claimRef: {{namespace: {name}, name: models}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: models, namespace: {name}}}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: models-{name}
  resources: {{requests: {{storage: 1Gi}}}}
"""
    )
    admin.run(
        "wait", "--for=jsonpath={.status.phase}=Bound", "pvc/models", f"--namespace={name}", "--timeout=60s"
    )
    return name


def delete_namespace(cluster: Path, name: str) -> None:
    admin = Kubectl(cluster)
    admin.run("delete", "namespace", name, "--wait=false", check=False)
    admin.run("delete", "pv", f"models-{name}", "--wait=false", check=False)


@pytest.fixture()
def namespace(cluster: Path) -> Iterator[str]:
    """A fresh namespace with a ``models`` PVC (kwok's pods never read it)."""
    name = create_models_namespace(cluster, "/srv/models")
    yield name
    delete_namespace(cluster, name)


@pytest.fixture()
def kubectl(cluster: Path, namespace: str) -> Kubectl:
    return Kubectl(cluster, namespace)
