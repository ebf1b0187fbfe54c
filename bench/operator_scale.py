"""Operator scale: N ModelServices created at once on the local control plane's kwok nodes.

    make bench-operator                          (or: .venv/bin/python -m bench.operator_scale --count 1000)

It brings the local control plane up (tests/cluster), adds enough kwok nodes for N pods, starts the
operator as users run it (``modelservice-operator run --all-namespaces``, its own identity, default
settings), creates N small ModelServices as fast as the API server takes them, and reports:

- the time from the first create until every ModelService is ``Ready`` (pods Running and Ready on kwok,
  Services with ready endpoints), and the time until the first one is;
- the operator's peak RSS (VmHWM from /proc);
- the operator's API requests and writes per ModelService while converging, and per second over a quiet
  minute afterwards (from the API server's audit log, which records every request of the operator's
  identity; watches count once each).

Targets from the operator-foundation issue: 1,000 Ready within 60 s, RSS under 300 MiB, steady state under
1 request/s and zero writes. Everything (etcd, the API server, controllers, kwok, the operator and this
script) shares this machine's cores: the figures are end to end, not the operator alone.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.loadgen import free_port
from tests.cluster import harness

ROOT = Path(__file__).resolve().parent.parent
PODS_PER_NODE = 250
GROUP_PATH = "/apis/serving.modelservice.io/v1alpha1"


def kubectl(*args: str, input_text: str | None = None) -> str:
    return harness.kubectl(*args, input_text=input_text).stdout


def admin_ssl() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(harness.PKI / "ca.crt"))
    context.load_cert_chain(str(harness.PKI / "admin.crt"), str(harness.PKI / "admin.key"))
    return context


def server() -> str:
    return harness.api_server_url()


def bench_nodes(count: int) -> list[dict[str, Any]]:
    nodes = []
    for i in range(math.ceil(count / (PODS_PER_NODE - 10)) + 1):
        name = f"bench-node-{i}"
        capacity = {"cpu": "1000", "memory": "4Ti", "pods": str(PODS_PER_NODE)}
        nodes.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"type": "kwok", "kubernetes.io/hostname": name, "bench": "operator"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"}},
            "spec": {"taints": [{"key": "bench", "value": "operator", "effect": "NoSchedule"}]},
            "status": {"allocatable": capacity, "capacity": capacity},
        })  # fmt: skip
    return nodes


def modelservice(namespace: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "serving.modelservice.io/v1alpha1", "kind": "ModelService",
        "metadata": {"name": f"model-{i:04d}", "namespace": namespace},
        "spec": {
            "model": {"name": "iris", "storageUri": "file:///models/iris"},
            "replicas": 1,
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            "scheduling": {"tolerations": [{"key": "bench", "operator": "Exists", "effect": "NoSchedule"}],
                           "nodeSelector": {"bench": "operator"}},
        },
    }  # fmt: skip


async def create_all(namespace: str, count: int, concurrency: int) -> float:
    """POST every ModelService with ``concurrency`` requests in flight; returns when the first began."""
    started = time.monotonic()
    connector = aiohttp.TCPConnector(ssl=admin_ssl(), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                url = f"{server()}{GROUP_PATH}/namespaces/{namespace}/modelservices"
                async with session.post(url, json=modelservice(namespace, i)) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"create model-{i}: {response.status} {await response.text()}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return started


def ready_count(namespace: str) -> tuple[int, int]:
    request = urllib.request.Request(f"{server()}{GROUP_PATH}/namespaces/{namespace}/modelservices")
    with urllib.request.urlopen(request, context=admin_ssl(), timeout=30) as response:
        items = json.load(response)["items"]
    ready = sum(
        1
        for item in items
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in item.get("status", {}).get("conditions", [])
        )
    )
    return ready, len(items)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_rss_mib(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(value.split()[0]) / 1024
    return values["VmHWM"], values["VmRSS"]


def operator_requests(since: datetime.datetime, until: datetime.datetime) -> Counter[str]:
    """The operator's requests by verb in [since, until), from the audit log; one entry per audit ID."""
    seen: set[str] = set()
    verbs: Counter[str] = Counter()
    for entry in harness.audit_entries():
        if entry.get("user", {}).get("username") != "modelservice-operator" or entry["auditID"] in seen:
            continue
        at = datetime.datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if since <= at < until:
            seen.add(entry["auditID"])
            verbs[entry["verb"]] += 1
    return verbs


