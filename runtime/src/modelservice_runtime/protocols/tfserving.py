"""TensorFlow Serving's REST API (``/v1/...``): a thin layer of decode -> dataplane -> encode.

Routing follows ``http_rest_api_util.cc``: one dispatcher for everything under ``/v1/`` matches TF
Serving's case-insensitive path regexes, so odd paths get TF Serving's answers ("Malformed request: ..."),
and errors are checked in TF Serving's order (body first, then the model).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, g, request

from ..dataplane import DataPlane
from ..errors import FailedPrecondition, InvalidArgument, code_number
from ..repository import VersionStatus
from . import tensors
from .protojson import proto_to_json
from .rapidjson import parse_json_body, value_to_string

blueprint = Blueprint("tfserving", __name__)

_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def json_response(text: str, status: int = 200) -> Response:
    return Response(text, status=status, mimetype="application/json")


def dataplane() -> DataPlane:
    plane: DataPlane = current_app.extensions["modelservice.dataplane"]
    return plane


def parse_json_object(body: bytes) -> dict[str, Any]:
    doc = parse_json_body(body)
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def _version(text: str | None) -> int | None:
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
    g.api = "v1"
    if request.method == "OPTIONS":
        # TF Serving answers a CORS preflight itself: empty 200 when an http(s) Origin is present.
        if re.search(r"https?://", request.headers.get("Origin", "")):
            return Response(b"", status=200)
        raise FailedPrecondition("Origin header is missing in CORS preflight")
    if request.method == "POST":
        match = _PREDICT_PATH.fullmatch(path)
        if match:
            name, version_text, label, method = match.groups()
            name, label = urllib.parse.unquote(name), _decoded(label)
            g.model, g.api = name, method.lower()
            version = _version(version_text)
            if method == "predict":
                return _predict(name, version, label)
            if method == "classify":
                return _classify_or_regress(name, version, label, "classify")
            if method == "regress":
                return _classify_or_regress(name, version, label, "regress")
    else:
        match = _STATUS_PATH.fullmatch(path)
        if match:
            name, version_text, label, subresource = match.groups()
            name, label = _decoded(name), _decoded(label)
            version = _version(version_text)
            if not name:
                g.api = "list"
                return _list_models()
            g.model = name
            if subresource == "metadata":
                g.api = "metadata"
                return _metadata(name, version, label)
            g.api = "status"
            return _status(name, version, label)
    raise InvalidArgument(f"Malformed request: {request.method} {path}")


# ----------------------------------------------------------------------------------------------- predict


def _predict(name: str, version: int | None, label: str | None) -> Response:
    if request.mimetype == "multipart/form-data":
        return _predict_upload(name, version, label)
    body = request.get_data(cache=False)
    doc = parse_json_object(body)
    plane = dataplane()
    holder: dict[str, Any] = {}

    def input_specs(signature_name: str) -> dict[str, tensors.TensorSpec]:
        holder["model"] = model = plane.model(name, version, label)
        g.version = str(model.version)
        specs: dict[str, tensors.TensorSpec] = model.input_specs(signature_name)
        return specs

    may_have_bools = b"true" in body or b"false" in body
    signature_name, inputs, fmt = tensors.decode_predict_request(doc, input_specs, may_have_bools)
    outputs = plane.predict(holder["model"], signature_name, inputs)
    return json_response(tensors.encode_predict_response(outputs, fmt))


def _predict_upload(name: str, version: int | None, label: str | None) -> Response:
    """``multipart/form-data``: each uploaded file is one instance, its raw bytes the string input."""
    files = [f for _, f in request.files.items(multi=True)]
    if not files:
        raise InvalidArgument("multipart/form-data request has no file parts to use as instances")
    signature_name = request.form.get("signature_name", "")
    plane = dataplane()
    model = plane.model(name, version, label)
    g.version = str(model.version)
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


def _feature_kind_error(name: str, kind: str | None) -> InvalidArgument:
    names = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
    return InvalidArgument(
        f"Unexpected element type in feature: {name} expecting type: {names.get(kind or '', 'UNKNOWN')}"
    )


def _add_feature_value(value: Any, name: str, feature: Any) -> None:
    """``AddValueToFeature``: one JSON value into a tf.train.Feature, with TF Serving's checks."""
    kind = feature.WhichOneof("kind")

    def require(wanted: str) -> None:
        if kind not in (None, wanted):
            raise _feature_kind_error(name, kind)

    if value is None or isinstance(value, list):
        raise InvalidArgument(
            f"Feature: {name} has element with unexpected JSON type: {tensors.json_type(value)}"
        )
    if isinstance(value, bool):
        require("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        if not tensors.is_b64_object(value):
            raise InvalidArgument(
                f"Feature: {name} has element with unexpected JSON type: {tensors.json_type(value)}"
            )
        require("bytes_list")
        feature.bytes_list.value.append(tensors.decode_b64(value))
    elif isinstance(value, str):
        require("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float) or not -(2**63) <= value <= _UINT64_MAX:
        # rapidjson holds a number with a fraction or exponent, or a whole one beyond (u)int64, as a
        # double: a float feature (GetFloat: beyond float's range, +-inf).
        require("float_list")
        with np.errstate(over="ignore"):
            feature.float_list.value.append(float(np.float32(tensors.to_double(value))))
    else:
        require("int64_list")
        if value > _INT64_MAX:
            raise InvalidArgument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(value)


def _example_from_json(value: Any) -> Any:
    """``MakeExampleFromJsonObject``."""
    from tensorflow.core.example import example_pb2

    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {tensors.json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
    return example


def _serialized_examples(doc: dict[str, Any], method: str) -> list[bytes]:
    """``FillClassifyRegressRequestFromJson``: examples (merged with the context) serialized."""
    context = b""
    if "context" in doc:
        context = _example_from_json(doc["context"]).SerializeToString()
    if "examples" not in doc:
        raise tensors.doc_error(doc, f"When method is {method}, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise tensors.doc_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise tensors.doc_error(doc, "'examples' value is an empty array")
    return [context + _example_from_json(e).SerializeToString() for e in examples]


def _classify_or_regress(name: str, version: int | None, label: str | None, method: str) -> Response:
    doc = parse_json_object(request.get_data(cache=False))
    signature_name = tensors.signature_name_of(doc)
    # TF Serving's JSON parser says "classify" for both methods; keep its words.
    examples = _serialized_examples(doc, "classify")
    plane = dataplane()
    model = plane.model(name, version, label)
    g.version = str(model.version)
    if method == "classify":
        return json_response(tensors.encode_classification(plane.classify(model, signature_name, examples)))
    return json_response(tensors.encode_regression(plane.regress(model, signature_name, examples)))


# ------------------------------------------------------------------------------------ status / metadata


def status_json(statuses: list[VersionStatus]) -> str:
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = status.state.value
        entry.status.error_code = code_number(status.error_code)
        entry.status.error_message = status.error_message
    return proto_to_json(response)


def _status(name: str, version: int | None, label: str | None) -> Response:
    return json_response(status_json(dataplane().repository.statuses(name, version, label)))


def metadata_json(model: Any) -> str:
    """``ToJsonString(GetModelMetadataResponse)``: TF Serving concatenates two printed protos."""
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

    spec = model_pb2.ModelSpec(name=model.name, signature_name="")
    spec.version.value = model.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in model.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    return (
        '{\n"model_spec":'
        + proto_to_json(spec, preserve_names=True)
        + ',\n"metadata": {"signature_def": '
        + proto_to_json(signature_map, preserve_names=True)
        + "}\n}\n"
    )


def _metadata(name: str, version: int | None, label: str | None) -> Response:
    model = dataplane().model(name, version, label)
    g.version = str(model.version)
    return json_response(metadata_json(model))


def _list_models() -> Response:
    """``GET /v1/models``: KServe V1's model list (TF Serving itself answers 400 here)."""
    repository = dataplane().repository
    available = repository.available()
    models = [
        {"name": name, "versions": [str(v) for v in versions], "ready": bool(versions)}
        for name, versions in sorted(available.items())
    ]
    body = {"models": [m["name"] for m in models], "model_details": models}
    return json_response(json.dumps(body, indent=4))
