"""Kubernetes probes on the Open Inference Protocol's paths.

``/v2/health/live`` answers as long as the worker answers at all (liveness must not restart a pod that
is merely loading a big model: the startup probe covers that). ``/v2/health/ready`` is 200 only while
every configured model has an AVAILABLE version, so a Service never routes to a pod that would 404.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app

from .client import EngineClient
from .errors import ServingError

blueprint = Blueprint("health", __name__)


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


@blueprint.get("/v2/health/live")
def live() -> Response:
    return _json({"live": True})


@blueprint.get("/v2/health/ready")
def ready() -> Response:
    plane: EngineClient = current_app.extensions["modelservice.dataplane"]
    if current_app.extensions.get("modelservice.draining"):
        return _json({"ready": False, "error": "server is shutting down"}, 503)
    try:
        names, waiting = plane.readiness()
    except ServingError as exc:  # the model process is down or restarting
        return _json({"ready": False, "error": exc.message}, 503)
    if waiting or not names:
        return _json({"ready": False, "error": f"models not ready: {', '.join(waiting)}"}, 503)
    return _json({"ready": True})
