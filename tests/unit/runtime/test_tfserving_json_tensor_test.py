"""TensorFlow Serving's own JSON tensor tests (``tensorflow_serving/util/json_tensor_test.cc``), ported.

Each test is named after the C++ ``TEST`` it ports, snake_cased; expected values and messages are the C++
test's. Their C++ functions map to ours as:

- ``FillPredictRequestFromJson``: ``parse_json_body`` + ``decode_predict_request``, with one
  ``TensorSpec`` per entry of the test's ``TensorInfo`` map (dtype only, as there). ``EqualsProto`` on a
  ``TensorProto`` becomes dtype, shape and values of our numpy array.
- ``MakeJsonFromTensors``: ``encode_predict_response`` on numpy arrays built from the test's
  ``TensorProto`` text; compared as ``CompareJson`` does (parsed, numbers by value, members in any order)
  or ``CompareJsonAllValuesAsStrings`` (numbers by their text).
- ``FillClassificationRequestFromJson`` / ``FillRegressionRequestFromJson``: one decoder here for both,
  ``signature_name_of`` + ``serialized_examples`` as ``engine.py`` calls them, so each ``TYPED_TEST`` is
  ported once. We merge the context into every example at decoding (TF Serving does it later, when it
  runs the model), so the expected ``example_list_with_context`` is compared example by example with the
  context's features merged in. These tests import TensorFlow for ``tf.train.Example`` (seconds, once).
- ``MakeJsonFromClassificationResult`` / ``MakeJsonFromRegressionResult``: ``encode_classification`` /
  ``encode_regression``; ``MakeJsonFromStatus``: ``error_body``.

Not ported:

- ``MakeJsonFromTensors.StatusOK``: ``MakeJsonFromStatus(OkStatus())`` writes nothing; ``error_body`` is
  only ever called with an error, there is no OK status to give it.
"""

from __future__ import annotations

import json
import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from modelservice_runtime.errors import InvalidArgument
from modelservice_runtime.protocols import tensors as t
from modelservice_runtime.protocols.rapidjson import error_body, parse_json_body

# ------------------------------------------------------------------------------------------- helpers


def fill_predict_request(
    json_text: str | bytes, infomap: dict[str, int]
) -> tuple[str, dict[str, np.ndarray], t.Format]:
    """``FillPredictRequestFromJson(json, getmap(infomap), &req, &format)``."""
    body = json_text.encode() if isinstance(json_text, str) else json_text
    specs = {name: t.TensorSpec(name, dtype, None) for name, dtype in infomap.items()}
    may_have_bools = b"true" in body or b"false" in body  # as protocols/tfserving.py calls it
    return t.decode_predict_request(parse_json_body(body), lambda _: specs, may_have_bools)


def predict_error(json_text: str | bytes, infomap: dict[str, int]) -> str:
    """The message of the INVALID_ARGUMENT status ``FillPredictRequestFromJson`` returns."""
    with pytest.raises(InvalidArgument) as raised:
        fill_predict_request(json_text, infomap)
    assert raised.value.code == "INVALID_ARGUMENT"
    return raised.value.message


def assert_tensor(got: np.ndarray, dtype: int, shape: tuple[int, ...], values: list[Any]) -> None:
    """``EqualsProto``: dtype, ``tensor_shape`` and the ``*_val`` fields (NaN equal to NaN)."""
    assert got.dtype == np.dtype(t.NUMPY_DTYPES[dtype])
    assert got.shape == shape
    np.testing.assert_array_equal(got.ravel(), np.array(values, dtype=t.NUMPY_DTYPES[dtype]))


def compare_json(json1: str, json2: str) -> None:
    """``CompareJson``: rapidjson documents equal (numbers by value, object members in any order)."""
    assert _json_equal(json.loads(json1), json.loads(json2)), f"JSON Different. JSON1: {json1}JSON2: {json2}"


def compare_json_all_values_as_strings(json1: str, json2: str) -> None:
    """``CompareJsonAllValuesAsStrings``: as ``CompareJson``, every number compared by its text."""
    as_strings = {"parse_float": str, "parse_int": str, "parse_constant": str}
    assert json.loads(json1, **as_strings) == json.loads(json2, **as_strings), (json1, json2)


