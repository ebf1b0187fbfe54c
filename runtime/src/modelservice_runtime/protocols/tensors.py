"""JSON <-> numpy tensors in TensorFlow Serving's REST format (``util/json_tensor.cc``).

Decoding follows TF Serving's rules value by value (which JSON types each dtype accepts, lossless float
checks, ``{"b64": ...}`` strings, row and columnar formats) and reproduces its error messages. **For
speed,** well-formed numeric input takes a numpy fast path; anything irregular falls back to the exact
walker, which is also what produces the error message. Encoding writes through the rapidjson emulation.

This module imports no TensorFlow: dtypes are TensorFlow's ``DataType`` enum numbers.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgument, Unimplemented
from .rapidjson import PrettyWriter, format_decimals, quote, value_to_string

# tensorflow/core/framework/types.proto
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_BFLOAT16, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 14, 17, 19, 22, 23

DTYPE_NAMES = {
    DT_FLOAT: "float", DT_DOUBLE: "double", DT_INT32: "int32", DT_UINT8: "uint8", DT_INT16: "int16",
    DT_INT8: "int8", DT_STRING: "string", DT_INT64: "int64", DT_BOOL: "bool", DT_BFLOAT16: "bfloat16",
    DT_UINT16: "uint16", DT_HALF: "half", DT_UINT32: "uint32", DT_UINT64: "uint64",
}  # fmt: skip
NUMPY_DTYPES: dict[int, Any] = {
    DT_FLOAT: np.float32, DT_DOUBLE: np.float64, DT_INT32: np.int32, DT_UINT8: np.uint8,
    DT_INT16: np.int16, DT_INT8: np.int8, DT_STRING: object, DT_INT64: np.int64, DT_BOOL: np.bool_,
    DT_UINT16: np.uint16, DT_HALF: np.float16, DT_UINT32: np.uint32, DT_UINT64: np.uint64,
}  # fmt: skip

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_INT_RANGES = {
    DT_INT32: _INT32, DT_INT16: _INT32, DT_INT8: _INT32, DT_UINT8: _INT32,
    DT_INT64: _INT64, DT_UINT32: _UINT32, DT_UINT64: _UINT64,
}  # fmt: skip


def dtype_name(dtype: int) -> str:
    return DTYPE_NAMES.get(dtype, f"type{dtype}")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its key, TF dtype, and shape (None: unknown rank; -1: any)."""

    key: str
    dtype: int
    shape: tuple[int, ...] | None

    def shape_text(self) -> str:
        return "[?]" if self.shape is None else "[" + ",".join(str(d) for d in self.shape) + "]"


def signature_key(specs: Mapping[str, TensorSpec]) -> str:
    """What a request was decoded against, as a value equal across processes (unlike ``hash``)."""
    return repr(sorted((s.key, s.dtype, s.shape) for s in specs.values()))


class Format(enum.Enum):
    ROW = "row"  # "instances" in, "predictions" out
    COLUMNAR = "columnar"  # "inputs" in, "outputs" out


