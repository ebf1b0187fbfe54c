"""Where analysis samples come from: the runtime pods' own /metrics, through the API server's pod proxy.

**Why the pod proxy** (``/api/v1/namespaces/NS/pods/NAME:8501/proxy/metrics``) rather than pod IPs: it
works wherever the operator runs (in the cluster, or on a laptop against a remote cluster), needs no
network path from the operator to the pods (NetworkPolicies that only let the API server in still
work), and is authorized by RBAC (``pods/proxy`` get, in the chart). The cost is one proxied request per
pod per analysis interval (30 s by default) through the API server, which is small next to its watch
traffic; a cluster that runs Prometheus can point the analysis there instead (``provider: prometheus``).

Each analysis keeps the previous scrape of every pod in memory (the first scrape of a run is only the
baseline); an operator restart starts a fresh baseline, which costs one interval, never a wrong verdict.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from .analysis import ERROR, Measurement, Sample, Scrape, Thresholds, evaluate, parse_scrape, window
from .api import ModelServiceSpec, format_duration
from .context import ObservedChildren
from .naming import REVISION_LABEL
from .render.common import RUNTIME_PORT


class ProxyClient(Protocol):
    async def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str) -> str: ...


def thresholds(spec: ModelServiceSpec) -> Thresholds:
    a = spec.rollout.analysis
    return Thresholds(min_requests=a.min_requests, success_rate=a.success_rate,
                      max_success_rate_drop=a.max_success_rate_drop, latency_p99_ms=a.latency_p99_ms,
                      max_latency_ratio=a.max_latency_ratio)  # fmt: skip


def _ready_pods(observed: ObservedChildren, revision: str) -> list[str]:
    names = []
    for pod in observed.of_kind("Pod"):
        meta = pod.get("metadata", {})
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])  # fmt: skip
        if (
            ready
            and not meta.get("deletionTimestamp")
            and (meta.get("labels") or {}).get(REVISION_LABEL) == revision
        ):
            names.append(str(meta.get("name")))
    return sorted(names)


# Default queries for ``provider: prometheus``, over the runtime's metrics as the common
# ``kubernetes-pods`` scrape job labels them (namespace, and pod labels mapped with labelmap). Each
# template gets {{namespace}}, {{name}}, {{model}}, {{revision}} and {{interval}} (e.g. 30s).
_REVISION = 'namespace="{{namespace}}",serving_modelservice_io_revision="{{revision}}"'
DEFAULT_QUERIES = {
    "requests": f"sum(increase(modelservice_requests_total{{{_REVISION}}}[{{{{interval}}}}]))",
    "successRate": (
        f'sum(increase(modelservice_requests_total{{{_REVISION},status=~"[23].."}}[{{{{interval}}}}])) / '
        f"sum(increase(modelservice_requests_total{{{_REVISION}}}[{{{{interval}}}}]))"
    ),
    "latencyP99Ms": (
        "1000 * histogram_quantile(0.99, sum by (le) "
        f"(rate(modelservice_request_duration_seconds_bucket{{{_REVISION}}}[{{{{interval}}}}])))"
    ),
}


def render_query(template: str, spec: ModelServiceSpec, revision: str) -> str:
    values = {"namespace": spec.namespace, "name": spec.name, "model": spec.model.name, "revision": revision,
              "interval": format_duration(spec.rollout.analysis.interval_seconds)}  # fmt: skip
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template


class PrometheusError(Exception):
    pass


async def _prometheus_scalar(session: aiohttp.ClientSession, address: str, query: str) -> float | None:
    """The query's single value (None: no series, or NaN such as 0/0)."""
    async with session.get(f"{address}/api/v1/query", params={"query": query}) as response:
        body = await response.json(content_type=None)
        if response.status != 200 or body.get("status") != "success":
            raise PrometheusError(f"{response.status} {body.get('error', '')}".strip())
    result = body.get("data", {}).get("result") or []
    if not result:
        return None
    value = float(result[0]["value"][1]) if body["data"].get("resultType") == "vector" else float(result[1])
    return None if math.isnan(value) else value