def _json_equal(a: Any, b: Any) -> bool:
    """rapidjson's ``Value::operator==``: types must match, except that numbers compare as numbers."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_json_equal, a, b))
    numbers = (int, float)
    if isinstance(a, numbers) and not isinstance(a, bool):
        return isinstance(b, numbers) and not isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b


def int32_tensor(shape: tuple[int, ...], values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int32).reshape(shape)


def string_tensor(shape: tuple[int, ...], values: list[bytes]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array.reshape(shape)


INT32 = {"default": t.DT_INT32}
FLOAT = {"default": t.DT_FLOAT}

# ------------------------------------------------------------------------------------------- FillPredictRequestFromJson


# Ports TEST(JsontensorTest, SingleUnnamedTensor).
def test_single_unnamed_tensor() -> None:
    _, tmap, fmt = fill_predict_request('{"instances": [[1,2],[3,4],[5,6]]}', INT32)
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_INT32, (3, 2), [1, 2, 3, 4, 5, 6])


# Ports TEST(JsontensorTest, DeeplyNestedWellFormed).
def test_deeply_nested_well_formed() -> None:
    json_req = '{"instances":[1], "nested":' + "[" * 500000 + "]" * 500000 + "}"
    _, tmap, _ = fill_predict_request(json_req, INT32)
    assert len(tmap) == 1


# Ports TEST(JsontensorTest, DeeplyNestedMalformed).
def test_deeply_nested_malformed() -> None:
    json_req = '{"signature_name":' + "[" * 500000 + "]" * 500000 + "}"
    assert "key must be a string value" in predict_error(json_req, INT32)


# Ports TEST(JsontensorTest, MixedInputForFloatTensor).
def test_mixed_input_for_float_tensor() -> None:
    _, tmap, fmt = fill_predict_request('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', FLOAT)
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_FLOAT, (7,), [1, 2.0, 3, 4, 5.003, 0.007, 0.0])


# Ports TEST(JsontensorTest, MixedInputForDoubleTensor).
def test_mixed_input_for_double_tensor() -> None:
    infomap = {"default": t.DT_DOUBLE}
    _, tmap, fmt = fill_predict_request('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', infomap)
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_DOUBLE, (7,), [1.0, 2, 3, 4, 0.662, 0, 0.0])


# Ports TEST(JsontensorTest, FloatTensorWithPrecisionLoss) (b/181409782: 1435774380 and 1435774380.0 behave
# exactly the same, both accepted with the float's precision loss).
def test_float_tensor_with_precision_loss() -> None:
    for literal in ("1435774380", "1435774380.0"):
        _, tmap, fmt = fill_predict_request(f'{{"instances": [{literal}]}}', FLOAT)
        assert len(tmap) == 1
        assert fmt is t.Format.ROW
        assert_tensor(tmap["default"], t.DT_FLOAT, (1,), [1435774380])


# Ports TEST(JsontensorTest, FloatTensorThatExceedsMaxReturnsInf). absl::Substitute writes the double
# with six significant digits: "$0" of std::numeric_limits<double>::max() is 1.79769e+308.
def test_float_tensor_that_exceeds_max_returns_inf() -> None:
    for literal, expected in (("1.79769e+308", math.inf), ("-1.79769e+308", -math.inf)):
        _, tmap, fmt = fill_predict_request(f'{{ "instances": [{literal}] }}', FLOAT)
        assert len(tmap) == 1
        assert fmt is t.Format.ROW
        assert_tensor(tmap["default"], t.DT_FLOAT, (1,), [expected])


# Ports TEST(JsontensorTest, FloatTensorThatExceedsMinReturnsZero) (std::numeric_limits<double>::min()
# through absl::Substitute is 2.22507e-308).
def test_float_tensor_that_exceeds_min_returns_zero() -> None:
    for literal, expected in (("2.22507e-308", 0.0), ("-2.22507e-308", -0.0)):
        _, tmap, fmt = fill_predict_request(f'{{ "instances": [{literal}] }}', FLOAT)
        assert len(tmap) == 1
        assert fmt is t.Format.ROW
        assert_tensor(tmap["default"], t.DT_FLOAT, (1,), [expected])


# Ports TEST(JsontensorTest, SingleUnnamedTensorWithSignature).
def test_single_unnamed_tensor_with_signature() -> None:
    signature_name, tmap, fmt = fill_predict_request(
        '{"signature_name": "predict_images", "instances": [[1,2]]}', INT32
    )
    assert signature_name == "predict_images"
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_INT32, (1, 2), [1, 2])


# Ports TEST(JsontensorTest, TensorFromNonNullTerminatedBuffer): the buffer ends before the 'X'.
def test_tensor_from_non_null_terminated_buffer() -> None:
    jsonstr = b'{"instances": [[1,2],[3,4],[5,6]]}X'
    _, tmap, fmt = fill_predict_request(memoryview(jsonstr)[: len(jsonstr) - 1].tobytes(), INT32)
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_INT32, (3, 2), [1, 2, 3, 4, 5, 6])


# Ports TEST(JsontensorTest, SingleUnnamedTensorBase64Scalars).
def test_single_unnamed_tensor_base64_scalars() -> None:
    infomap = {"default": t.DT_STRING}
    _, tmap, fmt = fill_predict_request(
        '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}', infomap
    )
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_STRING, (2,), [b"hello", b"world"])


# Ports TEST(JsontensorTest, SingleUnnamedTensorBase64Lists).
def test_single_unnamed_tensor_base64_lists() -> None:
    infomap = {"default": t.DT_STRING}
    _, tmap, fmt = fill_predict_request(
        '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}', infomap
    )
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_STRING, (2, 1), [b"hello", b"world"])


# Ports TEST(JsontensorTest, SingleNamedTensorBase64).
def test_single_named_tensor_base64() -> None:
    infomap = {"default": t.DT_STRING}
    _, tmap, fmt = fill_predict_request(
        '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}', infomap
    )
    assert len(tmap) == 1
    assert fmt is t.Format.ROW
    assert_tensor(tmap["default"], t.DT_STRING, (1, 2, 1), [b"hello", b"world"])


# Ports TEST(JsontensorTest, MultipleNamedTensor).
def test_multiple_named_tensor() -> None:
    infomap = {
        "int_tensor": t.DT_INT32,
        "str_tensor": t.DT_STRING,
        "float_tensor": t.DT_FLOAT,
        "dbl_tensor": t.DT_DOUBLE,
    }
    _, tmap, fmt = fill_predict_request(
        """
        {
          "instances": [
            {
              "int_tensor": [[1,2],[3,4],[5,6]],
              "str_tensor": ["foo", "bar"],
              "float_tensor": [1.0, NaN],
              "dbl_tensor": [NaN]
            },
            {
              "int_tensor": [[7,8],[9,0],[1,2]],
              "str_tensor": ["baz", "bat"],
              "float_tensor": [2.0, Infinity],
              "dbl_tensor": [2.0]
            }
          ]
        }""",
        infomap,
    )
    assert len(tmap) == 4
    assert fmt is t.Format.ROW
    assert_tensor(tmap["int_tensor"], t.DT_INT32, (2, 3, 2), [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
    assert_tensor(tmap["str_tensor"], t.DT_STRING, (2, 2), [b"foo", b"bar", b"baz", b"bat"])
    assert_tensor(tmap["float_tensor"], t.DT_FLOAT, (2, 2), [1.0, math.nan, 2.0, math.inf])
    assert_tensor(tmap["dbl_tensor"], t.DT_DOUBLE, (2, 1), [math.nan, 2.0])


# Ports TEST(JsontensorTest, SingleUnnamedTensorColumnarFormat).
def test_single_unnamed_tensor_columnar_format() -> None:
    infomap = {"int_tensor": t.DT_INT32}
    _, tmap, fmt = fill_predict_request('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', infomap)
    assert len(tmap) == 1
    assert fmt is t.Format.COLUMNAR
    assert_tensor(tmap["int_tensor"], t.DT_INT32, (1, 3, 2), [1, 2, 3, 4, 5, 6])

    # Skip explicitly specifying named input.
    _, tmap2, fmt = fill_predict_request('{"inputs": [[[1,2],[3,4],[5,6]]]}', infomap)
    assert len(tmap2) == 1
    assert fmt is t.Format.COLUMNAR
    assert_tensor(tmap2["int_tensor"], t.DT_INT32, (1, 3, 2), [1, 2, 3, 4, 5, 6])


# Ports TEST(JsontensorTest, MultipleNamedTensorColumnarFormat).
def test_multiple_named_tensor_columnar_format() -> None:
    infomap = {"int_tensor": t.DT_INT32, "str_tensor": t.DT_STRING, "bin_tensor": t.DT_STRING}
    _, tmap, fmt = fill_predict_request(
        """
        {
          "inputs": {
            "int_tensor": [[[1,2],[3,4],[5,6]]],
            "str_tensor": ["foo", "bar"],
            "bin_tensor": { "b64" : "aGVsbG8=" }
          }
        }""",
        infomap,
    )
    assert len(tmap) == 3
    assert fmt is t.Format.COLUMNAR
    assert_tensor(tmap["int_tensor"], t.DT_INT32, (1, 3, 2), [1, 2, 3, 4, 5, 6])
    assert_tensor(tmap["str_tensor"], t.DT_STRING, (2,), [b"foo", b"bar"])
    assert_tensor(tmap["bin_tensor"], t.DT_STRING, (), [b"hello"])


# Ports TEST(JsontensorTest, SingleUnnamedTensorErrors).
@pytest.mark.parametrize(
    ("json_text", "message"),
    [
        ("", "document is empty"),
        ('{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', "must be a string value"),
        ('{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', "Not formatted correctly"),
        ('{"instances": [[1,2],[3,4],[5,6,7]]}', "Expecting tensor size"),
        ('{"instances": [[1,2],[3,4],[[5,6]]]}', "Expecting shape"),
        ('{"instances": [1, [1]]}', "Expecting shape"),
        ('{"instances": [[1,2],["a", "b"]]}', "not of expected type"),
    ],
)
def test_single_unnamed_tensor_errors(json_text: str, message: str) -> None:
    assert message in predict_error(json_text, INT32)


# Ports TEST(JsontensorTest, MultipleNamedTensorErrors).
TWO_NAMED = {"int_tensor": t.DT_INT32, "str_tensor": t.DT_STRING}


@pytest.mark.parametrize(
    ("infomap", "instances", "message"),
    [
        # Different shapes across int_tensor instances.
        (TWO_NAMED,
         '{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},'
         '{"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}', "Expecting shape"),
        # Different size/length across int_tensor instances.
        (TWO_NAMED,
         '{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},'
         '{"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}', "Expecting tensor size"),
        # Mix of object and value/list in "instances" list. First element is an object. Rest are
        # expected to be objects too.
        (TWO_NAMED,
         '{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, [1, 20, 30],'
         '{"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}',
         "Expecting object but got list"),
        # Mix of object and value/list in "instances" list. First element is a list. Rest are expected
        # to be list too.
        ({"str_tensor": t.DT_STRING}, '["baz", "bar"], {"str_tensor": ["baz", "bat"]}',
         "Expecting value/list but got object"),
    ],
)  # fmt: skip
def test_multiple_named_tensor_errors(infomap: dict[str, int], instances: str, message: str) -> None:
    assert message in predict_error(f'{{"instances": [{instances}]}}', infomap)


# ------------------------------------------------------------------------------------------- MakeJsonFromTensors


def int_tensor_2x3x2() -> np.ndarray:
    return int32_tensor((2, 3, 2), [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])


def str_tensor_bytes() -> np.ndarray:
    return string_tensor((2, 2), [b"hello", b"world", b"tf", b"serving"])


# Ports TEST(JsontensorTest, FromJsonSingleTensor).
def test_from_json_single_tensor() -> None:
    tensormap = {"int_tensor": int_tensor_2x3x2()}
    json_text = t.encode_predict_response(tensormap, t.Format.ROW)
    compare_json(json_text, '{"predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}')
    json_text = t.encode_predict_response(tensormap, t.Format.COLUMNAR)
    compare_json(json_text, '{"outputs": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]}')


# Ports TEST(JsontensorTest, FromJsonSingleScalarTensor).
def test_from_json_single_scalar_tensor() -> None:
    tensormap = {"int_tensor": int32_tensor((5,), [1, 2, 3, 4, 5])}
    compare_json(t.encode_predict_response(tensormap, t.Format.ROW), '{ "predictions": [1, 2, 3, 4, 5] }')
    compare_json(t.encode_predict_response(tensormap, t.Format.COLUMNAR), '{ "outputs": [1, 2, 3, 4, 5] }')


# Ports TEST(JsontensorTest, FromJsonSingleBytesTensor).
def test_from_json_single_bytes_tensor() -> None:
    json_text = t.encode_predict_response({"str_tensor_bytes": str_tensor_bytes()}, t.Format.ROW)
    compare_json(
        json_text,
        """{"predictions": [
             [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
             [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]
           ]}""",
    )


# Ports TEST(JsontensorTest, FromJsonSingleFloatTensorSixDigitPrecision).
def test_from_json_single_float_tensor_six_digit_precision() -> None:
    values = [9000000, 999999, 0.50000, 0.0003, 0.00003, 555557.5]
    tensormap = {"float_tensor": np.array(values, dtype=np.float32).reshape(2, 3)}
    compare_json_all_values_as_strings(
        t.encode_predict_response(tensormap, t.Format.ROW),
        '{"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}',
    )


# Ports TEST(JsontensorTest, FromJsonSingleFloatTensorNonFinite).
def test_from_json_single_float_tensor_non_finite() -> None:
    values = [math.nan, math.inf, 3, -math.inf]
    tensormap = {"float_tensor": np.array(values, dtype=np.float32).reshape(2, 2)}
    compare_json_all_values_as_strings(
        t.encode_predict_response(tensormap, t.Format.ROW),
        '{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}',
    )


# Ports TEST(JsontensorTest, FromJsonSingleTensorErrors).
def test_from_json_single_tensor_errors() -> None:
    with pytest.raises(InvalidArgument, match="empty tensor map"):
        t.encode_predict_response({}, t.Format.ROW)
    # scomplex_val: 1.0 scomplex_val: 2.0 with shape [2]: the one value (1+2j), repeated.
    complex64 = np.full((2,), 1 + 2j, dtype=np.complex64)
    with pytest.raises(InvalidArgument, match="tensor type: complex64"):
        t.encode_predict_response({"tensor": complex64}, t.Format.ROW)
    # dtype: DT_INT32 int_val: 1 with no tensor_shape: a scalar.
    with pytest.raises(InvalidArgument, match="no shape information"):
        t.encode_predict_response({"tensor": np.array(1, dtype=np.int32)}, t.Format.ROW)


# Ports TEST(JsontensorTest, FromJsonMultipleNamedTensors).
def test_from_json_multiple_named_tensors() -> None:
    tensormap = {
        "int_tensor": int_tensor_2x3x2(),
        "str_tensor": string_tensor((2, 2), [b"foo", b"bar", b"baz", b"bat"]),
        "float_tensor": np.array([[1.0], [2.0]], dtype=np.float32),
        "double_scalar_tensor": np.array([8.0, 9.0], dtype=np.float64),
        "str_tensor_bytes": str_tensor_bytes(),
    }
    compare_json(
        t.encode_predict_response(tensormap, t.Format.ROW),
        """{
        "predictions": [
          {
            "double_scalar_tensor": 8.0,
            "float_tensor": [1.0],
            "int_tensor": [[1, 2], [3, 4], [5, 6]],
            "str_tensor": ["foo", "bar"],
            "str_tensor_bytes": [ {"b64": "aGVsbG8="}, {"b64": "d29ybGQ="} ]
          },
          {
            "double_scalar_tensor": 9.0,
            "float_tensor": [2.0],
            "int_tensor": [[7, 8], [9, 0], [1, 2]],
            "str_tensor": ["baz", "bat"],
            "str_tensor_bytes": [ {"b64": "dGY="}, {"b64": "c2VydmluZw=="} ]
          }
        ]}""",
    )
    compare_json(
        t.encode_predict_response(tensormap, t.Format.COLUMNAR),
        """{
        "outputs": {
          "double_scalar_tensor": [8.0, 9.0],
          "float_tensor": [[1.0], [2.0]],
          "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
          "str_tensor": [["foo", "bar"], ["baz", "bat"]],
          "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                               [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]
        }}""",
    )


# Ports TEST(JsontensorTest, FromJsonMultipleNamedTensorsErrors).
def test_from_json_multiple_named_tensors_errors() -> None:
    tensormap = {
        "int_tensor": int32_tensor((2, 3), [1, 2, 3, 4, 5, 6]),
        "str_tensor": string_tensor((1, 3), [b"foo", b"bar", b"baz"]),
    }
    with pytest.raises(InvalidArgument, match="inconsistent batch size"):
        t.encode_predict_response(tensormap, t.Format.ROW)


# Ports TEST(JsontensorTest, FromJsonSingleZeroBatchTensor).
def test_from_json_single_zero_batch_tensor() -> None:
    tensormap = {"int_tensor": np.zeros((0, 2), dtype=np.int32)}
    compare_json(t.encode_predict_response(tensormap, t.Format.ROW), '{ "predictions": [] }')


# Ports TEST(JsontensorTest, FromJsonMultipleZeroBatchTensors).
def test_from_json_multiple_zero_batch_tensors() -> None:
    tensormap = {
        "str_tensor": string_tensor((0, 1, 2), []),
        "float_tensor": np.zeros((0, 3, 4), dtype=np.float32),
    }
    compare_json(t.encode_predict_response(tensormap, t.Format.ROW), '{ "predictions": [] }')


# Ports TEST(JsontensorTest, FromJsonMultipleZeroBatchTensorsErrors).
def test_from_json_multiple_zero_batch_tensors_errors() -> None:
    tensormap = {
        "int_tensor": np.zeros((0, 2), dtype=np.int32),
        "str_tensor": string_tensor((1, 2), [b"foo", b"bar"]),
    }
    with pytest.raises(InvalidArgument, match="inconsistent batch size"):
        t.encode_predict_response(tensormap, t.Format.ROW)


# ------------------------------------------------------------------------------------------- Fill{Classification,Regression}RequestFromJson

Features = dict[str, tuple[str, list[Any]]]


@pytest.fixture(scope="module")
def example_pb2() -> ModuleType:
    from tensorflow.core.example import example_pb2 as module

    return module


def fill_classify_regress_request(json_text: str) -> tuple[str, list[bytes]]:
    """``FillClassificationRequestFromJson`` / ``FillRegressionRequestFromJson``: engine.py's calls."""
    from modelservice_runtime.protocols.tfserving_engine import serialized_examples

    doc = parse_json_body(json_text.encode())
    return t.signature_name_of(doc), serialized_examples(doc, "classify")


def classify_regress_error(json_text: str) -> str:
    with pytest.raises(InvalidArgument) as raised:
        fill_classify_regress_request(json_text)
    return raised.value.message


def features_of(serialized: bytes, example_pb2: ModuleType) -> Features:
    example = example_pb2.Example.FromString(serialized)
    features: Features = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        features[name] = (kind, list(getattr(feature, kind).value))
    return features


def assert_features_equal(got: Features, expected: Features) -> None:
    """``MessageDifferencer`` with approximate float comparison and NaN equal to NaN."""
    assert got.keys() == expected.keys()
    for name, (kind, values) in expected.items():
        assert got[name][0] == kind, name
        assert len(got[name][1]) == len(values), name
        for a, b in zip(got[name][1], values, strict=True):
            if kind == "float_list":
                assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), name
            else:
                assert a == b, name


