"""TF Serving's REST pieces that need TensorFlow's protos, run in the model process.

The HTTP workers hold no TensorFlow (see ``engine.py``): building ``tf.train.Example`` protos from a
classify/regress body, and printing ``GetModelStatusResponse`` / ``GetModelMetadataResponse`` as TF
Serving does, happen where TensorFlow is already loaded. Each keeps TF Serving's checks and words.

The protos are imported with the module, through ``engine.import_tensorflow``: in the model process by
its main thread before it serves, in the in-process engine (tests, ``flask run``) under its lock.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from ..errors import InvalidArgument, code_number
from ..repository import VersionStatus
from . import tensors
from .protojson import proto_to_json

_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


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
    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {tensors.json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        try:
            feature = example.features.feature[name]
        except UnicodeEncodeError:  # a lone surrogate ("\\udc80"): protobuf keys must be UTF-8
            raise InvalidArgument(f"Feature name {name!r} is not valid UTF-8") from None
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
    return example


def serialized_examples(doc: dict[str, Any], method: str) -> list[bytes]:
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


def status_json(statuses: list[VersionStatus]) -> str:
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = status.state.value
        entry.status.error_code = code_number(status.error_code)
        entry.status.error_message = status.error_message
    return proto_to_json(response)


def metadata_json(model: Any) -> str:
    """``ToJsonString(GetModelMetadataResponse)``: TF Serving concatenates two printed protos."""
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
