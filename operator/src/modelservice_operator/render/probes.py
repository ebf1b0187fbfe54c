"""Probes wired to the runtime's Open Inference Protocol health endpoints.

Startup gates everything until the model has loaded (its budget is spec.probes.startupTimeoutSeconds);
readiness means "every model AVAILABLE"; liveness only asks whether the server answers, so a slow model
load is never mistaken for a hung process.
"""

from __future__ import annotations

import math
from typing import Any

from ..api import ModelServiceSpec

STARTUP_PERIOD_SECONDS = 5


def render_probes(spec: ModelServiceSpec) -> dict[str, dict[str, Any]]:
    # With TLS the kubelet probes over HTTPS (it does not verify the certificate); probes need no key.
    scheme = {"scheme": "HTTPS"} if spec.runtime.tls_secret else {}

    def _http(path: str) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http", **scheme}}

    return {
        "startupProbe": {
            **_http("/v2/health/ready"),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 2,
            "failureThreshold": max(1, math.ceil(spec.startup_timeout_seconds / STARTUP_PERIOD_SECONDS)),
        },
        "readinessProbe": {
            **_http("/v2/health/ready"),
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            **_http("/v2/health/live"),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }
