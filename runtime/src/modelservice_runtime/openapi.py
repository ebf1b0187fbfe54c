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
        408: "Request body stopped arriving for --client_timeout_seconds (the connection closes)",
        413: "Request body larger than --max_request_bytes",
        429: "A model's RESOURCE_EXHAUSTED (Retry-After: 1)",
        503: "Overloaded (queueing delay above --max_queue_delay_ms), model not ready or its process "
        "restarting, batch queue full (max_enqueued_batches), or shutting down (Retry-After: 1)",
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
                                400, 404, 408, 413, 429, 503, 504),
    }, "post"))  # fmt: skip
    for method, summary in (("classify", "Classify tf.Examples"), ("regress", "Regress tf.Examples")):
        paths.update(_variants(f":{method}", {
            "summary": summary, "operationId": method, "tags": ["TensorFlow Serving"],
            "requestBody": examples_body,
            "responses": _responses(_json_ok("results", {"$ref": "#/components/schemas/ResultsResponse"}),
                                    400, 404, 408, 413, 503, 504),
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
    paths.update(_v2_paths())
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
            "ServerMetadata": {"type": "object", "properties": {
                "name": {"type": "string"}, "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}}}},
            "TensorMetadata": {"type": "object", "properties": {
                "name": {"type": "string"}, "datatype": {"type": "string", "enum": V2_DATATYPE_NAMES},
                "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1: any size"}}},
            "ModelMetadata": {"type": "object", "properties": {
                "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}}}},
            "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object", "properties": {
                    "signature_name": {"type": "string", "description": "Default: serving_default"},
                    "binary_data_output": {"type": "boolean"}}},
                "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "shape", "datatype"],
                    "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                                   "datatype": {"type": "string", "enum": V2_DATATYPE_NAMES},
                                   "parameters": {"type": "object", "properties": {
                                       "binary_data_size": {"type": "integer"}}},
                                   "data": {"type": "array", "description": "Row-major, flat or nested"}}}},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}}}},
            "InferResponse": {"type": "object", "properties": {
                "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "parameters": {"type": "object"}, "data": {"type": "array"}}}}}},
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


V2_DATATYPE_NAMES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                     "FP16", "FP32", "FP64", "BYTES"]  # fmt: skip


def _v2_paths() -> dict[str, Any]:
    """The Open Inference Protocol's routes, on /v2/models/{model} and .../versions/{version}."""
    paths: dict[str, Any] = {"/v2": {"get": {
        "summary": "Server metadata (name, version, protocol extensions)", "operationId": "serverMetadata",
        "tags": ["Open Inference Protocol"],
        "responses": {"200": _json_ok("Server metadata", {"$ref": "#/components/schemas/ServerMetadata"})},
    }}}  # fmt: skip
    binary_body = {"type": "string", "format": "binary", "description": "JSON header of "
                   "Inference-Header-Content-Length bytes, then the binary tensor data"}  # fmt: skip
    for prefix, with_version in (
        ("/v2/models/{model}", False),
        ("/v2/models/{model}/versions/{version}", True),
    ):
        suffix = "ByVersion" if with_version else ""
        params = _model_params(with_version)
        paths[prefix] = {"get": {
            "summary": "Model metadata: inputs and outputs with V2 datatypes and shapes",
            "operationId": "modelMetadata" + suffix, "tags": ["Open Inference Protocol"], "parameters": params,
            "responses": _responses(_json_ok("Model metadata", {"$ref": "#/components/schemas/ModelMetadata"}),
                                    400, 404, 503),
        }}  # fmt: skip
        paths[prefix + "/ready"] = {"get": {
            "summary": "Model readiness", "operationId": "modelReady" + suffix,
            "tags": ["Open Inference Protocol"], "parameters": params,
            "responses": {"200": _json_ok("Ready", {"type": "object"}),
                          "503": _json_ok("Loading", {"type": "object"}),
                          "404": {"description": "Unknown model or version",
                                  "content": {"application/json": {"schema": _ERROR}}}},
        }}  # fmt: skip
        paths[prefix + "/infer"] = {"post": {
            "summary": "Inference with JSON tensors or the binary tensor data extension",
            "operationId": "modelInfer" + suffix, "tags": ["Open Inference Protocol"], "parameters": params,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": binary_body}}},
            "responses": _responses({"description": "Outputs; binary ones follow the JSON header", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                "application/octet-stream": {"schema": binary_body}}}, 400, 404, 408, 413, 429, 503, 504),
        }}  # fmt: skip
    return paths


@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(build_document())


@blueprint.get("/docs")
def docs() -> Response:
    page = resources.files("modelservice_runtime").joinpath("static/docs.html").read_text()
    return Response(page, mimetype="text/html")
