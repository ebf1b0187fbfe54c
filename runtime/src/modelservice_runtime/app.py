"""The Flask application factory.

``create_app(config=None, repository=None)`` builds an app; nothing is created at import time, so Gunicorn
builds it in each worker after the fork (TensorFlow must never initialise in the master) and tests build
it with a test config or a repository of their own. One error handler renders every error as TF Serving
does: ``{"error": "..."}`` with the status of the error's canonical code.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import metrics
from .config import RuntimeConfig, config_from_args, load_model_config_file
from .dataplane import AdmissionLimit, DataPlane
from .errors import ServingError
from .health import blueprint as health_blueprint
from .logs import request_id_var
from .openapi import blueprint as openapi_blueprint
from .protocols.rapidjson import error_body
from .protocols.tfserving import blueprint as tfserving_blueprint
from .protocols.v2 import blueprint as v2_blueprint
from .repository import ModelRepository

log = logging.getLogger(__name__)
access_log = logging.getLogger("modelservice_runtime.access")

MODEL_APIS = {"predict", "classify", "regress", "metadata", "status", "infer"}
RETRY_AFTER_SECONDS = "1"


def load_in_worker(config: RuntimeConfig) -> Any:
    """The repository's loader: imports TensorFlow on first use, in the worker, and sizes its threads."""

    def load(name: str, version: int, path: str) -> Any:
        from . import loader

        loader.configure_threads(config.intra_op_threads(), config.inter_op_threads())
        return loader.load_model(name, version, path, warmup=config.enable_model_warmup)

    return load


def build_repository(config: RuntimeConfig) -> ModelRepository:
    reader = None
    if config.model_config_file:
        path = config.model_config_file

        def reader() -> Any:
            return load_model_config_file(path)

    return ModelRepository(
        config.models,
        load=load_in_worker(config),
        poll_seconds=config.file_system_poll_wait_seconds,
        config_reader=reader,
        config_poll_seconds=config.model_config_file_poll_wait_seconds,
    )


class AdmissionMiddleware:
    """Admission control in front of Flask: every POST is a model call, admitted or refused right here.

    A refusal must cost far less than a served request, or shedding load saturates the CPU by itself, so
    the 429 is written as plain WSGI, before Flask builds a request context, routes or runs its hooks.
    """

    def __init__(self, app: Any, limit: AdmissionLimit) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        if not self.limit.try_acquire():
            api = "v2" if environ.get("PATH_INFO", "").startswith("/v2") else "v1"
            metrics.REQUESTS_SHED.labels(api).inc()
            body = self.limit.refusal
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Retry-After", RETRY_AFTER_SECONDS)]  # fmt: skip
            request_id = environ.get("HTTP_X_REQUEST_ID")
            if request_id:
                headers.append(("X-Request-ID", request_id))
            start_response("429 Too Many Requests", headers)
            return [body]
        try:
            return self.app(environ, start_response)
        finally:
            self.limit.release()


def _error(message: str, status: int) -> Response:
    return Response(error_body(message), status=status, mimetype="application/json")


def create_app(
    config: RuntimeConfig | None = None,
    repository: ModelRepository | None = None,
    start_repository: bool = True,
) -> Flask:
    config = config if config is not None else config_from_args([])
    if repository is None:
        repository = build_repository(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["modelservice.config"] = config
    app.extensions["modelservice.repository"] = repository
    app.extensions["modelservice.dataplane"] = DataPlane(
        repository,
        timeout_ms=config.rest_api_timeout_in_ms,
        threads=config.threads,
        batching=config.batching,
    )
    admission = AdmissionLimit(config.concurrency_limit())
    app.extensions["modelservice.admission"] = admission
    app.wsgi_app = AdmissionMiddleware(app.wsgi_app, admission)  # type: ignore[method-assign]
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

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        g.token = request_id_var.set(g.request_id)

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if response.status_code in (429, 503):
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        api = g.get("api")
        if api in MODEL_APIS:
            metrics.observe_request(
                g.get("model", ""), g.get("version", ""), api, response.status_code, elapsed
            )
        access_log.info(
            "Served %s %s with %d",
            request.method, request.path, response.status_code,
            extra={"method": request.method, "path": request.path, "status": response.status_code,
                   "duration_ms": round(elapsed * 1000, 3), "model": g.get("model")},
        )  # fmt: skip
        return response

    @app.teardown_request
    def reset_request_id(_: BaseException | None) -> None:
        token = g.pop("token", None)
        if token is not None:
            request_id_var.reset(token)

    @app.errorhandler(ServingError)
    def serving_error(exc: ServingError) -> Response:
        return _error(exc.message, exc.status)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> Response:
        return _error(
            f"Request body is larger than the limit of {config.max_request_bytes} bytes "
            "(--max_request_bytes)",
            413,
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _error(f"{exc.name}: {request.method} {request.path}", exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("Failed to serve %s %s", request.method, request.path)
        return _error(f"Internal error: {type(exc).__name__}: {exc}", 500)

    if start_repository:
        repository.start()
    return app
