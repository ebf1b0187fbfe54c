"""The operator's foundation against the real control plane: watches, repairs, names, RBAC, credentials.

Each test is something a user did to a real cluster that the previous operator got wrong.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import harness
from tests.e2e.conftest import ROOT, Kubectl, OperatorProcess, eventually, stable_deployment, token_kubeconfig
from tests.e2e.test_operator_e2e import MS_LABEL, condition, example, ready

pytestmark = pytest.mark.e2e
# Repairs come from watch events: within 2 s of the change, plus the apply and the child controller.
REPAIR_SECONDS = 4.0


def exists(kubectl: Kubectl, kind: str, name: str) -> bool:
    return kubectl.run("get", kind, name, check=False).returncode == 0


def timed(check: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    eventually(check, timeout=timeout, interval=0.1, what=what)
    return time.monotonic() - started


def test_a_deleted_child_is_recreated_from_its_watch_event_within_seconds(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    kubectl.apply(ROOT / "examples" / "iris-cpu.yaml")
    ready(kubectl, "iris")
    kubectl.run("delete", "service", "iris", "--wait=true")
    elapsed = timed(lambda: exists(kubectl, "service", "iris"), 30, "the Service to come back")
    assert elapsed < REPAIR_SECONDS, f"Service recreated after {elapsed:.1f}s"
    deployment = stable_deployment(kubectl, "iris")["metadata"]["name"]
    kubectl.run("delete", "deployment", deployment, "--wait=true")
    elapsed = timed(lambda: exists(kubectl, "deployment", deployment), 30, "the Deployment to come back")
    assert elapsed < REPAIR_SECONDS, f"Deployment recreated after {elapsed:.1f}s"
    ready(kubectl, "iris", timeout=60)


def test_hand_edits_of_a_child_are_taken_back_and_status_never_lies(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    kubectl.apply(ROOT / "examples" / "iris-cpu.yaml")
    ready(kubectl, "iris")
    # A port changed by hand: server-side apply alone would now fail with a duplicate port name.
    kubectl.run("patch", "service", "iris", "--type=json",
                "-p", '[{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]')  # fmt: skip
    ports = lambda: [p["port"] for p in kubectl.json("get", "service", "iris")["spec"]["ports"]]  # noqa: E731
    elapsed = timed(lambda: ports() == [8501, 8500], 30, "port 8501 back (iris-cpu serves gRPC on 8500 too)")
    assert elapsed < REPAIR_SECONDS, f"port repaired after {elapsed:.1f}s"
    # A selector key added by hand selects no pod: repaired, and Ready says so while it lasts.
    kubectl.run(
        "patch", "service", "iris", "--type=merge", "-p", '{"spec": {"selector": {"tampered": "yes"}}}'
    )
    selector = lambda: kubectl.json("get", "service", "iris")["spec"]["selector"]  # noqa: E731
    elapsed = timed(lambda: "tampered" not in selector(), 30, "the selector restored")
    assert elapsed < REPAIR_SECONDS, f"selector repaired after {elapsed:.1f}s"
    # Replicas of the Deployment are the operator's alone.
    replicas = kubectl.json("get", "ms", "iris")["spec"]["replicas"]
    deployment = stable_deployment(kubectl, "iris")["metadata"]["name"]
    kubectl.run("scale", "deployment", deployment, f"--replicas={replicas + 2}")
    deployment_replicas = lambda: kubectl.json("get", "deployment", deployment)["spec"]["replicas"]  # noqa: E731
    elapsed = timed(lambda: deployment_replicas() == replicas, 30, f"replicas back to {replicas}")
    assert elapsed < REPAIR_SECONDS
    # Back to Available once the Deployment has settled at the operator's replicas. Read from the status,
    # not with `kubectl wait`: that returns on the Ready=True written before the scale, which may turn
    # RollingOut (False) for the moment the Deployment is scaled back.
    eventually(
        lambda: (c := condition(kubectl.json("get", "ms", "iris"), "Ready"))["status"] == "True"
        and c["reason"] == "Available",
        timeout=60, what="Ready=True, Available",
    )  # fmt: skip
    events = kubectl.json(
        "get", "events", "--field-selector", "involvedObject.name=iris,involvedObject.kind=ModelService"
    )
    messages = [e["message"] for e in events["items"]]
    assert any("changed by someone else" in m for m in messages), messages


def test_names_that_map_to_the_same_dns_label_get_distinct_children(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    names = ["a.b", "a-b", "9lives", "m" * 200 + ".long"]
    for name in names:
        doc = yaml.safe_load(example("iris-cpu"))
        doc["metadata"]["name"] = name
        doc["spec"]["model"]["name"] = "iris"
        doc["spec"].pop("rollout", None)  # defaulted by the CRD: the STRATEGY column is never empty
        kubectl.apply(yaml.safe_dump(doc))
    services = set()
    for name in names:
        ms = ready(kubectl, name)
        assert ms["spec"]["rollout"] == {"strategy": "rolling", "maxSurge": "25%", "maxUnavailable": 0,
                                         "progressDeadlineSeconds": 600, "progressDeadlineAbort": False,
                                         "capacityPolicy": "Auto"}  # fmt: skip
        url = ms["status"]["url"]
        service = url.split("//")[1].split(".")[0]
        assert (
            kubectl.json("get", "service", service)["metadata"]["ownerReferences"][0]["uid"]
            == ms["metadata"]["uid"]
        )
        services.add(service)
    assert len(services) == len(names)
    assert "a-b" in services and any(s.startswith("a-b-") for s in services)


def _chart_rbac(namespace: str, without: str) -> list[dict[str, Any]]:
    """The chart's own ClusterRoles for a ServiceAccount in ``namespace``, without writes of one resource."""
    rendered = subprocess.run(
        [str(harness.binary("helm")), "template", "op", str(ROOT / "charts" / "modelservice-operator"),
         "--namespace", namespace, "--kube-version=1.34.4"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    objects = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            continue
        doc["metadata"]["name"] = f"{namespace}-{doc['metadata']['name']}"
        if doc["kind"] == "ClusterRole":
            for rule in doc["rules"]:
                if without in rule["resources"]:
                    rule["verbs"] = ["get", "list", "watch"]  # it can see them, not write them
        else:
            doc["roleRef"]["name"] = f"{namespace}-{doc['roleRef']['name']}"
        objects.append(doc)
    return objects


def test_a_missing_rbac_rule_is_explained_and_recovers_once_granted_without_a_spec_edit(
    cluster: Path, kubectl: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> None:
    namespace = kubectl.namespace or ""
    admin = Kubectl(cluster)
    admin.run("create", "serviceaccount", "op-modelservice-operator", f"--namespace={namespace}")
    rbac = _chart_rbac(namespace, without="horizontalpodautoscalers")
    admin.apply("\n---\n".join(json.dumps(o) for o in rbac))
    token = admin.run(
        "create", "token", "op-modelservice-operator", f"--namespace={namespace}", "--duration=1h"
    ).stdout.strip()
    operator.stop()
    restricted = OperatorProcess(
        tmp_path / "restricted.log", kubeconfig=token_kubeconfig(tmp_path / "kubeconfig", token)
    )
    restricted.start()
    try:
        kubectl.apply(ROOT / "examples" / "iris-autoscaling.yaml")
        ms = eventually(
            lambda: (m := kubectl.json("get", "ms", "iris-autoscaled")).get("status")
            and condition(m, "Ready")["reason"] == "Forbidden" and m,
            timeout=60, what="Ready=False, Forbidden",
        )  # fmt: skip
        message = condition(ms, "Ready")["message"]
        assert "horizontalpodautoscalers" in message and "grant it in the operator's Role" in message
        generation = ms["metadata"]["generation"]
        role = next(
            o for o in rbac if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith("operator")
        )
        for rule in role["rules"]:
            if "horizontalpodautoscalers" in rule["resources"]:
                rule["verbs"] = ["get", "list", "watch", "create", "patch", "update", "delete"]
        admin.apply(json.dumps(role))
        ms = ready(kubectl, "iris-autoscaled", timeout=120)  # backoff tops out at 60 s
        assert ms["metadata"]["generation"] == generation, "recovered without a spec edit"
        assert exists(kubectl, "hpa", "iris-autoscaled")
    finally:
        restricted.stop()
        operator.start()
        for obj in rbac:
            admin.run("delete", obj["kind"].lower(), obj["metadata"]["name"], "--wait=false", check=False)


def test_a_kubeconfig_split_over_two_files_with_an_exec_credential_plugin_works(
    kubectl: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> None:
    """What EKS, GKE and AKS kubeconfigs look like: credentials from a command, several $KUBECONFIG files."""
    calls = tmp_path / "plugin-calls"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
        "status": {"clientCertificateData": (harness.PKI / "operator.crt").read_text(),
                   "clientKeyData": (harness.PKI / "operator.key").read_text()},
    }  # fmt: skip
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(f"#!/bin/sh\necho called >> {calls}\ncat <<'JSON'\n{json.dumps(credential)}\nJSON\n")
    plugin.chmod(0o755)
    ca = base64.b64encode((harness.PKI / "ca.crt").read_bytes()).decode()
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "local", "cluster": {"server": harness.api_server_url(),
                                                   "certificate-authority-data": ca}}],
        "contexts": [{"name": "exec", "context": {"cluster": "local", "user": "exec-user"}}],
    }))  # fmt: skip
    users = tmp_path / "users.yaml"
    users.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "users": [{"name": "exec-user", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "interactiveMode": "Never"}}}],
    }))  # fmt: skip
    operator.stop()
    exec_operator = OperatorProcess(tmp_path / "exec.log", kubeconfig=f"{clusters}:{users}")
    exec_operator.start()
    try:
        kubectl.apply(ROOT / "examples" / "iris-cpu.yaml")
        ready(kubectl, "iris", timeout=90)
    finally:
        exec_operator.stop()
        operator.start()
    assert calls.read_text().count("called") >= 1, "the credential plugin never ran"


