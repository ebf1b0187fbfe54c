"""TensorFlow Serving's REST API (``/v1/...``): a thin layer of decode -> dataplane -> encode.

Routing follows ``http_rest_api_util.cc``: one dispatcher for everything under ``/v1/`` matches TF
Serving's case-insensitive path regexes, so odd paths get TF Serving's answers ("Malformed request: ..."),
and errors are checked in TF Serving's order (body first, then the model).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, request

from .. import metrics, offload
from ..client import EngineClient
from ..errors import FailedPrecondition, InvalidArgument
from ..logs import current_request
from ..response_cache import request_digest
from . import tensors
from .limits import enforce_rate_limit, request_body
from .rapidjson import json_bytes, parse_json_body, value_to_string

blueprint = Blueprint("tfserving", __name__)

# http_rest_api_util.cc's kPredictionApiGegex and kModelStatusApiRegex ("(?i)..."); RE2's \d is ASCII.
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1
CACHE_API = "v1:predict"


@dataclass(frozen=True)
class ModelInfo:
    """What ``ParseModelInfo`` reads from a path: model name and label percent-decoded, the version, and
    the method (POST) or the sub-resource (GET; "" or "metadata") as written."""

    model_name: str
    model_version: int | None
    model_version_label: str | None
    method: str
    model_subresource: str


def parse_model_info(http_method: str, request_path: str) -> ModelInfo | None:
    """``ParseModelInfo`` (http_rest_api_util.cc): None when the path is not one of TF Serving's for this
    HTTP method (TF Serving's ``parse_successful`` false: "Malformed request"); InvalidArgument when it is
    but its version does not fit an int64."""
    if http_method == "POST":
        match = _PREDICT_PATH.fullmatch(request_path)
        if match is None:
            return None
        name, version_text, label, method = match.groups()
        subresource = ""
    elif http_method == "GET":
        match = _STATUS_PATH.fullmatch(request_path)
        if match is None:
            return None
        name, version_text, label, subresource = match.groups()
        method = ""
    else:
        return None
    return ModelInfo(
        model_name=urllib.parse.unquote(name or ""),
        model_version=_version(version_text),
        model_version_label=_decoded(label),
        method=method,
        model_subresource=subresource or "",
    )


def json_response(text: str | bytes, status: int = 200) -> Response:
    return Response(
        json_bytes(text) if isinstance(text, str) else text, status=status, mimetype="application/json"
    )


def dataplane() -> EngineClient:
    plane: EngineClient = current_app.extensions["modelservice.dataplane"]
    return plane


def parse_json_object(body: bytes) -> dict[str, Any]:
    doc = parse_json_body(body)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def _version(text: str | None) -> int | None:
    """``absl::SimpleAtoi`` into an int64."""
    if not text:
        return None
    version = int(text)
    if version > _INT64_MAX:
        raise InvalidArgument(f"Failed to convert version: {text} to numeric.")
    return version


def raw_path() -> str:
    """The path as the client sent it, still percent-encoded: TF Serving matches its regexes on that and
    decodes the model name and label afterwards (``DecodeArg``), so names may hold an encoded / or :."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        return urllib.parse.quote(request.path)
    path = str(raw).split("?", 1)[0]
    return urllib.parse.urlsplit(path).path if "://" in path else path


def _decoded(arg: str | None) -> str | None:
    return None if arg is None else urllib.parse.unquote(arg)


# "/V1" too: TF Serving matches its paths case-insensitively ("(?i)/v1/models..."); the regexes above
# match the rest of the path without regard to case.
@blueprint.route("/v1", defaults={"rest": ""}, methods=["GET", "POST", "OPTIONS"])
@blueprint.route("/v1/<path:rest>", methods=["GET", "POST", "OPTIONS"])
@blueprint.route("/V1", defaults={"rest": ""}, methods=["GET", "POST", "OPTIONS"])
@blueprint.route("/V1/<path:rest>", methods=["GET", "POST", "OPTIONS"])
def dispatch(rest: str) -> Response:
    path = raw_path()
    state = current_request()
    state.api = "v1"
    if request.method == "OPTIONS":
        # TF Serving answers a CORS preflight itself: empty 200 when an http(s) Origin is present.
        if re.search(r"https?://", request.headers.get("Origin", "")):
            return Response(b"", status=200)
        raise FailedPrecondition("Origin header is missing in CORS preflight")
    info = parse_model_info(request.method, path)
    if info is not None and request.method == "POST":
        name, version, label = info.model_name, info.model_version, info.model_version_label
        state.model, state.api = name, info.method.lower()
        enforce_rate_limit(name)
        # The method as written: ":PREDICT" matches the case-insensitive regex but no method.
        if info.method == "predict":
            return _predict(name, version, label)
        if info.method in ("classify", "regress"):
            return _classify_or_regress(name, version, label, info.method)
    elif info is not None:
        name, version, label = info.model_name, info.model_version, info.model_version_label
        if not name:
            if version is None and label is None and not info.model_subresource:
                state.api = "list"
                return _list_models()  # ours (KServe V1's list): TF Serving says "Missing model name"
            raise InvalidArgument("Missing model name in request.")
        state.model = name
        enforce_rate_limit(name)
        if info.model_subresource == "metadata":
            state.api = "metadata"
            return _metadata(name, version, label)
        state.api = "status"
        return _status(name, version, label)
    raise InvalidArgument(f"Malformed request: {request.method} {path}")


# ----------------------------------------------------------------------------------------------- predict


def _predict(name: str, version: int | None, label: str | None) -> Response:
    if request.mimetype == "multipart/form-data":
        return _predict_upload(name, version, label)
    body = request_body()
    heavy = len(body) > offload.HEAVY_BYTES
    doc = offload.runner(heavy)(parse_json_object, body)
    plane = dataplane()
    holder: dict[str, Any] = {}

    def input_specs(signature_name: str) -> dict[str, tensors.TensorSpec]:
        holder["model"] = model = plane.model(name, version, label)
        current_request().version = str(model.version)
        specs: dict[str, tensors.TensorSpec] = model.input_specs(signature_name)
        return specs

    # The digest writes the whole document canonically: a big one's is taken off the loop too.
    digest = (
        offload.runner(heavy)(request_digest, doc)
        if current_app.extensions.get("modelservice.cached")
        else None
    )
    signature = doc.get("signature_name", "")
    if digest is not None:
        # A hit skips decoding, the model and encoding: the body this request's twin got from the version
        # the request resolves to now (the model process resolves it, and keys by it).
        resolved, cached = plane.cache_get(CACHE_API, name, version, label, signature, digest)
        current_request().version = str(resolved)
        metrics.CACHE_REQUESTS.labels(name, "hit" if cached is not None else "miss").inc()
        current_request().cache = "hit" if cached is not None else "miss"
        if cached is not None:
            return json_response(cached)
    may_have_bools = b"true" in body or b"false" in body
    if heavy:  # the specs come from the model process: asked here, on the loop, then decoded in a thread
        specs = input_specs(tensors.signature_name_of(doc))
        signature_name, inputs, fmt = offload.runner(heavy)(
            tensors.decode_predict_request, doc, lambda _: specs, may_have_bools
        )
    else:
        signature_name, inputs, fmt = tensors.decode_predict_request(doc, input_specs, may_have_bools)
    served, outputs = plane.predict_served(holder["model"], signature_name, inputs)
    text = offload.runner(offload.heavy_outputs(outputs))(tensors.encode_predict_response, outputs, fmt)
    data = json_bytes(text)
    if digest is not None:  # under the version that computed it, whichever the request resolved to
        plane.cache_put(CACHE_API, name, served, signature, digest, data)
    return json_response(data)


def _predict_upload(name: str, version: int | None, label: str | None) -> Response:
    """``multipart/form-data``: each uploaded file is one instance, its raw bytes the string input."""
    files = [f for _, f in request.files.items(multi=True)]
    if not files:
        raise InvalidArgument("multipart/form-data request has no file parts to use as instances")
    signature_name = request.form.get("signature_name", "")
    plane = dataplane()
    model = plane.model(name, version, label)
    current_request().version = str(model.version)
    specs = model.input_specs(signature_name)
    string_inputs = [s for s in specs.values() if s.dtype == tensors.DT_STRING]
    if len(specs) != 1 or not string_inputs:
        described = ", ".join(
            f"{s.key} ({tensors.dtype_name(s.dtype)})" for s in sorted(specs.values(), key=lambda s: s.key)
        )
        raise InvalidArgument(
            "multipart/form-data uploads need a signature with a single string input; signature "
            f"'{signature_name or 'serving_default'}' has inputs: {described}"
        )
    spec = string_inputs[0]
    array: np.ndarray = np.empty(len(files), dtype=object)
    array[:] = [f.read() for f in files]
    if spec.shape is not None and len(spec.shape) == 2 and spec.shape[1] in (1, -1):
        array = array.reshape(len(files), 1)
    outputs = plane.predict(model, signature_name, {spec.key: array})
    return json_response(tensors.encode_predict_response(outputs, tensors.Format.ROW))


# ----------------------------------------------------------------------------------- classify / regress


def _classify_or_regress(name: str, version: int | None, label: str | None, method: str) -> Response:
    body = request_body()
    doc = offload.runner(len(body) > offload.HEAVY_BYTES)(parse_json_object, body)
    plane = dataplane()
    # The examples are built where TensorFlow's protos are: in the model process.
    if method == "classify":
        served, results = plane.classify(name, version, label, doc)
        current_request().version = str(served)
        return json_response(tensors.encode_classification(results))
    served, values = plane.regress(name, version, label, doc)
    current_request().version = str(served)
    return json_response(tensors.encode_regression(values))


# ------------------------------------------------------------------------------------ status / metadata


def _status(name: str, version: int | None, label: str | None) -> Response:
    return json_response(dataplane().tfs_status(name, version, label))


def _metadata(name: str, version: int | None, label: str | None) -> Response:
    served, text = dataplane().tfs_metadata(name, version, label)
    current_request().version = str(served)
    return json_response(text)


def _list_models() -> Response:
    """``GET /v1/models``: KServe V1's model list (TF Serving itself answers 400 here)."""
    available = dataplane().available()
    models = [
        {"name": name, "versions": [str(v) for v in versions], "ready": bool(versions)}
        for name, versions in sorted(available.items())
    ]
    body = {"models": [m["name"] for m in models], "model_details": models}
    return json_response(json.dumps(body, indent=4))