WRITE_VERBS = ("create", "update", "patch", "delete")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000, help="ModelServices to create (default 1000)")
    parser.add_argument("--concurrency", type=int, default=32, help="creates in flight")
    parser.add_argument(
        "--quiet-seconds", type=float, default=60, help="steady-state window after all are Ready"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="give up waiting for Ready after this long"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="the operator's reconcile workers (0: its default)"
    )
    parser.add_argument(
        "--operator-ref",
        default="",
        help="run the operator of this git commit instead (e.g. a previous version)",
    )
    args = parser.parse_args(argv)

    harness.up()
    kubectl("apply", "-f", str(ROOT / "crds" / "modelservice.yaml"))
    kubectl(
        "wait", "--for=condition=Established", "crd/modelservices.serving.modelservice.io", "--timeout=60s"
    )
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    nodes = bench_nodes(args.count)
    kubectl("apply", "-f", "-", input_text="\n---\n".join(json.dumps(n) for n in nodes))
    kubectl("wait", "--for=condition=Ready", "node", "-l", "bench=operator", "--timeout=120s")

    log_path = harness.LOGS / f"operator-{namespace}.log"
    liveness = free_port()
    env = dict(os.environ, KUBECONFIG=str(harness.operator_kubeconfig()))
    worktree = None
    if args.operator_ref:
        # The same command from another commit's sources, shadowing the installed package.
        worktree = Path(tempfile.mkdtemp(prefix="operator-ref-"))
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.operator_ref],
                       check=True, capture_output=True)  # fmt: skip
        env["PYTHONPATH"] = str(worktree / "operator" / "src")
    if args.workers:
        env["MODELSERVICE_WORKERS"] = str(args.workers)
    with open(log_path, "wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "modelservice_operator", "run", "--all-namespaces", f"--liveness-port={liveness}",
             "--metrics-port=0"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or operator.poll() is not None:
                    raise SystemExit(f"the operator did not start; see {log_path}") from None
                time.sleep(0.2)
        idle_rss = peak_rss_mib(operator.pid)[1]
        idle_cpu = cpu_seconds(operator.pid)

        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"command: python -m bench.operator_scale {' '.join(argv or sys.argv[1:])}")
        print(f"operator: {'commit ' + args.operator_ref if args.operator_ref else 'this working tree'}")
        print(f"cluster: local control plane (tests/cluster), {len(nodes)} kwok nodes for the pods")
        began = datetime.datetime.now(datetime.UTC)
        started = asyncio.run(create_all(namespace, args.count, args.concurrency))
        created = time.monotonic() - started
        first_ready = None
        while True:
            ready, total = ready_count(namespace)
            elapsed = time.monotonic() - started
            if ready and first_ready is None:
                first_ready = elapsed
            if ready == args.count:
                break
            if elapsed > args.timeout:
                raise SystemExit(f"only {ready}/{total} Ready after {elapsed:.0f}s; see {log_path}")
            time.sleep(0.5)
        all_ready = time.monotonic() - started
        busy_cpu = cpu_seconds(operator.pid) - idle_cpu
        converged = datetime.datetime.now(datetime.UTC)
        time.sleep(10)  # the last Events and status writes land
        quiet_from = datetime.datetime.now(datetime.UTC)
        time.sleep(args.quiet_seconds)
        quiet_to = datetime.datetime.now(datetime.UTC)
        time.sleep(2)  # the audit log is written asynchronously
        peak, rss = peak_rss_mib(operator.pid)
        quiet_cpu = cpu_seconds(operator.pid) - idle_cpu - busy_cpu
        converging = operator_requests(began, converged)
        quiet = operator_requests(quiet_from, quiet_to)
    finally:
        # The namespace goes while the operator still runs (an older version's finalizers need it) and
        # kwok still manages the nodes (their pods need it); then the operator and the nodes.
        kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=600s")
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
        kubectl("delete", "node", "-l", "bench=operator", "--wait=false")
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False
            )

    n = args.count
    writes = sum(converging[v] for v in WRITE_VERBS)
    quiet_total = sum(quiet.values())
    quiet_writes = sum(quiet[v] for v in WRITE_VERBS)
    print(
        f"\n{n} ModelServices created in {created:.1f} s ({n / created:.0f}/s, {args.concurrency} in flight)"
    )
    print(f"  first Ready after          {first_ready:8.1f} s")
    print(f"  all Ready after            {all_ready:8.1f} s   (target 60 s)")
    print(
        f"  operator peak RSS          {peak:8.1f} MiB (idle before creation {idle_rss:.1f} MiB, now {rss:.1f}; target 300)"
    )
    print(
        f"  operator CPU time          {busy_cpu:8.1f} s until all Ready; {quiet_cpu:.1f} s in the quiet minute"
    )
    print(
        f"  operator requests while converging: {sum(converging.values())} ({sum(converging.values()) / n:.1f} per "
        f"ModelService), writes {writes} ({writes / n:.1f} per ModelService): {dict(converging)}"
    )
    print(
        f"  steady state over {args.quiet_seconds:.0f} s: {quiet_total / args.quiet_seconds:.2f} requests/s "
        f"(target < 1), {quiet_writes} writes (target 0): {dict(quiet)}"
    )
    print(f"  operator log: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