# ---------------------------------------------------------------------------------------------- decoding


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _type_error(value: Any, dtype: int) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {value_to_string(value)} Type: {json_type(value)} is not of expected type: "
        f"{dtype_name(dtype)}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_double(value: int | float) -> float:
    """A JSON number as rapidjson's GetDouble gives it (an integer too large for a double: +-inf)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def is_b64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(value: Any) -> bytes:
    if not is_b64_object(value):
        raise InvalidArgument(f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data")
    # Like absl::Base64Unescape: standard or URL-safe alphabet, padding optional, nothing else allowed.
    text = value["b64"].translate(_URLSAFE_TO_STANDARD).rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def _convert_scalar(value: Any, dtype: int) -> Any:
    """``AddValueToTensor``: one JSON scalar as the Python value for ``dtype``, or TF Serving's error."""
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if not _is_number(value):
            raise _type_error(value, dtype)
        # rapidjson's GetFloat/GetDouble, as TF Serving calls them since 2021: whole numbers round to the
        # nearest float or double, a double beyond float's range becomes +-inf (the cast in _to_array).
        return to_double(value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if dtype == DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogatepass")
    if dtype == DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise Unimplemented(f"Conversion of JSON Value: {value_to_string(value)} to type: {dtype_name(dtype)}")


def _dense_shape(value: Any) -> list[int]:
    """``GetDenseTensorShape``: the shape implied by following the first element at every level."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list[Any]) -> None:
    """``FillTensorProto``: append the values of a dense nested list, checking it is rectangular."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {value_to_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != DT_STRING:
                raise _type_error(value, dtype)
            out.append(decode_b64(value))
        else:
            out.append(_convert_scalar(value, dtype))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(values: list[Any], shape: list[int], dtype: int) -> np.ndarray:
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    if dtype in _INT_RANGES:
        # TF Serving stores small ints in int_val and casts: keep its wrap-around for int8/int16/uint8.
        wide = np.array(values, dtype=np.int64 if dtype != DT_UINT64 else np.uint64)
        return wide.astype(NUMPY_DTYPES[dtype]).reshape(shape)
    with np.errstate(over="ignore"):  # a double beyond float32's range is +-inf, as C++'s cast makes it
        return np.array(values, dtype=NUMPY_DTYPES[dtype]).reshape(shape)


# numpy's limit on dimensions (TensorFlow's is 254). A deeper input is refused with the message TensorFlow
# gives a TensorProto it cannot parse, before the walk below recurses that deep.
MAX_DIMS = 64


class _TooManyDims(InvalidArgument):
    """Raised as is, not wrapped in "Failed to process element" (TF Serving fails later, on the proto)."""


def _exact_tensor(value: Any, dtype: int, name: str = "") -> np.ndarray:
    shape = _dense_shape(value)
    if len(shape) > MAX_DIMS:
        raise _TooManyDims(f"tensor parsing error: {name}")
    out: list[Any] = []
    _fill(value, 0, shape, dtype, out)
    return _to_array(out, shape, dtype)


def _fast_tensor(value: Any, dtype: int, may_have_bools: bool) -> np.ndarray | None:
    """The numpy fast path, or None when the value needs the exact walker (which also explains errors)."""
    if dtype in (DT_STRING, DT_HALF) or dtype not in NUMPY_DTYPES:
        return None
    if may_have_bools and dtype != DT_BOOL:
        return None  # numpy would turn true/false into 1/0 silently
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if dtype == DT_BOOL:
        return array if kind == "b" else None
    if kind not in "iuf" or array.size == 0:
        return None
    if dtype in (DT_FLOAT, DT_DOUBLE):
        with np.errstate(over="ignore"):  # rounding and float32 overflow to +-inf, as rapidjson + C++ do
            return array.astype(NUMPY_DTYPES[dtype], copy=False)
    if kind == "f":
        return None
    low, high = _INT_RANGES[dtype]
    if int(array.min()) < low or int(array.max()) > high:
        return None
    wide = array.astype(np.int64 if dtype != DT_UINT64 else np.uint64, copy=False)
    return wide.astype(NUMPY_DTYPES[dtype], copy=False)


def _tensor(value: Any, dtype: int, may_have_bools: bool, name: str = "") -> np.ndarray:
    fast = _fast_tensor(value, dtype, may_have_bools)
    return fast if fast is not None else _exact_tensor(value, dtype, name)


def _shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64_object(value)


def _instances_exact(instances: list[Any], specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """``FillTensorMapFromInstancesList`` step by step: slow, exact, and the source of its errors."""
    elements_are_objects = _is_element_object(instances[0])
    input_names = sorted(specs)
    values: dict[str, list[Any]] = {}
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}

    def add_item(item: Any, name: str) -> None:
        if name not in specs:
            raise InvalidArgument(f"JSON object: does not have named input: {name}")
        shape = _dense_shape(item)
        if len(shape) >= MAX_DIMS:  # one more for the batch
            raise _TooManyDims(f"tensor parsing error: {name}")
        out: list[Any] = []
        _fill(item, 0, shape, specs[name].dtype, out)
        values.setdefault(name, []).extend(out)
        if name not in sizes:
            sizes[name], shapes[name] = len(out), shape
        elif sizes[name] != len(out):
            raise InvalidArgument(f"Expecting tensor size: {sizes[name]} but got: {len(out)}")
        elif shapes[name] != shape:
            raise InvalidArgument(
                f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}"
            )

    for count, element in enumerate(instances):
        if elements_are_objects:
            if not _is_element_object(element):
                raise InvalidArgument(f"Expecting object but got list at item {count} of input list")
            for name, item in element.items():
                try:
                    add_item(item, name)
                except _TooManyDims:
                    raise
                except (InvalidArgument, Unimplemented) as exc:
                    raise InvalidArgument(
                        f"Failed to process element: {count} key: {name} of 'instances' list. "
                        f"Error: {exc.code}: {exc.message}"
                    ) from None
            if sorted(element) != input_names:
                raise InvalidArgument(
                    f"Failed to process element: {count} of 'instances' list. JSON object: "
                    f"{value_to_string(element)} keys must be equal to: {','.join(input_names)}"
                )
        else:
            if _is_element_object(element):
                raise InvalidArgument(f"Expecting value/list but got object at item {count} of input list")
            try:
                add_item(element, input_names[0])
            except _TooManyDims:
                raise
            except (InvalidArgument, Unimplemented) as exc:
                # status.ToString() of whatever failed: an unsupported type is 400 here, not 501
                raise InvalidArgument(
                    f"Failed to process element: {count} of 'instances' list. "
                    f"Error: {exc.code}: {exc.message}"
                ) from None
    n = len(instances)
    return {name: _to_array(vals, [n, *shapes[name]], specs[name].dtype) for name, vals in values.items()}


