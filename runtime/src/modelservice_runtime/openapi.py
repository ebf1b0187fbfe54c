"""The OpenAPI 3 document served at ``/openapi.json``, and the ``/docs`` page that renders it.

The page is a packaged static file (no CDN: pods often have no internet) that reads ``/openapi.json``.
A test checks that every route the app registers is described here, so the two cannot drift apart.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify

from . import __version__

blueprint = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    described = {
        400: "Bad request: malformed JSON, wrong dtype or shape, unknown signature or label",
        404: "Unknown model or version",
        413: "Request body larger than --max_request_bytes",
        503: "Model not ready",
        504: "Deadline (--rest_api_timeout_in_ms) exceeded",
    }
    out: dict[str, Any] = {"200": ok}
    for code in codes:
        out[str(code)] = {
            "description": described[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


def _json_ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _model_params(with_version: bool = False, with_label: bool = False) -> list[dict[str, Any]]:
    params = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "Served model name"}]  # fmt: skip
    if with_version:
        params.append({"name": "version", "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": 0}, "description": "Model version"})  # fmt: skip
    if with_label:
        params.append({"name": "label", "in": "path", "required": True, "schema": {"type": "string"},
                       "description": "Version label from the model config file"})  # fmt: skip
    return params


def _variants(suffix: str, operation: dict[str, Any], method: str) -> dict[str, Any]:
    """The same operation on /v1/models/{m}, .../versions/{v} and .../labels/{l}."""
    paths = {}
    for prefix, version, label in (
        ("/v1/models/{model}", False, False),
        ("/v1/models/{model}/versions/{version}", True, False),
        ("/v1/models/{model}/labels/{label}", False, True),
    ):
        op = dict(operation)
        op["parameters"] = _model_params(version, label)
        op["operationId"] = operation["operationId"] + (
            "ByVersion" if version else "ByLabel" if label else ""
        )
        paths[prefix + suffix] = {method: op}
    return paths


def build_document() -> dict[str, Any]:
    predict_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "Each file part is one instance (raw bytes)"},
                        "signature_name": {"type": "string"},
                    },
                }
            },
        },
    }  # fmt: skip
    examples_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExamplesRequest"}}},
    }
    paths: dict[str, Any] = {}
    paths.update(_variants("", {
        "summary": "Model version status (TF Serving GetModelStatus)", "operationId": "getModelStatus",
        "tags": ["TensorFlow Serving"],
        "responses": _responses(_json_ok("Status of each version, newest first",
                                         {"$ref": "#/components/schemas/ModelStatus"}), 400, 404),
    }, "get"))  # fmt: skip
    paths.update(_variants("/metadata", {
        "summary": "Signatures of a model version (TF Serving GetModelMetadata)",
        "operationId": "getModelMetadata", "tags": ["TensorFlow Serving"],
        "responses": _responses(_json_ok("model_spec and signature_def map", {"type": "object"}), 400, 404),
    }, "get"))  # fmt: skip
    paths.update(_variants(":predict", {
        "summary": "Run a signature on row (instances) or columnar (inputs) tensors",
        "operationId": "predict", "tags": ["TensorFlow Serving"], "requestBody": predict_body,
        "responses": _responses(_json_ok("predictions (row) or outputs (columnar)",
                                         {"$ref": "#/components/schemas/PredictResponse"}),
                                400, 404, 413, 503, 504),
    }, "post"))  # fmt: skip
    for method, summary in (("classify", "Classify tf.Examples"), ("regress", "Regress tf.Examples")):
        paths.update(_variants(f":{method}", {
            "summary": summary, "operationId": method, "tags": ["TensorFlow Serving"],
            "requestBody": examples_body,
            "responses": _responses(_json_ok("results", {"$ref": "#/components/schemas/ResultsResponse"}),
                                    400, 404, 413, 503, 504),
        }, "post"))  # fmt: skip
    paths["/v1/models"] = {"get": {
        "summary": "List served models (KServe V1)", "operationId": "listModels", "tags": ["TensorFlow Serving"],
        "responses": {"200": _json_ok("Model names", {"type": "object", "properties": {
            "models": {"type": "array", "items": {"type": "string"}}}})},
    }}  # fmt: skip
    paths["/v2/health/live"] = {"get": {
        "summary": "Liveness probe", "operationId": "serverLive", "tags": ["Health"],
        "responses": {"200": _json_ok("The server is live", {"type": "object"})},
    }}  # fmt: skip
    paths["/v2/health/ready"] = {"get": {
        "summary": "Readiness probe: every model has an AVAILABLE version", "operationId": "serverReady",
        "tags": ["Health"],
        "responses": {"200": _json_ok("Ready", {"type": "object"}),
                      "503": _json_ok("Not ready; the error names the models still loading", {"type": "object"})},
    }}  # fmt: skip
    for path, op_id in (("/metrics", "metrics"), ("/monitoring/prometheus/metrics", "metricsTfServing")):
        paths[path] = {"get": {
            "summary": "Prometheus metrics, merged across workers", "operationId": op_id, "tags": ["Monitoring"],
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }}  # fmt: skip
    paths["/openapi.json"] = {"get": {
        "summary": "This document", "operationId": "openapi", "tags": ["Docs"],
        "responses": {"200": _json_ok("OpenAPI 3 document", {"type": "object"})},
    }}  # fmt: skip
    paths["/docs"] = {"get": {
        "summary": "API documentation page", "operationId": "docs", "tags": ["Docs"],
        "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }}  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ModelService runtime",
            "version": __version__,
            "description": "TensorFlow Serving's REST API on Flask and Gunicorn. Bodies and errors follow "
            "TF Serving's wire format; every error is {\"error\": \"message\"}.",
        },
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "PredictRequest": {"type": "object", "properties": {
                "signature_name": {"type": "string", "description": "Default: serving_default"},
                "instances": {"type": "array", "description": "Row format: one entry per example; objects "
                              "for named inputs; {\"b64\": ...} for binary strings"},
                "inputs": {"description": "Columnar format: a tensor, or an object of named tensors"},
            }},
            "PredictResponse": {"type": "object", "properties": {
                "predictions": {"type": "array"}, "outputs": {}}},
            "ExamplesRequest": {"type": "object", "required": ["examples"], "properties": {
                "signature_name": {"type": "string"},
                "context": {"type": "object", "description": "Features shared by every example"},
                "examples": {"type": "array", "items": {"type": "object"}}}},
            "ResultsResponse": {"type": "object", "properties": {"results": {"type": "array"}}},
            "ModelStatus": {"type": "object", "properties": {"model_version_status": {"type": "array", "items": {
                "type": "object", "properties": {
                    "version": {"type": "string"},
                    "state": {"type": "string", "enum": ["UNKNOWN", "START", "LOADING", "AVAILABLE",
                                                         "UNLOADING", "END"]},
                    "status": {"type": "object", "properties": {"error_code": {"type": "string"},
                                                                "error_message": {"type": "string"}}}}}}}},
        }},
    }  # fmt: skip


@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(build_document())


@blueprint.get("/docs")
def docs() -> Response:
    page = resources.files("modelservice_runtime").joinpath("static/docs.html").read_text()
    return Response(page, mimetype="text/html")
