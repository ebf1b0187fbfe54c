"""The Open Inference Protocol (KServe V2) REST API, with the binary tensor data extension.

``GET /v2`` (server metadata), ``GET /v2/models/{m}[/versions/{v}]`` (model metadata: inputs and outputs
with V2 datatypes and shapes), ``GET .../ready`` and ``POST .../infer``. Tensors come as JSON ``data``
(flat row-major, or nested) or, with the binary extension, as raw little-endian bytes after a JSON header
whose length is the ``Inference-Header-Content-Length`` header. Inference goes through the same
``DataPlane`` as TF Serving's API, so batching, deadlines and admission control apply alike. Errors are
``{"error": "..."}`` with the HTTP status of the error's canonical code.

**For speed,** responses are encoded by orjson straight from the numpy arrays (no ``tolist()``); float
outputs holding NaN or Infinity, which orjson would turn into ``null``, go through Python's encoder, which
writes ``NaN``/``Infinity`` as TF Serving does.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import MethodNotAllowed

from .. import __version__, offload
from ..client import EngineClient
from ..errors import InvalidArgument, NotFound
from ..logs import current_request
from . import tensors
from .limits import enforce_rate_limit, request_body
from .rapidjson import parse_json_body

blueprint = Blueprint("v2", __name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "tensorflow_savedmodel"

# TF DataType enum -> V2 datatype, and V2 datatype -> numpy dtype (BF16 has no numpy type).
V2_DATATYPES = {
    tensors.DT_BOOL: "BOOL", tensors.DT_UINT8: "UINT8", tensors.DT_UINT16: "UINT16",
    tensors.DT_UINT32: "UINT32", tensors.DT_UINT64: "UINT64", tensors.DT_INT8: "INT8",
    tensors.DT_INT16: "INT16", tensors.DT_INT32: "INT32", tensors.DT_INT64: "INT64",
    tensors.DT_HALF: "FP16", tensors.DT_FLOAT: "FP32", tensors.DT_DOUBLE: "FP64",
    tensors.DT_STRING: "BYTES", tensors.DT_BFLOAT16: "BF16",
}  # fmt: skip
NUMPY_BY_V2 = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype(np.int8),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}  # fmt: skip
_NAME = r"[^/]+"
_MODEL_PATH = re.compile(rf"/v2/models/({_NAME})(?:/versions/({_NAME}))?(/ready|/infer)?")


def dataplane() -> EngineClient:
    plane: EngineClient = current_app.extensions["modelservice.dataplane"]
    return plane


def _json(body: Any, status: int = 200) -> Response:
    try:
        text = orjson.dumps(body)
    except orjson.JSONEncodeError:  # a lone surrogate from the request ("\\ud800"): escaped as such
        text = json.dumps(body, separators=(",", ":")).encode()
    return Response(text, status=status, mimetype="application/json")


def v2_datatype(dtype: int) -> str:
    if dtype not in V2_DATATYPES:
        raise InvalidArgument(f"TensorFlow dtype {tensors.dtype_name(dtype)} has no V2 datatype")
    return V2_DATATYPES[dtype]


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > 2**63 - 1:  # not '²': int() refuses it
        raise InvalidArgument(f"Model version must be a non-negative integer, got '{text}'")
    return int(text)


# ------------------------------------------------------------------------------------------- routes


@blueprint.get("/v2")
def server_metadata() -> Response:
    return _json({"name": "modelservice-runtime", "version": __version__, "extensions": EXTENSIONS})


@blueprint.route("/v2/models/<path:rest>", methods=["GET", "POST"])
def model_route(rest: str) -> Response:
    match = _MODEL_PATH.fullmatch(request.path)
    if not match:
        raise NotFound(f"No such endpoint: {request.method} {request.path}")
    name, version_text, action = match.groups()
    state = current_request()
    state.model, state.api = name, "v2"
    enforce_rate_limit(name)
    version = _version(version_text)
    if action == "/infer":
        if request.method != "POST":
            raise MethodNotAllowed(valid_methods=["POST"])
        state.api = "infer"
        return _infer(name, version)
    if request.method != "GET":
        raise MethodNotAllowed(valid_methods=["GET"])
    if action == "/ready":
        return _model_ready(name, version)
    return _model_metadata(name, version)


def _model_ready(name: str, version: int | None) -> Response:
    """200 ``{"ready": true}`` when the model (version) serves; 503 while it loads; 404 when unknown."""
    ready = dataplane().model_ready(name, version)
    return _json({"name": name, "ready": ready}, 200 if ready else 503)


def _tensor_metadata(specs: Mapping[str, tensors.TensorSpec]) -> list[dict[str, Any]]:
    return [
        {"name": spec.key, "datatype": v2_datatype(spec.dtype),
         "shape": list(spec.shape) if spec.shape is not None else [-1]}
        for spec in sorted(specs.values(), key=lambda s: s.key)
    ]  # fmt: skip


def _model_metadata(name: str, version: int | None) -> Response:
    plane = dataplane()
    model = plane.model(name, version, None)
    current_request().version = str(model.version)
    available = plane.available().get(name, [])
    return _json(
        {
            "name": name,
            "versions": [str(v) for v in sorted(available)],
            "platform": PLATFORM,
            "inputs": _tensor_metadata(model.input_specs("")),
            "outputs": _tensor_metadata(model.output_specs("")),
        }
    )


# -------------------------------------------------------------------------------------------- infer


def parameters_of(item: dict[str, Any], where: str) -> dict[str, Any]:
    """The ``parameters`` object of a request, input or output ({} when absent)."""
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"{where}: 'parameters' must be an object")
    return parameters


def _split_body() -> tuple[bytes, memoryview]:
    body = request_body()
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        return body, memoryview(b"")
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise InvalidArgument(f"{HEADER_LENGTH} is {header_length!r} but the body has {len(body)} bytes")
    split = int(header_length)
    return body[:split], memoryview(body)[split:]


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InvalidArgument(f"input '{name}': 'shape' must be a list of non-negative integers")
    return tuple(value)


def _bytes_from_binary(raw: memoryview, count: int, name: str) -> np.ndarray:
    """BYTES in the binary extension: each element is a 4-byte little-endian length, then the bytes."""
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise InvalidArgument(f"input '{name}': binary data ends inside element {i}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidArgument(f"input '{name}': binary data ends inside element {i}")
        out[i] = bytes(raw[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise InvalidArgument(f"input '{name}': {len(raw) - offset} bytes left after {count} elements")
    return out


def _bytes_from_json(data: Any, count: int, name: str) -> np.ndarray:
    flat: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            flat.append(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, bytes):  # gRPC's bytes_contents, as sent
            flat.append(value)
        else:
            raise InvalidArgument(
                f"input '{name}': BYTES data must be strings, got {tensors.json_type(value)}"
            )

    walk(data)
    if len(flat) != count:
        raise InvalidArgument(f"input '{name}': shape says {count} elements but 'data' has {len(flat)}")
    out = np.empty(count, dtype=object)
    out[:] = flat
    return out


def _numbers_from_json(data: Any, dtype: np.dtype, count: int, name: str, datatype: str) -> np.ndarray:
    try:
        array = np.asarray(data)
    except ValueError:
        raise InvalidArgument(f"input '{name}': 'data' is a ragged nested list") from None
    kind = array.dtype.kind
    if array.size != count:
        raise InvalidArgument(f"input '{name}': shape says {count} elements but 'data' has {array.size}")
    if count == 0:
        return np.empty(0, dtype=dtype)
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[dtype.kind]
    if kind not in allowed:
        got = "booleans" if kind == "b" else "floats" if kind == "f" else "non-numbers"
        raise InvalidArgument(f"input '{name}': {datatype} data cannot hold {got}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise InvalidArgument(f"input '{name}': a value is out of range for {datatype}")
    with np.errstate(over="ignore"):
        converted = array.astype(dtype, copy=False).ravel()
    if dtype.kind == "f" and bool((np.isinf(converted) & np.isfinite(array.ravel())).any()):
        raise InvalidArgument(f"input '{name}': a value is out of range for {datatype}")
    return converted


def _decode_input(
    item: Any, binary: memoryview, offset: int, body_bytes: int
) -> tuple[str, np.ndarray, str, int]:
    if not isinstance(item, dict):
        raise InvalidArgument("Each entry of 'inputs' must be an object with name, shape, datatype")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidArgument("An entry of 'inputs' has no 'name'")
    if "shape" not in item or "datatype" not in item:
        raise InvalidArgument(f"input '{name}' needs 'shape' and 'datatype'")
    shape = _shape(item["shape"], name)
    datatype = item["datatype"]
    if datatype not in NUMPY_BY_V2 and datatype != "BYTES":
        raise InvalidArgument(f"input '{name}': unsupported datatype {datatype!r}")
    count = math.prod(shape)
    if count > body_bytes:  # every element takes at least a byte of the request: a shape this big lies
        raise InvalidArgument(
            f"input '{name}': shape {list(shape)} has more elements than the request has bytes"
        )
    parameters = parameters_of(item, f"input '{name}'")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidArgument(
                f"input '{name}': binary_data_size {size} is more than the {len(binary) - offset} "
                f"binary bytes left (is the {HEADER_LENGTH} header right?)"
            )
        raw = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            array = _bytes_from_binary(raw, count, name)
        else:
            dtype = NUMPY_BY_V2[datatype]
            if size != count * dtype.itemsize:
                raise InvalidArgument(
                    f"input '{name}': {datatype} {list(shape)} needs {count * dtype.itemsize} bytes, "
                    f"binary_data_size is {size}"
                )
            array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
    else:
        if "data" not in item:
            raise InvalidArgument(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
        if datatype == "BYTES":
            array = _bytes_from_json(item["data"], count, name)
        else:
            array = _numbers_from_json(item["data"], NUMPY_BY_V2[datatype], count, name, datatype)
    try:
        shaped = array.reshape(shape)
    except ValueError as exc:  # no elements but a dimension past any array's ([2**62, 0]), or too many dims
        raise InvalidArgument(f"input '{name}': no tensor can have shape {list(shape)}: {exc}") from None
    return name, shaped, datatype, offset


def decode_infer_request(
    header: Any, binary: memoryview, specs: Mapping[str, tensors.TensorSpec], body_bytes: int
) -> dict[str, np.ndarray]:
    """The request's input tensors, checked against the signature's names and datatypes."""
    if not isinstance(header, dict):
        raise InvalidArgument("The inference request must be a JSON object")
    items = header.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidArgument("The inference request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        name, array, datatype, offset = _decode_input(item, binary, offset, body_bytes)
        if name not in specs:
            raise InvalidArgument(
                f"input '{name}' is not an input of the model; expected: {', '.join(sorted(specs))}"
            )
        if name in inputs:
            raise InvalidArgument(f"input '{name}' appears twice")
        expected = v2_datatype(specs[name].dtype)
        if datatype != expected:
            raise InvalidArgument(f"input '{name}' has datatype {datatype} but the model expects {expected}")
        inputs[name] = array
    if offset != len(binary):
        raise InvalidArgument(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise InvalidArgument(f"missing input(s): {', '.join(missing)}")
    return inputs


def _requested_outputs(header: dict[str, Any], available: Mapping[str, np.ndarray]) -> list[tuple[str, bool]]:
    """(output name, as binary) in response order: the requested ones, or all of them sorted."""
    default_binary = bool(parameters_of(header, "the request").get("binary_data_output", False))
    requested = header.get("outputs")
    if requested is None:
        return [(name, default_binary) for name in sorted(available)]
    if not isinstance(requested, list):
        raise InvalidArgument("'outputs' must be a list of {name, parameters} objects")
    chosen = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise InvalidArgument("Each entry of 'outputs' needs a 'name'")
        if name not in available:
            raise InvalidArgument(
                f"output '{name}' is not an output of the model; expected: {', '.join(sorted(available))}"
            )
        binary = parameters_of(item, f"output '{name}'").get("binary_data", default_binary)
        chosen.append((name, bool(binary)))
    return chosen


def _json_data(name: str, array: np.ndarray) -> Any:
    """The flat JSON data of one output, kept as a numpy array wherever orjson can write it directly."""
    flat = np.ascontiguousarray(array).ravel()
    if flat.dtype.kind == "O" or flat.dtype.kind in "SU":
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"output '{name}' holds bytes that are not UTF-8; request it with the binary_data parameter"
            ) from None
    if flat.dtype == np.float16:
        return flat.astype(np.float32)
    return flat


def _binary_data(array: np.ndarray) -> bytes:
    flat = np.ascontiguousarray(array).ravel()
    if flat.dtype.kind in "OSU":
        parts = []
        for value in flat:
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()


def _dumps(body: dict[str, Any], outputs: list[dict[str, Any]]) -> bytes:
    """orjson from numpy; Python's encoder when a float output holds NaN or Infinity."""
    finite = all(
        not (isinstance(o.get("data"), np.ndarray) and o["data"].dtype.kind == "f")
        or bool(np.isfinite(o["data"]).all())
        for o in outputs
    )
    if finite:
        try:
            return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        except (
            orjson.JSONEncodeError
        ):  # the request's "id" with a lone surrogate: Python's encoder escapes it
            pass
    for output in outputs:
        if isinstance(output.get("data"), np.ndarray):
            output["data"] = output["data"].tolist()
    return json.dumps(body, separators=(",", ":")).encode()