class PrometheusSource:
    """``provider: prometheus``: each measurement is three instant queries per revision over the last
    interval; no baseline is needed."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    async def sample(self, session: aiohttp.ClientSession, spec: ModelServiceSpec, revision: str) -> Sample:
        analysis = spec.rollout.analysis
        queries = {**DEFAULT_QUERIES, **analysis.prometheus_queries}
        values = {
            check: await _prometheus_scalar(session, analysis.prometheus_address,
                                            render_query(queries[check], spec, revision))
            for check in ("requests", "successRate", "latencyP99Ms")
        }  # fmt: skip
        requests = values["requests"] or 0.0
        rate = values["successRate"]
        if rate is None and requests > 0:
            rate = 0.0  # no 2xx/3xx series at all: the numerator is empty, not unknown
        return Sample(requests, rate, values["latencyP99Ms"])

    async def measure(self, spec: ModelServiceSpec, status: Mapping[str, Any]) -> Measurement:
        canary_revision = str((status.get("rollout") or {}).get("revision") or "")
        stable_revision = str((status.get("stable") or {}).get("revision") or "")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                canary = await self.sample(session, spec, canary_revision)
                stable = await self.sample(session, spec, stable_revision)
        except (PrometheusError, aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            return Measurement(ERROR, f"Prometheus at {spec.rollout.analysis.prometheus_address} failed: "
                               f"{exc or type(exc).__name__}")  # fmt: skip
        return evaluate(thresholds(spec), canary, stable, spec.rollout.analysis.interval_seconds)


class MetricsSource:
    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.prometheus = PrometheusSource()
        # (namespace, name, revision, attempt, analysis key) -> (when, {pod: scrape})
        self._last: dict[tuple[str, str, str, int, str], tuple[float, dict[str, Scrape]]] = {}

    async def _scrape(
        self, client: ProxyClient, namespace: str, pods: list[str], model: str
    ) -> dict[str, Scrape]:
        async def one(pod: str) -> tuple[str, Scrape | None]:
            try:
                text = await asyncio.wait_for(
                    client.pod_proxy_get(namespace, pod, RUNTIME_PORT, "/metrics"), self.timeout
                )
                return pod, parse_scrape(text, model)
            except Exception:
                return pod, None

        results = await asyncio.gather(*(one(pod) for pod in pods))
        return {pod: scrape for pod, scrape in results if scrape is not None}

    async def measure(self, client: ProxyClient, spec: ModelServiceSpec, observed: ObservedChildren,
                      status: Mapping[str, Any], key: str, now: float) -> Measurement | None:  # fmt: skip
        """One measurement of the canary against the stable since this analysis' last scrape; None for
        the first scrape (the baseline)."""
        if spec.rollout.analysis.provider == "prometheus":
            return await self.prometheus.measure(spec, status)
        rollout: Mapping[str, Any] = status.get("rollout") or {}
        canary_revision = str(rollout.get("revision") or "")
        stable_revision = str((status.get("stable") or {}).get("revision") or "")
        attempt = int(rollout.get("attempt") or 0)
        canary_pods = _ready_pods(observed, canary_revision)
        stable_pods = _ready_pods(observed, stable_revision)
        # Over TLS the API server's pod proxy speaks HTTPS to the pods: "https:<pod>".
        prefix = "https:" if spec.runtime.tls_secret else ""
        pods = [prefix + pod for pod in canary_pods + stable_pods]
        scraped = {pod.removeprefix(prefix): scrape for pod, scrape in
                   (await self._scrape(client, spec.namespace, pods, spec.model.name)).items()}  # fmt: skip
        memory = (spec.namespace, spec.name, canary_revision, attempt, key)
        for other in [k for k in self._last if k[:2] == memory[:2] and k[2:4] != memory[2:4]]:
            del self._last[other]  # a new revision or attempt: older baselines are useless
        previous = self._last.get(memory)
        self._last[memory] = (now, scraped)
        if canary_pods and not any(pod in scraped for pod in canary_pods):
            return Measurement(ERROR, f"could not scrape /metrics of the canary pods {', '.join(canary_pods)} "
                               "through the API server's pod proxy")  # fmt: skip
        if previous is None:
            return None
        since, before = previous
        canary = window({p: before[p] for p in canary_pods if p in before},
                        {p: scraped[p] for p in canary_pods if p in scraped})  # fmt: skip
        stable = window({p: before[p] for p in stable_pods if p in before},
                        {p: scraped[p] for p in stable_pods if p in scraped})  # fmt: skip
        return evaluate(thresholds(spec), canary, stable, now - since)

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self._last if k[:2] == (namespace, name)]:
            del self._last[key]
