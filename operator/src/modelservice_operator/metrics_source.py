"""Where analysis samples come from: the runtime pods' own /metrics, through the API server's pod proxy.

**Why the pod proxy** (``/api/v1/namespaces/NS/pods/NAME:8501/proxy/metrics``) rather than pod IPs: it
works wherever the operator runs (in the cluster, or on a laptop against a remote cluster), needs no
network path from the operator to the pods (NetworkPolicies that only let the API server in still
work), and is authorized by RBAC (``pods/proxy`` get, in the chart). The cost is one proxied request per
pod per analysis interval (30 s by default) through the API server, which is small next to its watch
traffic; a cluster that runs Prometheus can point the analysis there instead (not in this version).

Each analysis keeps the previous scrape of every pod in memory (the first scrape of a run is only the
baseline); an operator restart starts a fresh baseline, which costs one interval, never a wrong verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from .analysis import ERROR, Measurement, Scrape, Thresholds, evaluate, parse_scrape, window
from .api import ModelServiceSpec
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


class MetricsSource:
    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
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
        rollout: Mapping[str, Any] = status.get("rollout") or {}
        canary_revision = str(rollout.get("revision") or "")
        stable_revision = str((status.get("stable") or {}).get("revision") or "")
        attempt = int(rollout.get("attempt") or 0)
        canary_pods = _ready_pods(observed, canary_revision)
        stable_pods = _ready_pods(observed, stable_revision)
        scraped = await self._scrape(client, spec.namespace, canary_pods + stable_pods, spec.model.name)
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