def _infer(name: str, version: int | None) -> Response:
    header_bytes, binary = _split_body()
    heavy = len(header_bytes) + len(binary) > offload.HEAVY_BYTES
    header = offload.runner(len(header_bytes) > offload.HEAVY_BYTES)(parse_json_body, header_bytes)
    plane = dataplane()
    model = plane.model(name, version, None)
    current_request().version = str(model.version)
    if not isinstance(header, dict):
        raise InvalidArgument("The inference request must be a JSON object")
    signature = parameters_of(header, "the request").get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidArgument("parameters.signature_name must be a string")
    specs = model.input_specs(signature)
    inputs = offload.runner(heavy)(
        decode_infer_request, header, binary, specs, len(header_bytes) + len(binary)
    )
    results = plane.predict(model, signature, inputs)
    return offload.runner(offload.heavy_outputs(results))(
        _infer_response, name, model.version, header, results
    )


def _infer_response(
    name: str, version: int, header: dict[str, Any], results: Mapping[str, np.ndarray]
) -> Response:
    """The inference response: JSON, or with the binary extension a JSON header and the raw outputs."""
    chosen = _requested_outputs(header, results)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output_name, as_binary in chosen:
        array = results[output_name]
        entry: dict[str, Any] = {
            "name": output_name,
            "datatype": V2_DATATYPES.get(_tf_dtype(array), "BYTES"),
            "shape": list(array.shape),
        }
        if as_binary:
            blob = _binary_data(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(output_name, array)
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": name, "model_version": str(version), "outputs": outputs}
    if "id" in header:
        body["id"] = header["id"]
    text = _dumps(body, outputs)
    if not blobs:
        return Response(text, mimetype="application/json")
    response = Response(text + b"".join(blobs), mimetype="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(text))
    return response


_TF_BY_NUMPY = {np.dtype(v).str: k for k, v in tensors.NUMPY_DTYPES.items() if v is not object}


def _tf_dtype(array: np.ndarray) -> int:
    if array.dtype.kind in "OSU":
        return tensors.DT_STRING
    return _TF_BY_NUMPY.get(array.dtype.newbyteorder("=").str, tensors.DT_STRING)
