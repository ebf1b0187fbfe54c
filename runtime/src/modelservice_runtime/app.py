"""The Flask application factory.

``create_app(config=None, repository=None)`` builds an app; nothing is created at import time, so Gunicorn
builds it in each worker after the fork. Under the supervisor (``MODELSERVICE_ENGINE_SOCKET`` set) the app
is HTTP and JSON only and sends every model operation to the pod's model process; otherwise (tests with a
repository of their own, ``flask run``) the same engine runs in-process. One error handler renders every error as TF Serving
does: ``{"error": "..."}`` with the status of the error's canonical code.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, RequestTimeout

from . import admission, metrics, offload
from .admission import QueueDelayShedder
from .client import EngineClient, LocalTransport
from .config import RuntimeConfig, config_from_args
from .dataplane import DataPlane
from .engine import SOCKET_ENV, Engine, build_repository
from .errors import Internal, ServingError
from .health import blueprint as health_blueprint
from .ipc import EngineTransports
from .logs import AccessLog, RequestState, current_request, new_request_id, request_state
from .openapi import blueprint as openapi_blueprint
from .protocols.rapidjson import error_body, json_bytes
from .protocols.tfserving import blueprint as tfserving_blueprint
from .protocols.v2 import blueprint as v2_blueprint
from .ratelimit import RateLimited, build_rate_limiter
from .repository import ModelRepository
from .response_cache import build_response_cache
from .security import IDENTITY_KEY, AuthMiddleware, build_authenticator

log = logging.getLogger(__name__)
access_log = AccessLog("modelservice_runtime.access")

MODEL_APIS = {"predict", "classify", "regress", "metadata", "status", "infer"}
RETRY_AFTER_SECONDS = "1"
CACHE_HEADER = "X-ModelService-Cache"  # hit | miss, on predict answers while the response cache is on


def _under_gevent() -> bool:
    """In a worker that gevent patched (Gunicorn's RuntimeWorker): its greenlets share one connection
    to each model process."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("socket"))


class SheddingMiddleware:
    """Overload control in front of Flask (``admission.py``): a request that waited too long in the
    worker's queue while the queue stands above target is refused right here, before Flask builds a
    request context, routes or runs its hooks, because a refusal must cost far less than a served
    request or shedding saturates the CPU by itself. Probes and ``/metrics`` (GETs) are never shed.
    """

    def __init__(self, app: Any, shedder: QueueDelayShedder, clock: Any = time.monotonic) -> None:
        self.app = app
        self.shedder = shedder
        self.clock = clock

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        queued = admission.queued_at()
        if queued is None or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        now = self.clock()
        sojourn = now - queued
        if self.shedder.admit(sojourn, now):
            return self.app(environ, start_response)
        api = "v2" if environ.get("PATH_INFO", "").startswith("/v2") else "v1"
        metrics.REQUESTS_SHED.labels(api).inc()
        body = error_body(
            f"Server overloaded: this request waited {sojourn * 1000:.0f} ms to be served and the queue "
            f"stays above its {self.shedder.target * 1000:.0f} ms target; retry with backoff"
        ).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Retry-After", RETRY_AFTER_SECONDS)]  # fmt: skip
        request_id = environ.get("HTTP_X_REQUEST_ID")
        if request_id:
            headers.append(("X-Request-ID", request_id))
        start_response("503 Service Unavailable", headers)
        return [body]


class RequestBookkeeping:
    """Around Flask, for every request it serves: the request id (``X-Request-ID`` or a new one, echoed
    back and carried by every log line), and when the response starts its headers (rate limit, cache,
    ``Retry-After`` on 429/503), its metrics and its access-log line. The views report the API, model
    and version on ``logs.current_request()``.

    WSGI rather than Flask's before/after/teardown hooks: the same work without a request-context proxy
    lookup per field, measured at ~8% of a worker's CPU for a one-row predict as hooks.
    """

    def __init__(self, app: Any, clock: Any = time.perf_counter) -> None:
        self.app = app
        self.clock = clock

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        state = RequestState(environ.get("HTTP_X_REQUEST_ID") or new_request_id(), self.clock())
        token = request_state.set(state)
        try:
            return self.app(environ, functools.partial(self.start_response, environ, state, start_response))
        finally:
            request_state.reset(token)

    def start_response(
        self,
        environ: dict[str, Any],
        state: RequestState,
        start_response: Any,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Any:
        code = int(status[:3])
        headers.append(("X-Request-ID", state.request_id))
        if state.rate is not None:
            headers.extend(state.rate.headers())
        if state.cache is not None:
            headers.append((CACHE_HEADER, state.cache))
        if code in (429, 503) and not any(name.lower() == "retry-after" for name, _ in headers):
            headers.append(("Retry-After", RETRY_AFTER_SECONDS))
        elapsed = self.clock() - state.started
        if state.api in MODEL_APIS:
            metrics.observe_request(state.model or "", state.version or "", state.api, code, elapsed)
        if access_log.enabled():
            method = environ.get("REQUEST_METHOD", "")
            # Werkzeug's request.path: PATH_INFO (WSGI's latin-1 text) as UTF-8, with one leading slash.
            path = "/" + environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace").lstrip("/")
            identity = environ.get(IDENTITY_KEY)
            access_log.served({
                "method": method, "path": path, "status": code, "duration_ms": round(elapsed * 1000, 3),
                "model": state.model, "client": identity.name if identity is not None and identity.name else None,
            })  # fmt: skip
        return start_response(status, headers, exc_info)


def _error(message: str, status: int) -> Response:
    return Response(json_bytes(error_body(message)), status=status, mimetype="application/json")


def create_app(
    config: RuntimeConfig | None = None,
    repository: ModelRepository | None = None,
    start_repository: bool = True,
) -> Flask:
    config = config if config is not None else config_from_args([])
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["modelservice.config"] = config
    socket_path = os.environ.get(SOCKET_ENV) if repository is None else None
    if socket_path:
        # Under the supervisor: the models live in the pod's model process; this worker holds none.
        # The worker enforces the request deadline: it stops waiting on the model process then (504).
        deadline = config.rest_api_timeout_in_ms / 1000.0 if config.rest_api_timeout_in_ms > 0 else None
        paths = socket_path.split(os.pathsep)  # one model process per GPU: one socket each
        transports = EngineTransports(paths, deadline, multiplexed=_under_gevent())
        app.extensions["modelservice.dataplane"] = EngineClient(transports)
    else:
        # In-process (tests, `flask run`): the same engine, called directly.
        if repository is None:
            repository = build_repository(config)
        engine = Engine(repository, DataPlane(repository, timeout_ms=config.rest_api_timeout_in_ms,
                                              threads=config.threads, batching=config.batching),
                        limiter=build_rate_limiter(config.rate_limit_requests_per_second, config.rate_limit_burst),
                        cache=build_response_cache(config.response_cache_bytes, config.response_cache_ttl_seconds))  # fmt: skip
        app.extensions["modelservice.repository"] = repository
        app.extensions["modelservice.dataplane"] = EngineClient(LocalTransport(engine))
    shedder = QueueDelayShedder(
        admission.target_for(config.rest_api_timeout_in_ms, config.max_queue_delay_ms)
    )
    app.extensions["modelservice.shedder"] = shedder
    plane: EngineClient = app.extensions["modelservice.dataplane"]
    authenticator = build_authenticator(config.api_keys_dir, plane.review if config.kubernetes_auth else None)
    app.extensions["modelservice.authenticator"] = authenticator
    app.extensions["modelservice.rate_limited"] = config.rate_limit_requests_per_second > 0
    app.extensions["modelservice.cached"] = config.response_cache_bytes > 0
    if authenticator.enabled:
        app.wsgi_app = AuthMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, authenticator, protect_metrics=config.auth_metrics
        )
    app.wsgi_app = RequestBookkeeping(app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = SheddingMiddleware(app.wsgi_app, shedder)  # type: ignore[method-assign]
    app.extensions[offload.EXTENSION] = offload.in_thread if _under_gevent() else offload.inline
    app.extensions["modelservice.draining"] = False
    app.register_blueprint(tfserving_blueprint)
    app.register_blueprint(v2_blueprint)
    app.register_blueprint(health_blueprint)
    app.register_blueprint(openapi_blueprint)

    @app.get("/metrics")
    @app.get("/monitoring/prometheus/metrics")
    def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    # TF Serving serves Prometheus only where --monitoring_config_file says; we serve both paths above
    # always, and the configured one too.
    if config.prometheus_path and config.prometheus_path not in (
        "/metrics",
        "/monitoring/prometheus/metrics",
    ):
        app.add_url_rule(config.prometheus_path, "configured_prometheus_metrics", prometheus_metrics)

    @app.errorhandler(ServingError)
    def serving_error(exc: ServingError) -> Response:
        if isinstance(exc, RateLimited):
            state = current_request()
            state.rate = exc.decision
            metrics.RATE_LIMITED.labels(state.model or "", exc.client).inc()
        return _error(exc.message, exc.status)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> Response:
        return _error(
            f"Request body is larger than the limit of {config.max_request_bytes} bytes "
            "(--max_request_bytes)",
            413,
        )

    @app.errorhandler(RequestTimeout)
    def body_timed_out(_: RequestTimeout) -> Response:
        return _error(
            f"Request body stopped arriving: no byte of it for {config.client_timeout_seconds:g}s "
            "(--client_timeout_seconds)",
            408,
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _error(f"{exc.name}: {request.method} {request.path}", exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("Failed to serve %s %s", request.method, request.path)
        return _error(Internal.of_bug(exc).message, 500)

    if start_repository and repository is not None:
        repository.start()
    return app
