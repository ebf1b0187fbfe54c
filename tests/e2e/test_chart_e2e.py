"""The Helm chart against the local control plane: lint, server-side dry run, a real install, and the
operator running with nothing but the chart's ServiceAccount credentials."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Kubectl, OperatorProcess, helm, stable_deployment, token_kubeconfig

pytestmark = pytest.mark.e2e
CHART = ROOT / "charts" / "modelservice-operator"
KUBE_VERSION = "1.34.4"


def test_chart_passes_helm_lint_strict(cluster: Path) -> None:
    helm("lint", "--strict", str(CHART), f"--kube-version={KUBE_VERSION}")


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "watch.clusterWide=false", "--set", "peering.enabled=true", "--set", "replicaCount=2"]],
    ids=["cluster-wide", "namespaced-ha"],
)
def test_rendered_chart_is_accepted_by_the_api_server(kubectl: Kubectl, values: list[str]) -> None:
    rendered = helm(
        "template",
        "ms",
        str(CHART),
        f"--namespace={kubectl.namespace}",
        f"--kube-version={KUBE_VERSION}",
        *values,
    )
    kubectl.run("apply", "--dry-run=server", "-f", "-", input_text=rendered.stdout)


@pytest.fixture()
def installed(kubectl: Kubectl) -> Iterator[str]:
    release = f"mso-{uuid.uuid4().hex[:6]}"
    helm("install", release, str(CHART), f"--namespace={kubectl.namespace}", "--set", "watch.clusterWide=false",
         "--wait", "--timeout=120s")  # fmt: skip
    yield release
    helm("uninstall", release, f"--namespace={kubectl.namespace}", check=False)


def test_helm_install_runs_and_the_operator_works_with_only_the_charts_rbac(
    kubectl: Kubectl, installed: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    namespace = kubectl.namespace or ""
    deployment = kubectl.json("get", "deploy", f"{installed}-modelservice-operator")
    assert deployment["status"]["availableReplicas"] == 1
    # The chart's ServiceAccount token, not cluster admin.
    token = kubectl.run(
        "create", "token", f"{installed}-modelservice-operator", "--duration=1h"
    ).stdout.strip()
    kubeconfig = token_kubeconfig(tmp_path / "sa.kubeconfig", token)
    operator.stop()  # the cluster-admin operator must not do the work for us
    scoped = OperatorProcess(tmp_path / "scoped.log", kubeconfig=kubeconfig, namespaces=[namespace])
    try:
        scoped.start()
        kubectl.apply(ROOT / "examples" / "iris-autoscaling.yaml")
        result = kubectl.run(
            "wait", "--for=condition=Ready", "ms/iris-autoscaled", "--timeout=120s", check=False
        )
        assert result.returncode == 0, (
            f"not Ready with the chart's RBAC:\n{scoped.log_path.read_text()[-4000:]}"
        )
        for kind in ("svc", "hpa", "pdb"):
            kubectl.run("get", kind, "iris-autoscaled")
        kubectl.run("get", "deploy", "-l", "serving.modelservice.io/name=iris-autoscaled")
        stable_deployment(kubectl, "iris-autoscaled")
        log = scoped.log_path.read_text()
        # A refusal reads "403 Forbidden: ..." (our API errors) or "forbidden" (the API server's message);
        # a log line's milliseconds may be 403 too ("13:29:00,403"), so the status is matched as a word.
        refusals = re.findall(r"(?<![,.\d])\b403\b|forbidden", log, flags=re.IGNORECASE)
        assert not refusals, log[-4000:]
    finally:
        scoped.stop()
        operator.start()