# Ports TYPED_TEST(ClassifyRegressRequestTest, RequestNoContext).
def test_request_no_context(example_pb2: ModuleType) -> None:
    signature_name, examples = fill_classify_regress_request(
        """
        {
          "examples": [
            {
              "names": [ "foo", "bar" ],
              "ratings": [ 8.0, 9.0 ],
              "age": 20
            },
            {
              "names": [ "baz" ],
              "ratings": 6.0
            }
          ]
        }"""
    )
    assert signature_name == ""
    expected: list[Features] = [
        {
            "names": ("bytes_list", [b"foo", b"bar"]),
            "ratings": ("float_list", [8.0, 9.0]),
            "age": ("int64_list", [20]),
        },
        {"names": ("bytes_list", [b"baz"]), "ratings": ("float_list", [6.0])},
    ]
    assert len(examples) == len(expected)
    for serialized, features in zip(examples, expected, strict=True):
        assert_features_equal(features_of(serialized, example_pb2), features)


# Ports TYPED_TEST(ClassifyRegressRequestTest, RequestWithContextAndSignature).
def test_request_with_context_and_signature(example_pb2: ModuleType) -> None:
    signature_name, examples = fill_classify_regress_request(
        """
        {
          "signature_name": "custom_signture",
          "context": {
            "query": "pizza",
            "location": [ "sfo" ]
          },
          "examples": [
            {
              "names": [ "foo", "bar" ],
              "ratings": [ 8.0, 9.0, NaN, Infinity ],
              "age": 20
            },
            {
              "names": [ "baz", { "b64": "aGVsbG8=" } ],
              "ratings": 6.0,
              "intboolmix": [ 1, true, false ]
            },
            {
              "names": "bar",
              "ratings": -Infinity
            }
          ]
        }"""
    )
    assert signature_name == "custom_signture"
    context: Features = {"query": ("bytes_list", [b"pizza"]), "location": ("bytes_list", [b"sfo"])}
    expected: list[Features] = [
        {
            "names": ("bytes_list", [b"foo", b"bar"]),
            "ratings": ("float_list", [8.0, 9.0, math.nan, math.inf]),
            "age": ("int64_list", [20]),
        },
        {
            "names": ("bytes_list", [b"baz", b"hello"]),
            "ratings": ("float_list", [6.0]),
            "intboolmix": ("int64_list", [1, 1, 0]),
        },
        {"names": ("bytes_list", [b"bar"]), "ratings": ("float_list", [-math.inf])},
    ]
    assert len(examples) == len(expected)
    for serialized, features in zip(examples, expected, strict=True):
        assert_features_equal(features_of(serialized, example_pb2), {**context, **features})


