"""A real local Kubernetes control plane for tests and the demo: no Docker, no kind.

    python -m tests.cluster.harness up          # build (cached) and start everything; idempotent
    python -m tests.cluster.harness status
    python -m tests.cluster.harness kubeconfig  # prints the admin kubeconfig's path
    python -m tests.cluster.harness down        # stops every process it started

It runs etcd, kube-apiserver (RBAC and the Node authorizer), kube-controller-manager (all controllers),
kube-scheduler, kwok (fake nodes whose pods turn Running and Ready), one real node (node.py: containerd,
kubelet, kube-proxy, CoreDNS; pods from our own images) and metrics-server (fed by the real kubelet and
by kwok's emulated kubelet resource metrics, so the HPA controller sees pod CPU: real CPU on the real
node, on kwok's nodes settable per pod with the annotation ``kwok.x-k8s.io/usage-cpu``). Binaries come
from build.sh's cache; state, logs and PKI live in ``${MODELSERVICE_CACHE:-~/.cache/modelservice}/cluster/state``,
outside the repository.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cluster import node

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MODELSERVICE_CACHE", Path.home() / ".cache" / "modelservice")) / "cluster"
BIN = CACHE / "bin"
STATE = Path(os.environ.get("MODELSERVICE_CLUSTER_STATE", CACHE / "state"))
PKI, LOGS, PIDS = STATE / "pki", STATE / "logs", STATE / "pids"
BASE_PORT = int(os.environ.get("MODELSERVICE_CLUSTER_BASE_PORT", "26400"))
PORTS = {
    "etcd": BASE_PORT + 1,
    "etcd-peer": BASE_PORT + 2,
    "kube-apiserver": BASE_PORT + 43,
    "kube-controller-manager": BASE_PORT + 57,
    "kube-scheduler": BASE_PORT + 59,
    "kwok": BASE_PORT + 47,
    "metrics-server": BASE_PORT + 44,
    "containerd": BASE_PORT + 45,
    "kubelet": BASE_PORT + 50,
    "kubelet-healthz": BASE_PORT + 48,
    "kube-proxy": BASE_PORT + 56,
    "kube-proxy-metrics": BASE_PORT + 49,
    "coredns": BASE_PORT + 53,
}
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")
ALL_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
                  *NODE_COMPONENTS, "metrics-server")  # fmt: skip
COMPONENTS = tuple(c for c in ALL_COMPONENTS if node.enabled() or c not in NODE_COMPONENTS)
# The API server listens where the real node's pods can reach it: the pod bridge's gateway address.
ADDRESS = node.GATEWAY if node.enabled() else "127.0.0.1"
PAUSE_IMAGE = "localhost/modelservice-pause:3.10"  # scripts/images.sh builds it
GPU_NODES = ("gpu-node-1", "gpu-node-2")
CPU_NODES = ("cpu-node-1",)
GPU_PRODUCT = "NVIDIA-A100-SXM4-80GB"


def versions() -> dict[str, str]:
    lines = (line.strip() for line in (HERE / "versions.env").read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def binary(name: str) -> Path:
    v = versions()
    version = {
        "etcd": v["ETCD_VERSION"], "kwok": v["KWOK_VERSION"], "metrics-server": v["METRICS_SERVER_VERSION"],
        "helm": v["HELM_VERSION"], "coredns": v["COREDNS_VERSION"], "minio": v["MINIO_VERSION"],
    }.get(name, v["K8S_VERSION"])  # fmt: skip
    return BIN / f"{name}-{version}"


def api_server_url() -> str:
    return f"https://{ADDRESS}:{PORTS['kube-apiserver']}"


def images() -> dict[str, str]:
    """The image tags scripts/images.sh built last (RUNTIME_IMAGE, OPERATOR_IMAGE, PAUSE_IMAGE); {} if none."""
    path = CACHE.parent / "images.env"
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def kwok_stages() -> Path:
    return CACHE / f"kwok-stages-{versions()['KWOK_VERSION']}"


def gateway_api_crds() -> Path:
    """The Gateway API's standard CRDs (build.sh fetches them from its Go module)."""
    return CACHE / f"gateway-api-{versions()['GATEWAY_API_VERSION']}"


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------- PKI