def _instances(
    instances: list[Any], specs: Mapping[str, TensorSpec], may_have_bools: bool
) -> dict[str, np.ndarray]:
    if not _is_element_object(instances[0]) and len(specs) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    if _is_element_object(instances[0]):
        names = set(specs)
        if all(isinstance(e, dict) and e.keys() == names for e in instances):
            columns: dict[str, np.ndarray] = {}
            for name, spec in specs.items():
                array = _fast_tensor([e[name] for e in instances], spec.dtype, may_have_bools)
                if array is None:
                    break
                columns[name] = array
            else:
                return columns
    else:
        only = next(iter(specs.values()))
        if not any(_is_element_object(e) for e in instances):
            array = _fast_tensor(instances, only.dtype, may_have_bools)
            if array is not None:
                return {only.key: array}
    return _instances_exact(instances, specs)


def _inputs(value: Any, specs: Mapping[str, TensorSpec], may_have_bools: bool) -> dict[str, np.ndarray]:
    """``FillTensorMapFromInputsMap``: the columnar format."""
    if not isinstance(value, dict) or is_b64_object(value):
        if len(specs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        only = next(iter(specs.values()))
        return {only.key: _tensor(value, only.dtype, may_have_bools, only.key)}
    tensors = {}
    for name in sorted(specs):
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _tensor(value[name], specs[name].dtype, may_have_bools, name)
    return tensors


def doc_error(doc: Any, message: str) -> InvalidArgument:
    """``FormatError(doc, ...)``: TF Serving echoes the whole request document before the message."""
    return InvalidArgument(f"JSON Value: {value_to_string(doc)} {message}")


def signature_name_of(doc: dict[str, Any]) -> str:
    """``FillSignature``: the optional ``signature_name`` key ("" when absent)."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def decode_predict_request(
    doc: dict[str, Any],
    get_input_specs: Callable[[str], Mapping[str, TensorSpec]],
    may_have_bools: bool = True,
) -> tuple[str, dict[str, np.ndarray], Format]:
    """``FillPredictRequestFromJson``: (signature name, input tensors, request format)."""
    signature_name = signature_name_of(doc)
    specs = get_input_specs(signature_name)
    if not specs:
        raise InvalidArgument(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise doc_error(
            doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise doc_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise doc_error(doc, "No values in 'instances' array")
        return signature_name, _instances(instances, specs, may_have_bools), Format.ROW
    if has_inputs:
        return signature_name, _inputs(doc["inputs"], specs, may_have_bools), Format.COLUMNAR
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


# ---------------------------------------------------------------------------------------------- encoding


# What TF Serving's JSON writer (``AddSingleValueAndAdvance``) has no case for, by TF's type names.
_UNWRITABLE = {
    "float16": "half",
    "bfloat16": "bfloat16",
    "complex64": "complex64",
    "complex128": "complex128",
}


def _value_texts(array: np.ndarray, as_bytes: bool) -> list[str]:
    kind = array.dtype.kind
    if array.dtype.name in _UNWRITABLE or kind not in "fiubOSU":
        name = _UNWRITABLE.get(array.dtype.name, array.dtype.name)
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {name}")
    if kind == "f":
        return format_decimals(array, single=array.dtype != np.float64)
    if kind in "iu":
        return [str(v) for v in array.ravel().tolist()]
    if kind == "b":
        return ["true" if v else "false" for v in array.ravel().tolist()]
    texts = []
    for item in array.ravel().tolist():
        data = item if isinstance(item, bytes) else str(item).encode()
        if as_bytes:
            texts.append('{"b64": "' + base64.b64encode(data).decode("ascii") + '"}')
        else:
            texts.append(quote(data.decode("utf-8", "surrogateescape")))
    return texts


def _single_line(texts: list[str], shape: tuple[int, ...], offset: int) -> tuple[str, int]:
    """Nested arrays in single-line mode: ``[a, b], [c, d]`` joined with ', ' and no newlines."""
    if not shape:
        return texts[offset], offset + 1
    if len(shape) == 1:
        end = offset + shape[0]
        return "[" + ", ".join(texts[offset:end]) + "]", end
    parts = []
    for _ in range(shape[0]):
        part, offset = _single_line(texts, shape[1:], offset)
        parts.append(part)
    return "[" + ", ".join(parts) + "]", offset


def _write_values(
    writer: PrettyWriter, texts: list[str], shape: tuple[int, ...], offset: int, as_bytes: bool
) -> int:
    """``AddTensorValues`` through the writer (any format mode, b64 objects included)."""
    if not shape:
        if as_bytes:
            writer.start_object()
            writer.key("b64")
            writer.raw(texts[offset][len('{"b64": ') : -1])
            writer.end_object()
        else:
            writer.raw(texts[offset])
        return offset + 1
    if writer.single_line and not as_bytes:
        text, end = _single_line(texts, shape, offset)
        writer.raw(text)
        return end
    writer.start_array()
    for _ in range(shape[0]):
        offset = _write_values(writer, texts, shape[1:], offset, as_bytes)
    writer.end_array()
    return offset


def _is_bytes_output(name: str, array: np.ndarray) -> bool:
    return array.dtype.kind in "OSU" and name.endswith("_bytes")


def _as_array(value: Any) -> np.ndarray:
    """An output as an array: a session hands a scalar string back as bytes, a scalar number as a numpy
    scalar (kept as objects: numpy's "S" dtype would drop trailing NULs)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bytes, str)):
        array = np.empty((), dtype=object)
        array[()] = value
        return array
    return np.asarray(value)


def encode_predict_response(outputs: Mapping[str, np.ndarray], fmt: Format) -> str:
    """``MakeJsonFromTensors``: "predictions" (row format) or "outputs" (columnar format)."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    outputs = {name: _as_array(value) for name, value in outputs.items()}
    if fmt is Format.ROW and len(outputs) == 1:
        ((name, array),) = outputs.items()
        if array.ndim and array.shape[0] and not _is_bytes_output(name, array):
            # The common answer (one output, a batch of rows) as the writer below would write it, without
            # the writer: rows of single-line arrays joined by ", ", the array closed on its own line.
            text, _ = _single_line(_value_texts(array, False), array.shape, 0)
            return '{\n    "predictions": ' + text[:-1] + "\n    ]\n}"
    return write_predict_response(outputs, fmt)


def write_predict_response(outputs: Mapping[str, np.ndarray], fmt: Format) -> str:
    """``encode_predict_response`` through the pretty writer, whatever the outputs."""
    names = sorted(outputs)
    writer = PrettyWriter()
    writer.start_object()
    if fmt is Format.ROW:
        batch = -1
        for name in names:
            array = outputs[name]
            if array.ndim == 0:
                raise InvalidArgument(f"Tensor name: {name} has no shape information ")
            if batch >= 0 and array.shape[0] != batch:
                raise InvalidArgument(
                    f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
                )
            batch = array.shape[0]
        texts = {n: _value_texts(outputs[n], _is_bytes_output(n, outputs[n])) for n in names}
        offsets = dict.fromkeys(names, 0)
        writer.key("predictions")
        writer.start_array()
        as_objects = len(names) > 1
        for _ in range(batch):
            if as_objects:
                writer.start_object()
            writer.single_line = True
            for name in names:
                array = outputs[name]
                if as_objects:
                    writer.key(name)
                offsets[name] = _write_values(
                    writer, texts[name], array.shape[1:], offsets[name], _is_bytes_output(name, array)
                )
            writer.single_line = False
            if as_objects:
                writer.end_object()
        writer.end_array()
    else:
        writer.key("outputs")
        as_objects = len(names) > 1
        if as_objects:
            writer.start_object()
        for name in names:
            array = outputs[name]
            if as_objects:
                writer.key(name)
            as_bytes = _is_bytes_output(name, array)
            _write_values(writer, _value_texts(array, as_bytes), array.shape, 0, as_bytes)
        if as_objects:
            writer.end_object()
    writer.end_object()
    return writer.getvalue()


def encode_classification(results: list[list[tuple[str, float]]]) -> str:
    """``MakeJsonFromClassificationResult``: ``{"results": [[[label, score], ...], ...]}``."""
    if not results:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.start_array()
    for classes in results:
        writer.single_line = True
        writer.start_array()
        scores = format_decimals(np.array([s for _, s in classes], dtype=np.float32), single=True)
        for (label, _), score in zip(classes, scores, strict=True):
            writer.start_array()
            writer.raw(quote(label))
            writer.raw(score)
            writer.end_array()
        writer.end_array()
        writer.single_line = False
    writer.end_array()
    writer.end_object()
    return writer.getvalue()


def encode_regression(values: list[float]) -> str:
    """``MakeJsonFromRegressionResult``: ``{"results": [v, ...]}`` on one line."""
    if not values:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.single_line = True
    writer.start_array()
    for text in format_decimals(np.array(values, dtype=np.float32), single=True):
        writer.raw(text)
    writer.end_array()
    writer.end_object()
    return writer.getvalue()
