"""Analysis on real runtimes: real Gunicorn servers play the canary and stable pods, their /metrics are
read as the operator reads pods through the API server's proxy, and the verdicts come from real traffic."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.loadgen import free_port
from modelservice_operator.api import parse_spec
from modelservice_operator.context import ObservedChildren
from modelservice_operator.metrics_source import MetricsSource
from tests.integration.runtime.server import Server, start_server, stop

pytestmark = [pytest.mark.integration, pytest.mark.gunicorn]
ROW = {"instances": [[1.0, 2.0, 3.0, 4.0]]}


class PodProxy:
    """``pods/NAME:8501/proxy/metrics`` answered by the server standing in for each pod."""

    def __init__(self, servers: dict[str, Server]) -> None:
        self.servers = servers

    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str:
        response = await asyncio.to_thread(requests.get, self.servers[pod].url + path, timeout=5)
        response.raise_for_status()
        return response.text


@pytest.fixture(scope="module")
def servers(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    tmp = tmp_path_factory.mktemp("analysis")
    # The bad canary serves, under the same name, a model whose signature rejects the clients' rows.
    shutil.copytree(model_root / "multi" / "1", tmp / "bad" / "1")
    shutil.copytree(model_root / "linear" / "2", tmp / "good" / "2")
    started = {
        "stable-0": start_server(tmp, "--model_name=linear", f"--model_base_path={model_root / 'linear'}"),
        "bad-0": start_server(tmp, "--model_name=linear", f"--model_base_path={tmp / 'bad'}"),
        "good-0": start_server(tmp, "--model_name=linear", f"--model_base_path={tmp / 'good'}"),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            stop(server)


def pod(name: str, revision: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "labels": {"serving.modelservice.io/revision": revision}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}  # fmt: skip


def spec() -> Any:
    return parse_spec({"metadata": {"name": "linear", "namespace": "ml"},
                       "spec": {"model": {"storageUri": "pvc://models/linear"}, "rollout": {
                           "strategy": "canary", "analysis": {"minRequests": 20}}}})  # fmt: skip


def load(server: Server, count: int) -> None:
    for _ in range(count):
        requests.post(server.url + "/v1/models/linear:predict", json=ROW, timeout=10)


STATUS = {"rollout": {"revision": "c", "attempt": 0}, "stable": {"revision": "s"}}


async def measure_after(servers: dict[str, Server], canary: str, canary_requests: int) -> Any:
    source = MetricsSource()
    observed = ObservedChildren({"Pod": [pod(canary, "c"), pod("stable-0", "s")]})
    proxy = PodProxy(servers)
    await asyncio.to_thread(load, servers[canary], 2)  # what analysis.initialDelay is for: a cold first call
    assert await source.measure(proxy, spec(), observed, STATUS, "step-1", 1000.0) is None  # the baseline
    await asyncio.to_thread(load, servers[canary], canary_requests)
    await asyncio.to_thread(load, servers["stable-0"], 60)
    return await source.measure(proxy, spec(), observed, STATUS, "step-1", 1030.0)


@pytest.mark.asyncio
async def test_a_canary_that_rejects_the_clients_inputs_fails_with_the_numbers(
    servers: dict[str, Server],
) -> None:
    measurement = await measure_after(servers, "bad-0", 40)
    assert measurement.phase == "Failed"
    assert measurement.message == "canary success rate 0.00 < 0.99 over 30s (40 requests); stable 1.00"


@pytest.mark.asyncio
async def test_a_healthy_canary_succeeds_and_reports_its_p99(servers: dict[str, Server]) -> None:
    measurement = await measure_after(servers, "good-0", 40)
    assert measurement.phase == "Successful", measurement.message
    assert measurement.canary_requests == 40 and measurement.canary_p99_ms is not None


@pytest.mark.asyncio
async def test_an_idle_canary_is_inconclusive_not_failed(servers: dict[str, Server]) -> None:
    measurement = await measure_after(servers, "good-0", 3)
    assert measurement.phase == "Inconclusive"
    assert "3 requests in 30s, fewer than minRequests 20" in measurement.message


@pytest.mark.asyncio
async def test_an_unreachable_canary_is_an_error_measurement(servers: dict[str, Server]) -> None:
    source = MetricsSource(timeout=2)
    observed = ObservedChildren({"Pod": [pod("gone-0", "c"), pod("stable-0", "s")]})
    proxy = PodProxy(
        {**servers, "gone-0": Server(servers["good-0"].process, "http://127.0.0.1:9", Path("x"))}
    )
    measurement = await source.measure(proxy, spec(), observed, STATUS, "step-1", 1000.0)
    assert measurement is not None and measurement.phase == "Error" and "gone-0" in measurement.message


@pytest.fixture(scope="module")
def prometheus(servers: dict[str, Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus (Debian's package) scraping the runtimes every second, labelled as the
    kubernetes-pods job labels pods (namespace, and pod labels through labelmap)."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: make prometheus (or apt-get install prometheus)"
    tmp = tmp_path_factory.mktemp("prometheus")
    revisions = {"stable-0": "s", "bad-0": "c"}
    targets = "\n".join(
        f'      - targets: ["{servers[pod].url.removeprefix("http://")}"]\n'
        f"        labels: {{namespace: ml, pod: {pod}, serving_modelservice_io_revision: {revision}}}"
        for pod, revision in revisions.items()
    )
    config = tmp / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      f"scrape_configs:\n  - job_name: kubernetes-pods\n    static_configs:\n{targets}\n")  # fmt: skip
    address = f"127.0.0.1:{free_port()}"
    log = open(tmp / "prometheus.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address={address}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp / "prometheus.log").read_text()
            try:
                if requests.get(f"http://{address}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "Prometheus not ready in 60s"
            time.sleep(0.2)
        # Discovery hands targets to the scrape loops a few seconds after start: wait for both scraped.
        while True:
            targets = requests.get(f"http://{address}/api/v1/targets", timeout=2).json()["data"][
                "activeTargets"
            ]
            if len(targets) == 2 and all(t["health"] == "up" for t in targets):
                break
            assert time.monotonic() < deadline, f"targets not scraped in 60s: {targets}"
            time.sleep(0.2)
        yield f"http://{address}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def prometheus_spec(address: str) -> Any:
    return parse_spec({"metadata": {"name": "linear", "namespace": "ml"},
                       "spec": {"model": {"storageUri": "pvc://models/linear"}, "rollout": {
                           "strategy": "canary", "analysis": {"provider": "prometheus", "interval": "10s",
                                                              "minRequests": 10,
                                                              "prometheus": {"address": address}}}}})  # fmt: skip


@pytest.mark.asyncio
async def test_the_prometheus_provider_fails_a_canary_that_rejects_the_clients_inputs(
    servers: dict[str, Server], prometheus: str
) -> None:
    def steady_load() -> None:  # spread over several scrapes, as real traffic is
        for _ in range(8):
            load(servers["bad-0"], 5)
            load(servers["stable-0"], 5)
            time.sleep(0.5)

    await asyncio.to_thread(steady_load)
    await asyncio.sleep(2)  # the last scrapes
    measurement = await MetricsSource().measure(PodProxy(servers), prometheus_spec(prometheus),
                                                ObservedChildren(), STATUS, "step-1", 1000.0)  # fmt: skip
    assert measurement is not None and measurement.phase == "Failed", measurement
    assert measurement.message.startswith("canary success rate 0.00 < 0.99 over 10s")
    assert measurement.stable_success_rate == 1.0


@pytest.mark.asyncio
async def test_an_unreachable_prometheus_is_an_error_measurement(servers: dict[str, Server]) -> None:
    measurement = await MetricsSource().measure(PodProxy(servers), prometheus_spec("http://127.0.0.1:9"),
                                                ObservedChildren(), STATUS, "step-1", 1000.0)  # fmt: skip
    assert measurement is not None and measurement.phase == "Error"
    assert "Prometheus at http://127.0.0.1:9 failed" in measurement.message