def _write_pki() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    PKI.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    later = now + datetime.timedelta(days=365)

    def save_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: str) -> None:
        (PKI / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def issue(name: str, cn: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *,
              orgs: Sequence[str] = (), server: bool = False, client: bool = False, is_ca: bool = False,
              dns: Sequence[str] = (), ips: Sequence[str] = ()) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
            + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        )
        issuer_cert, issuer_key = ca if ca else (None, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        )
        usages = []
        if server:
            usages.append(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if is_ca:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False), critical=True)  # fmt: skip
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(issuer_key, hashes.SHA256())
        (PKI / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        save_key(key, name)
        return cert, key

    ca = issue("ca", "modelservice-local-ca", None, is_ca=True)
    front_ca = issue("front-proxy-ca", "modelservice-front-proxy-ca", None, is_ca=True)
    local = {"dns": ("localhost",), "ips": ("127.0.0.1",)}
    issue("apiserver", "kube-apiserver", ca, server=True, ips=("127.0.0.1", "10.96.0.1", node.GATEWAY),
          dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local"))  # fmt: skip
    issue("admin", "kubernetes-admin", ca, orgs=("system:masters",), client=True)
    issue("controller-manager", "system:kube-controller-manager", ca, client=True)
    issue("scheduler", "system:kube-scheduler", ca, client=True)
    issue("kwok", "kwok-controller", ca, orgs=("system:masters",), client=True)
    # The operator's own identity, so the audit log can attribute its writes (e2e steady-state test).
    issue("operator", "modelservice-operator", ca, orgs=("system:masters",), client=True)
    issue("kwok-serving", "kwok", ca, server=True, **local)  # type: ignore[arg-type]
    issue("metrics-server", "metrics-server", ca, server=True, client=True, **local)  # type: ignore[arg-type]
    issue("front-proxy-client", "front-proxy-client", front_ca, client=True)
    # The real node: its kubelet (Node authorizer identity), the kubelet's serving certificate, the API
    # server's client certificate for kubelets (logs, exec, port-forward), kube-proxy and CoreDNS.
    issue("kubelet", f"system:node:{node.NODE_NAME}", ca, orgs=("system:nodes",), client=True)
    issue("kubelet-serving", node.NODE_NAME, ca, server=True, dns=(node.NODE_NAME,), ips=(node.GATEWAY,))
    issue(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ca, orgs=("system:masters",), client=True
    )
    issue("kube-proxy", "system:kube-proxy", ca, client=True)
    issue("coredns", "system:coredns", ca, client=True)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    save_key(sa, "sa")
    (PKI / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _kubeconfig(name: str, user_cert: str) -> Path:
    path = STATE / f"{name}.kubeconfig"
    server = api_server_url()
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: modelservice-local
  cluster:
    server: {server}
    certificate-authority: {PKI / "ca.crt"}
users:
- name: {name}
  user:
    client-certificate: {PKI / f"{user_cert}.crt"}
    client-key: {PKI / f"{user_cert}.key"}
contexts:
- name: modelservice-local
  context: {{cluster: modelservice-local, user: {name}, namespace: default}}
current-context: modelservice-local
"""
    )
    return path


def audit_entries() -> Iterator[dict[str, Any]]:
    """Every audit event the API server logged, oldest first, across rotated files."""
    rotated = sorted(LOGS.glob("audit-*.log"))  # audit-<timestamp>.log: lexical order is time order
    for path in [*rotated, LOGS / "audit.log"]:
        if path.exists():
            with open(path) as audit:
                for line in audit:
                    yield json.loads(line)


def admin_kubeconfig() -> Path:
    return STATE / "admin.kubeconfig"


def operator_kubeconfig() -> Path:
    return STATE / "operator.kubeconfig"


# ------------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Component:
    name: str
    args: list[str]
    health: str  # URL; https ones are checked with the admin client certificate


def _components() -> list[Component]:
    p = PORTS
    pki = PKI

    def common_auth(kc: Path) -> list[str]:
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
        ]

    return [
        Component("etcd", [
            str(binary("etcd")), "--name=local", f"--data-dir={STATE / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p['etcd']}", f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-cluster=local=http://127.0.0.1:{p['etcd-peer']}", "--quota-backend-bytes=4294967296",
            "--unsafe-no-fsync",  # a throwaway test cluster: durability is not worth the latency
        ], f"http://127.0.0.1:{p['etcd']}/health"),
        Component("kube-apiserver", [
            str(binary("kube-apiserver")), f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            f"--bind-address={ADDRESS}", f"--advertise-address={ADDRESS}", f"--secure-port={p['kube-apiserver']}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--audit-log-path=" + str(LOGS / "audit.log"), f"--audit-policy-file={STATE / 'audit-policy.yaml'}",
            # Rotated files are read too (audit_entries), but rotate rarely: 1 GiB, three kept.
            "--audit-log-maxsize=1024", "--audit-log-maxbackup=3",
        ], f"{api_server_url()}/readyz"),
        Component("kube-controller-manager", [
            str(binary("kube-controller-manager")), *common_auth(STATE / "controller-manager.kubeconfig"),
            "--bind-address=127.0.0.1", f"--secure-port={p['kube-controller-manager']}", "--controllers=*",
            "--use-service-account-credentials=true", f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}", f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}", "--leader-elect=false",
            # Faster autoscaling than production defaults, so e2e tests see scale up and down in seconds.
            "--horizontal-pod-autoscaler-sync-period=5s", "--horizontal-pod-autoscaler-downscale-stabilization=10s",
            "--horizontal-pod-autoscaler-cpu-initialization-period=10s",
            "--horizontal-pod-autoscaler-initial-readiness-delay=5s",
            # A claim created a moment before its volume reaches the controller's cache is bound on the
            # next periodic sync: 15 s by default, which every e2e namespace would wait for about half the time.
            "--pvclaimbinder-sync-period=1s",
            # Room for the operator scale benchmark (1,000 Deployments at once): the defaults (20 QPS,
            # 5 concurrent syncs) would measure the controller-manager's throttle, not the operator.
            "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10", "--concurrent-service-endpoint-syncs=10",
        ], f"https://127.0.0.1:{p['kube-controller-manager']}/healthz"),
        Component("kube-scheduler", [
            str(binary("kube-scheduler")), *common_auth(STATE / "scheduler.kubeconfig"),
            "--bind-address=127.0.0.1", f"--secure-port={p['kube-scheduler']}", "--leader-elect=false",
            "--kube-api-qps=200", "--kube-api-burst=400",
        ], f"https://127.0.0.1:{p['kube-scheduler']}/healthz"),
        Component("kwok", [
            str(binary("kwok")), f"--kubeconfig={STATE / 'kwok.kubeconfig'}", f"--config={HERE / 'kwok.yaml'}",
            *(f"--config={stage}" for stage in sorted(kwok_stages().glob("*.yaml"))),
            "--manage-nodes-with-label-selector=type=kwok", "--node-ip=127.0.0.1", f"--node-port={p['kwok']}",
            # Renew node Leases (the heartbeat-with-lease stage): without them the node lifecycle
            # controller marks every node NotReady about once a minute, and their pods with them.
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{p['kwok']}", f"--tls-cert-file={pki / 'kwok-serving.crt'}",
            f"--tls-private-key-file={pki / 'kwok-serving.key'}",
            # Fake pods get addresses the real node's bridge holds: traffic to them stays on this machine.
            f"--cidr={node.KWOK_POD_CIDR}",
        ], f"https://127.0.0.1:{p['kwok']}/healthz"),
        *(_node_components() if node.enabled() else ()),
        Component("metrics-server", [
            str(binary("metrics-server")), *common_auth(STATE / "metrics-server.kubeconfig"),
            "--bind-address=127.0.0.1", f"--secure-port={p['metrics-server']}",
            f"--tls-cert-file={pki / 'metrics-server.crt'}", f"--tls-private-key-file={pki / 'metrics-server.key'}",
            "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port",
            "--kubelet-insecure-tls", "--metric-resolution=15s",
        ], f"https://127.0.0.1:{p['metrics-server']}/livez"),
    ]  # fmt: skip


def _node_components() -> list[Component]:
    p, cfg = PORTS, STATE / "node"
    return [
        Component("containerd", ["containerd", f"--config={cfg / 'containerd.toml'}"],
                  f"http://127.0.0.1:{p['containerd']}/v1/metrics"),
        Component("kubelet", [
            str(binary("kubelet")), f"--config={cfg / 'kubelet.yaml'}", f"--kubeconfig={STATE / 'kubelet.kubeconfig'}",
            f"--root-dir={cfg / 'kubelet'}", f"--hostname-override={node.NODE_NAME}", f"--node-ip={node.GATEWAY}",
            f"--node-labels=modelservice.io/real-node=true,nvidia.com/gpu.present=true,nvidia.com/gpu.product={node.GPU_PRODUCT}",
        ], f"http://127.0.0.1:{p['kubelet-healthz']}/healthz"),
        Component("kube-proxy", [str(binary("kube-proxy")), f"--config={cfg / 'kube-proxy.yaml'}"],
                  f"http://127.0.0.1:{p['kube-proxy']}/livez"),
        Component("coredns", [str(binary("coredns")), f"-conf={cfg / 'Corefile'}"], f"http://127.0.0.1:{p['coredns']}/health"),
    ]  # fmt: skip


def _pid(name: str) -> int | None:
    try:
        pid = int((PIDS / name).read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
        # A process that exited but is not reaped yet (its parent, often init here, reaps late) is gone.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    return None if state in ("Z", "X") else pid


def _healthy(url: str) -> bool:
    context = ssl.create_default_context(cafile=str(PKI / "ca.crt")) if url.startswith("https") else None
    if context is not None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # kwok and metrics-server present their own certs; liveness only
        context.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start(component: Component) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{component.name}.log", "ab") as out:
        process = subprocess.Popen(component.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=STATE)  # fmt: skip
    (PIDS / component.name).write_text(str(process.pid))


def _wait(component: Component, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid(component.name) is None:
            tail = (LOGS / f"{component.name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"{component.name} exited during start-up; last log lines:\n{tail}")
        if _healthy(component.health):
            return
        time.sleep(0.3)
    raise SystemExit(f"{component.name} not healthy after {timeout}s; see {LOGS / (component.name + '.log')}")


def kubectl(
    *args: str, input_text: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary("kubectl")), f"--kubeconfig={admin_kubeconfig()}", *args],
        input=input_text, text=True, capture_output=True, check=check,
    )  # fmt: skip


def _node(name: str, gpu: bool) -> dict[str, object]:
    labels = {
        "type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "p4d.24xlarge" if gpu else "m5.8xlarge",
    }  # fmt: skip
    allocatable = {"cpu": "96" if gpu else "32", "memory": "1152Gi" if gpu else "128Gi", "pods": "110"}
    taints = []
    if gpu:
        labels.update({
            "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": GPU_PRODUCT, "nvidia.com/gpu.count": "8",
            "nvidia.com/gpu.memory": "81920", "nvidia.com/gpu.family": "ampere", "nvidia.com/cuda.driver.major": "550",
            "feature.node.kubernetes.io/pci-10de.present": "true",
        })  # fmt: skip
        allocatable["nvidia.com/gpu"] = "8"
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "kwok.x-k8s.io/node": "fake",
                "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{name}/metrics/resource",
            },
        },
        "spec": {"taints": taints},
        "status": {"allocatable": allocatable, "capacity": allocatable},
    }


def _nodes() -> str:
    nodes = [_node(n, True) for n in GPU_NODES] + [_node(n, False) for n in CPU_NODES]
    return "\n---\n".join(json.dumps(n) for n in nodes)


def _metrics_api() -> str:
    port = PORTS["metrics-server"]
    objects: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "metrics-server", "namespace": "kube-system", "labels": {"k8s-app": "metrics-server"}},
         # ExternalName: the aggregator proxies to localhost:<port>, where the metrics-server process listens.
         "spec": {"type": "ExternalName", "externalName": "localhost"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1beta1.metrics.k8s.io", "labels": {"k8s-app": "metrics-server"}},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                  "insecureSkipTLSVerify": True,
                  "service": {"name": "metrics-server", "namespace": "kube-system", "port": port}}},
    ]  # fmt: skip
    return "\n---\n".join(json.dumps(o) for o in objects)


def _write_configs() -> None:
    _kubeconfig("admin", "admin")
    _kubeconfig("controller-manager", "controller-manager")
    _kubeconfig("scheduler", "scheduler")
    _kubeconfig("kwok", "kwok")
    _kubeconfig("metrics-server", "admin")
    _kubeconfig("operator", "operator")
    if node.enabled():
        _kubeconfig("kubelet", "kubelet")
        node.write_configs(
            STATE, CACHE / "node", PKI, PORTS, images().get("PAUSE_IMAGE", PAUSE_IMAGE), _kubeconfig
        )
    # Audit only the operator's own identity: its writes with their bodies (the e2e steady-state tests
    # show them), every other request as metadata (the scale benchmark counts requests per second).
    # Auditing every component's writes costs the API server more CPU than the 1,000-object benchmark
    # leaves it.
    (STATE / "audit-policy.yaml").write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n"
        "- level: Request\n  users: [modelservice-operator]\n  verbs: [create, update, patch, delete, deletecollection]\n"
        "- level: Metadata\n  users: [modelservice-operator]\n- level: None\n"
    )


def status() -> dict[str, bool]:
    result = {}
    for component in _components():
        result[component.name] = _pid(component.name) is not None and _healthy(component.health)
    return result


def up() -> Path:
    missing = [c for c in (*COMPONENTS, "kubectl") if c != "containerd" and not binary(c).exists()]
    if not (kwok_stages() / "pod-ready.yaml").exists():
        missing.append("kwok stages")
    if missing:
        log(f"Building {', '.join(missing)} (cached in {BIN}; the first build takes a while)")
        subprocess.run(["bash", str(HERE / "build.sh")], check=True)
    if all(status().values()):
        log(f"Already up; kubeconfig {admin_kubeconfig()}")
        if node.enabled():
            load_images()
        return admin_kubeconfig()
    down(quiet=True)
    shutil.rmtree(STATE, ignore_errors=True)
    for directory in (PKI, LOGS, PIDS):
        directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log("Writing PKI and kubeconfigs")
    _write_pki()
    if node.enabled():
        subprocess.run(["bash", str(HERE.parents[1] / node.DEBIAN_PACKAGES_SCRIPT)], check=True)
        log(
            f"Real node network: bridge {node.BRIDGE} {node.GATEWAY} (pods {node.POD_CIDR}, Services {node.SERVICE_CIDR})"
        )
        node.setup_network(STATE)
    _write_configs()
    for component in _components():
        if component.name == "kwok":
            log(
                f"Creating fake nodes: {', '.join(GPU_NODES)} (8 x {GPU_PRODUCT} each), {', '.join(CPU_NODES)}"
            )
            kubectl("apply", "-f", "-", input_text=_nodes())
        if component.name == "coredns":
            kubectl("apply", "-f", "-", input_text=node.rbac())
        if component.name == "metrics-server":
            if node.enabled():
                log(f"Waiting for the real node {node.NODE_NAME} to register")
                _wait_for(
                    lambda: kubectl("get", "node", node.NODE_NAME, check=False).returncode == 0, 60, "node"
                )
                log(
                    f"The real node advertises {node.GPUS} x nvidia.com/gpu ({node.GPU_PRODUCT}): no device, TensorFlow runs on CPU"
                )
                kubectl("patch", "node", node.NODE_NAME, "--subresource=status", "--type=json", "-p", json.dumps(
                    [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(node.GPUS)}]))  # fmt: skip
            log("Waiting for the nodes to turn Ready")
            kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=90s")
            # metrics-server misses addresses that appear after it has listed the nodes: start it after.
            kubectl(
                "wait",
                "--for=jsonpath={.status.addresses[0].type}=InternalIP",
                "node",
                "--all",
                "--timeout=60s",
            )
            kubectl("apply", "-f", "-", input_text=_metrics_api())
        log(f"Starting {component.name}")
        _start(component)
        _wait(component)
        if component.name == "containerd":
            load_images()
    log("Waiting for the metrics API (metrics-server's first scrapes of kwok)")
    kubectl("wait", "--for=condition=Available", "apiservice/v1beta1.metrics.k8s.io", "--timeout=120s")
    log(f"Up in {time.monotonic() - started:.0f}s; kubeconfig {admin_kubeconfig()}")
    return admin_kubeconfig()


def load_images() -> None:
    """The images scripts/images.sh built (and the pause image), into the real node's containerd."""
    built = images()
    if not built:
        log("No images built yet (make images): the real node can run no pod until they are loaded")
        return
    node.load_images(list(built.values()), CACHE.parent / "images", log)


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def down(quiet: bool = False) -> None:
    api_up = _pid("kube-apiserver") is not None and _healthy(f"{api_server_url()}/readyz")
    for name in reversed(ALL_COMPONENTS):  # a node started before MODELSERVICE_REAL_NODE=0 stops too
        if name == "kube-proxy" and _pid("kubelet") is not None:
            node.remove_pods(kubectl, api_up)  # kubelet tears every pod down while it and containerd run
        pid = _pid(name)
        if pid is None:
            continue
        if not quiet:
            log(f"Stopping {name} (pid {pid})")
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            continue
        deadline = time.monotonic() + 15
        while _pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid(name) is not None:
            os.killpg(pid, signal.SIGKILL)
        (PIDS / name).unlink(missing_ok=True)
    if (STATE / "host-before.json").exists() or Path("/sys/class/net", node.BRIDGE).exists():
        node.teardown(STATE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", choices=("up", "down", "status", "kubeconfig", "build", "load-images", "leftovers")
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        subprocess.run(["bash", str(HERE / "build.sh")], check=True)
    elif args.command == "up":
        up()
    elif args.command == "leftovers":  # after down: what the cluster left on the host, if anything
        found = node.leftovers(STATE, BIN)
        for item in found:
            print(f"left behind: {item}")
        log("Nothing left behind" if not found else f"{len(found)} things left behind")
        return 1 if found else 0
    elif args.command == "load-images":
        if all(status().values()):
            load_images()
    elif args.command == "down":
        down()
        log("Down: no component process left")
    elif args.command == "status":
        states = status()
        for name, healthy in states.items():
            print(f"{name:26} {'healthy' if healthy else 'down'}")
        return 0 if all(states.values()) else 1
    else:
        print(admin_kubeconfig())
    return 0


if __name__ == "__main__":
    sys.exit(main())