# Ports TYPED_TEST(ClassifyRegressRequestTest, JsonErrors).
@pytest.mark.parametrize(
    ("json_text", "message"),
    [
        ('{"signature_name": [ "hello" ], "examples": [ { "names": [ "foo", "bar" ] } ]}',
         "'signature_name' key must be a string"),
        ('{"context": [ { "names": [ "foo", "bar" ] } ]}', "Example must be JSON object"),
        ('{"examples": { "names": [ "foo", "bar" ] }}', "list/array"),
        ('{"examples": [ [ { "names": [ "foo", "bar" ] } ] ]}', "Example must be JSON object"),
        ('{"examples": [ { "names": [ 10, null ] } ]}', "names has element with unexpected JSON type: Null"),
        ('{"examples": [ { "names": [ 10, 10.0 ] } ]}', "feature: names expecting type: int64"),
        ('{"examples": [ { "names": [ 10, { "test": 10 } ] } ]}',
         "names has element with unexpected JSON type: Object"),
        ('{"examples": [ { "names": [ [10], 20 ] } ]}', "names has element with unexpected JSON type: Array"),
        ('{"examples": [ { "names": [ 20, 18446744073709551603 ] } ]}', "Only int64_t is supported"),
    ],
)  # fmt: skip
def test_json_errors(json_text: str, message: str) -> None:
    assert message in classify_regress_error(json_text)