def test_operator_killed_mid_creation_of_ten_objects_converges_without_duplicates_or_orphans(
    kubectl: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> None:
    docs = []
    for i in range(10):
        doc = yaml.safe_load(example("iris-cpu"))
        doc["metadata"]["name"] = f"iris-{i}"
        doc["spec"]["replicas"] = 2
        docs.append(yaml.safe_dump(doc))
    operator.stop()
    try:
        second = OperatorProcess(tmp_path / "second.log")
        second.start()
        kubectl.apply("---\n".join(docs))
        eventually(
            lambda: len(kubectl.json("get", "deploy")["items"]) >= 1, interval=0.05, what="the first child"
        )
        second.kill()  # SIGKILL: no cleanup
        third = OperatorProcess(tmp_path / "third.log")
        third.start()
        try:
            uids = {
                f"iris-{i}": ready(kubectl, f"iris-{i}", timeout=120)["metadata"]["uid"] for i in range(10)
            }
        finally:
            third.stop()
    finally:
        operator.start()
    for kind in ("deploy", "svc", "pdb"):
        items = kubectl.json("get", kind, "-l", MS_LABEL)["items"]
        owners = [
            next(o["uid"] for o in i["metadata"]["ownerReferences"] if o.get("controller")) for i in items
        ]
        assert sorted(owners) == sorted(uids.values()), f"{kind}: one per ModelService, each owned"


def test_an_object_left_with_the_previous_versions_finalizer_can_still_be_deleted(
    kubectl: Kubectl, operator: OperatorProcess
) -> None:
    doc = yaml.safe_load(example("iris-cpu"))
    doc["metadata"]["finalizers"] = ["serving.modelservice.io/finalizer"]  # what the Kopf timers added
    kubectl.apply(yaml.safe_dump(doc))
    ready(kubectl, "iris")
    assert "finalizers" not in kubectl.json("get", "ms", "iris")["metadata"]
    kubectl.run("delete", "ms", "iris", "--wait=true", "--timeout=30s")


def test_with_a_lease_one_replica_reconciles_and_another_takes_over_when_it_dies(
    kubectl: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> None:
    namespace = kubectl.namespace or ""
    operator.stop()
    replicas = [
        OperatorProcess(tmp_path / f"replica-{i}.log", extra_args=["--peering=ms-e2e", f"--lease-namespace={namespace}"])
        for i in range(2)
    ]  # fmt: skip
    try:
        for replica in replicas:
            replica.start()
        kubectl.apply(ROOT / "examples" / "iris-cpu.yaml")
        ready(kubectl, "iris", timeout=60)
        holder = kubectl.json("get", "lease", "ms-e2e")["spec"]["holderIdentity"]
        leaders = [r for r in replicas if "Became the leader" in r.log_path.read_text()]
        assert len(leaders) == 1, [r.log_path.read_text()[-2000:] for r in replicas]
        follower = next(r for r in replicas if r is not leaders[0])
        assert "Created Deployment" not in follower.log_path.read_text()
        leaders[0].kill()  # SIGKILL: the lease is not released, it expires
        doc = yaml.safe_load(example("iris-cpu"))
        doc["metadata"]["name"] = "after-failover"
        kubectl.apply(yaml.safe_dump(doc))
        ready(kubectl, "after-failover", timeout=60)  # the Lease's 15 s, then the reconcile
        assert kubectl.json("get", "lease", "ms-e2e")["spec"]["holderIdentity"] != holder
        assert "Became the leader" in follower.log_path.read_text()
    finally:
        for replica in replicas:
            replica.stop()
        operator.start()


def test_kubectl_explain_documents_the_int_or_string_fields(kubectl: Kubectl) -> None:
    text = kubectl.run("explain", "modelservice.spec.rollout.maxSurge").stdout
    # kubectl prints <IntOrString> only for a $ref, which a CRD cannot have: the description says it.
    assert "IntOrString: extra pods" in text and "percentage" in text, text


def test_bindings_left_by_changes_made_while_no_operator_ran_are_deleted_when_one_starts(
    cluster: Path, kubectl: Kubectl, operator: OperatorProcess
) -> None:
    """A cluster-scoped ClusterRoleBinding cannot be owned by a ModelService, so garbage collection does
    not follow it: the operator deletes it on the DELETED event, and at start for the events it missed
    (a deletion; a deletion and a re-creation without Kubernetes authentication)."""
    admin = Kubectl(cluster)
    names = ("kept", "gone", "again")
    for name in names:
        kubectl.apply(
            example("iris-cpu", metadata__name=name, spec__runtime__auth={"kubernetes": {"enabled": True}})
        )
    bindings = {}
    for name in names:
        bindings[name] = eventually(
            lambda name=name: kubectl.json("get", "ms", name).get("status", {}).get("authDelegatorBinding"),
            timeout=60, what=f"{name}'s ClusterRoleBinding",
        )  # fmt: skip
    operator.stop()
    try:
        kubectl.run("delete", "ms", "gone", "again", "--wait=true", "--timeout=60s", timeout=90)
        kubectl.apply(example("iris-cpu", metadata__name="again"))
        assert exists(admin, "clusterrolebinding", bindings["gone"]), (
            "nothing deleted it while no operator ran"
        )
    finally:
        operator.start()
    for name in ("gone", "again"):
        eventually(lambda name=name: not exists(admin, "clusterrolebinding", bindings[name]), timeout=60,
                   what=f"ClusterRoleBinding {bindings[name]} deleted")  # fmt: skip
    assert exists(admin, "clusterrolebinding", bindings["kept"]), "a live ModelService's binding was deleted"
    ready(kubectl, "again")