# ------------------------------------------------------------------------------------------- MakeJsonFrom{Classification,Regression}Result


# Ports TEST(ClassifyRegressnResultTest, JsonFromClassificationResult).
def test_json_from_classification_result() -> None:
    result = [
        [("car", 0.2), ("bike", 0.7), ("bus", 0.1)],
        [("car", 0.7), ("bike", 0.1), ("bus", 0.2)],
    ]
    compare_json(
        t.encode_classification(result),
        """{
        "results": [
          [ ["car", 0.2], ["bike", 0.7], ["bus", 0.1] ],
          [ ["car", 0.7], ["bike", 0.1], ["bus", 0.2] ]
        ]}""",
    )


# Ports TEST(ClassifyRegressnResultTest, JsonFromRegressionResult).
def test_json_from_regression_result() -> None:
    compare_json(t.encode_regression([0.2, 0.9, 1.0]), '{ "results": [ 0.2, 0.9, 1.0 ] }')


# Ports TEST(ClassifyRegressnResultTest, JsonFromRegressionResultWithNonFinite).
def test_json_from_regression_result_with_non_finite() -> None:
    compare_json_all_values_as_strings(
        t.encode_regression([0.2, math.inf, 1.0, -math.inf, math.nan]),
        '{ "results": [ 0.2, Infinity, 1.0, -Infinity, NaN ] }',
    )


# Ports TEST(ClassifyRegressnResultTest, JsonFromResultErrors).
def test_json_from_result_errors() -> None:
    with pytest.raises(InvalidArgument, match="empty ClassificationResults"):
        t.encode_classification([])
    with pytest.raises(InvalidArgument, match="empty RegressionResults"):
        t.encode_regression([])


# ------------------------------------------------------------------------------------------- MakeJsonFromStatus


# Ports TEST(MakeJsonFromTensors, StatusError).
def test_status_error() -> None:
    compare_json(error_body('Bad key: "key"'), '{ "error": "Bad key: \\"key\\"" }')
    compare_json(error_body("Bad key: 'key'"), """{ "error": "Bad key: 'key'" }""")
