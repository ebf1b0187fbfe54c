"""Decoding TF Serving's JSON tensors: the numpy fast path must agree with the exact walker."""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

import numpy as np
import pytest

from modelservice_runtime.errors import InvalidArgument, Unimplemented
from modelservice_runtime.protocols import tensors as t
from modelservice_runtime.protocols.rapidjson import KEPT_DEPTH, parse_deep, parse_json_body

FLOAT4 = {"x": t.TensorSpec("x", t.DT_FLOAT, (-1, 4))}


def decode(doc: dict[str, Any], specs: dict[str, t.TensorSpec], bools: bool = True) -> dict[str, np.ndarray]:
    _, inputs, _ = t.decode_predict_request(doc, lambda _: specs, bools)
    return inputs


@pytest.mark.parametrize(
    ("dtype", "value"),
    [
        (t.DT_FLOAT, [[1, 2.5], [3, -4]]),
        (t.DT_DOUBLE, [[1e300, 2]]),
        (t.DT_INT32, [[1, -2], [3, 2**31 - 1]]),
        (t.DT_INT64, [2**62, -(2**63)]),
        (t.DT_UINT8, [1, 2, 255]),
        (t.DT_UINT64, [2**64 - 1]),
        (t.DT_BOOL, [[True, False]]),
        (t.DT_FLOAT, 3.5),
    ],
)
def test_fast_path_and_exact_walker_agree(dtype: int, value: Any) -> None:
    fast = t._fast_tensor(value, dtype, may_have_bools=dtype == t.DT_BOOL)
    exact = t._exact_tensor(value, dtype)
    assert fast is not None
    assert fast.dtype == exact.dtype and fast.shape == exact.shape
    np.testing.assert_array_equal(fast, exact)


@pytest.mark.parametrize(
    ("dtype", "value", "message"),
    [
        (t.DT_FLOAT, [1, "a"], 'JSON Value: "a" Type: String is not of expected type: float'),
        (t.DT_FLOAT, [True], "JSON Value: true Type: True is not of expected type: float"),
        (t.DT_INT32, [1.5], "JSON Value: 1.5 Type: Number is not of expected type: int32"),
        (t.DT_INT32, [2**31], "is not of expected type: int32"),
        (t.DT_UINT32, [-1], "is not of expected type: uint32"),
        (t.DT_FLOAT, [[1, 2], [3]], "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        (t.DT_FLOAT, [[1, 2], 3], "found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        (t.DT_FLOAT, [1, [2]], "Encountered list at unexpected level: 1 expected < 1"),
        (t.DT_STRING, [{"b64": "!!"}], "Unable to base64 decode"),
        (t.DT_STRING, [{"x": "y"}], "not formatted correctly for base64 data"),
        (t.DT_FLOAT, [{"b64": "AA=="}], "Type: Object is not of expected type: float"),
    ],
)
def test_bad_values_get_tf_serving_messages(dtype: int, value: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        t._tensor(value, dtype, may_have_bools=True)
    assert message in raised.value.message


def test_unsupported_dtypes_are_unimplemented_501() -> None:
    with pytest.raises(Unimplemented) as raised:
        t._tensor([1.0], t.DT_BFLOAT16, may_have_bools=False)
    assert raised.value.status == 501
    assert "to type: bfloat16" in raised.value.message


def test_bool_tokens_force_the_exact_path_so_true_is_not_read_as_one() -> None:
    with pytest.raises(InvalidArgument):
        decode({"instances": [[True, 1, 1, 1]]}, FLOAT4, bools=True)


def test_row_format_stacks_instances_along_a_new_batch_dimension() -> None:
    got = decode({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}, FLOAT4)
    assert got["x"].shape == (2, 4) and got["x"].dtype == np.float32


def test_ragged_instances_report_the_first_mismatch() -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode({"instances": [[1, 2, 3, 4], [1, 2, 3]]}, FLOAT4)
    assert raised.value.message == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting tensor size: 4 but got: 3"
    )


def test_object_instances_need_exactly_the_signature_keys() -> None:
    specs = {"a": t.TensorSpec("a", t.DT_FLOAT, (-1,)), "b": t.TensorSpec("b", t.DT_INT64, (-1,))}
    got = decode({"instances": [{"a": 1.0, "b": 2}, {"a": 3.0, "b": 4}]}, specs)
    np.testing.assert_array_equal(got["b"], [2, 4])
    with pytest.raises(InvalidArgument) as raised:
        decode({"instances": [{"a": 1.0}]}, specs)
    assert "keys must be equal to: a,b" in raised.value.message
    with pytest.raises(InvalidArgument) as raised:
        decode({"instances": [{"a": 1.0, "b": 2, "c": 3}]}, specs)
    assert "does not have named input: c" in raised.value.message


def test_columnar_inputs_may_be_scalars_and_ignore_extra_keys() -> None:
    specs = {"a": t.TensorSpec("a", t.DT_FLOAT, ()), "b": t.TensorSpec("b", t.DT_STRING, (-1,))}
    got = decode({"inputs": {"a": 2, "b": ["x", {"b64": "eQ=="}], "unused": 1}}, specs)
    assert got["a"].shape == () and list(got["b"]) == [b"x", b"y"]


def test_b64_string_instance_is_a_value_not_a_named_input() -> None:
    specs = {"img": t.TensorSpec("img", t.DT_STRING, (-1,))}
    got = decode({"instances": [{"b64": "AAE="}]}, specs)
    assert got["img"].tolist() == [b"\x00\x01"]


def test_small_int_types_wrap_like_tf_serving_int_val() -> None:
    got = t._tensor([300, -1], t.DT_UINT8, may_have_bools=False)
    assert got.tolist() == [44, 255]


def test_row_response_rejects_scalar_and_mismatched_batch_outputs() -> None:
    with pytest.raises(InvalidArgument, match="has no shape information"):
        t.encode_predict_response({"y": np.float32(1)}, t.Format.ROW)
    with pytest.raises(InvalidArgument, match="has inconsistent batch size: 3 expecting: 2"):
        t.encode_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, t.Format.ROW)


ONE_OUTPUT = {
    "float32 rows": np.array([[0.1, 1e-7, -3.0], [np.nan, np.inf, -np.inf]], dtype=np.float32),
    "float64 rows": np.array([[0.1], [2.0]], dtype=np.float64),
    "one row of ten": np.linspace(0, 1, 10, dtype=np.float32).reshape(1, 10),
    "a vector of ints": np.array([1, -2, 3], dtype=np.int64),
    "uint8 images": np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3),
    "bools": np.array([[True], [False]]),
    "strings": np.array([[b"caf\xc3\xa9", b"a\x01"]], dtype=object),
}


@pytest.mark.parametrize("name", ONE_OUTPUT)
def test_a_single_row_output_is_written_as_the_pretty_writer_writes_it(name: str) -> None:
    outputs = {"y": ONE_OUTPUT[name]}
    fast = t.encode_predict_response(outputs, t.Format.ROW)
    assert fast == t.write_predict_response(outputs, t.Format.ROW)
    assert fast.startswith('{\n    "predictions": [')


def test_columnar_scalar_output_is_a_bare_value() -> None:
    assert t.encode_predict_response({"y": np.float32(1.5)}, t.Format.COLUMNAR) == '{\n    "outputs": 1.5\n}'


def test_string_outputs_are_utf8_and_bytes_outputs_are_b64() -> None:
    text = t.encode_predict_response(
        {"name": np.array([b"caf\xc3\xa9"], dtype=object), "raw_bytes": np.array([b"\xff"], dtype=object)},
        t.Format.ROW,
    )
    assert '"name": "café"' in text
    assert '"raw_bytes": {\n                "b64": "/w=="\n            }' in text


# TF Serving's own cases (FloatTensorWithPrecisionLoss, FloatTensorThatExceedsMaxReturnsInf ...) are in
# test_tfserving_json_tensor_test.py; these check the numpy fast path and the exact walker apply the same
# rules (rapidjson's GetFloat/GetDouble).
@pytest.mark.parametrize(
    ("literal", "expected"), [("1.7976931348623157e+308", np.inf), ("-1.7976931348623157e+308", -np.inf)]
)
def test_a_double_beyond_floats_range_is_inf_on_the_fast_path_too(literal: str, expected: float) -> None:
    spec = {"x": t.TensorSpec("x", t.DT_FLOAT, None)}
    for body in (f'{{"instances": [{literal}]}}', f'{{"instances": [[{literal}, 1.0]]}}'):
        _, tensors, _ = t.decode_predict_request(parse_json_body(body.encode()), lambda _: spec)
        assert tensors["x"].ravel()[0] == expected


@pytest.mark.parametrize(("value", "dtype", "expected"), [
    (2**53 + 1, t.DT_DOUBLE, 9007199254740992.0), (2**24 + 1, t.DT_FLOAT, 16777216.0),
    (2**70, t.DT_FLOAT, float(np.float32(2**70))), (10**400, t.DT_DOUBLE, np.inf),
])  # fmt: skip
def test_whole_numbers_round_to_the_nearest_float_instead_of_being_refused(
    value: int, dtype: int, expected: float
) -> None:
    assert t._tensor([value, 1], dtype, may_have_bools=False)[0] == expected
    assert t._exact_tensor([value, 1], dtype)[0] == expected


def test_bytes_after_the_json_document_are_ignored_as_rapidjson_stop_when_done_does() -> None:
    assert parse_json_body(b'{"instances": [1.0]}  trailing bytes') == {"instances": [1.0]}
    assert parse_json_body(b' \n{"a": 1}{"b": 2}') == {"a": 1}


def test_an_unsupported_input_type_in_row_format_is_a_400_wrapping_the_unimplemented_status() -> None:
    specs = {"x": t.TensorSpec("x", t.DT_HALF, None)}
    with pytest.raises(InvalidArgument) as raised:
        decode({"instances": [1.0]}, specs)
    assert raised.value.status == 400
    assert raised.value.message == (
        "Failed to process element: 0 of 'instances' list. "
        "Error: UNIMPLEMENTED: Conversion of JSON Value: 1.0 to type: half"
    )
    with pytest.raises(Unimplemented):  # the columnar format passes the status on, as TF Serving does
        decode({"inputs": [1.0]}, specs)


@pytest.mark.parametrize(
    ("dtype", "name"), [(np.complex64, "complex64"), (np.complex128, "complex128"), (np.float16, "half")]
)
def test_outputs_of_a_type_tf_serving_cannot_write_are_a_400_naming_the_type(dtype: Any, name: str) -> None:
    for fmt in t.Format:
        with pytest.raises(InvalidArgument) as raised:
            t.encode_predict_response({"y": np.ones((1, 2), dtype=dtype)}, fmt)
        assert raised.value.message == f"Failed to write JSON value for tensor type: {name}"


# TF Serving words parse errors as rapidjson's GetParseError_En with the byte offset ("JSON Parse error:
# Invalid value" for "instances = [1, 2]" is http_rest_api_handler_test.cc's case). It parses with
# rapidjson's iterative parser, whose errors and offsets these are.
PARSE_ERRORS = [
    (b"  ", "The document is empty. at offset: 2"),
    (b"]", "The document is empty. at offset: 0"),  # the iterative parser's word for it
    (b"instances = [1, 2]", "Invalid value. at offset: 0"),
    (b"{not json", "Missing a name for object member. at offset: 1"),
    (b'{"a" 1}', "Missing a colon after a name of object member. at offset: 5"),
    (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member. at offset: 8"),
    (b'{"a": [1 2]}', "Missing a comma or ']' after an array element. at offset: 9"),
    (b'{"a": "[x", "b": [1 2]}', "Missing a comma or ']' after an array element. at offset: 20"),
    (b"[1,]", "Invalid value. at offset: 3"),
    (b'{"a": nul}', "Invalid value. at offset: 9"),  # where the literal stops matching
    (b"[-x]", "Invalid value. at offset: 2"),
    (b"[1.]", "Missing fraction part in number. at offset: 3"),
    (b"[1e+]", "Missing exponent in number. at offset: 4"),
    (b"1.", "Missing fraction part in number. at offset: 2"),
    (b"[1.5.]", "Missing a comma or ']' after an array element. at offset: 4"),
    (b'{"a": "\xc3\xa9abc', "Missing a closing quotation mark in string. at offset: 12"),
    (b'{"a": "\\q"}', "Invalid escape character in string."),
]


@pytest.mark.parametrize(("body", "message"), PARSE_ERRORS)
def test_parse_errors_use_rapidjsons_words_and_byte_offsets(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_json_body(body)
    assert raised.value.message.startswith("JSON Parse error: " + message), raised.value.message


def test_an_empty_body_is_tf_servings_own_message_without_an_offset() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_json_body(b"")
    assert raised.value.message == "JSON Parse error: The document is empty"


@pytest.mark.parametrize(("body", "message"), PARSE_ERRORS)
def test_the_deep_document_parser_words_errors_as_the_fallback_does(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_deep(body.decode())
    assert raised.value.message.startswith("JSON Parse error: " + message), raised.value.message


@pytest.mark.parametrize(
    "text",
    [r'{"a": [1, -2.5, "\u00e9\n", null, true, false, {}, []], "b": {"c": [[]]}}', "[]", "{}", '"x"', "-0"],
)
def test_the_deep_document_parser_reads_what_pythons_parser_reads(text: str) -> None:
    assert parse_deep(text) == json.loads(text)


def test_deeper_than_pythons_parser_goes_is_parsed_as_rapidjson_does() -> None:
    depth = 5000
    doc = parse_json_body(b'{"x": ' + b"[" * depth + b"1" + b"]" * depth + b', "y": 2}')
    assert doc["y"] == 2
    # Below KEPT_DEPTH containers stay empty: nothing reads that deep, and pickle can carry the rest.
    level, kept = doc["x"], 1
    while level:
        level, kept = level[0], kept + 1
    assert kept == KEPT_DEPTH
    pickle.dumps(doc)
    with pytest.raises(InvalidArgument) as raised:
        parse_json_body(b"[" * depth + b"1" + b"]" * (depth - 1))
    assert raised.value.message == (
        f"JSON Parse error: Missing a comma or ']' after an array element. at offset: {2 * depth}"
    )


def test_rapidjsons_other_spellings_of_nan_and_infinity_are_read() -> None:
    doc = parse_json_body(b'{"a": [-NaN, Inf, -Inf, Infinity, 1]}')
    assert math.isnan(doc["a"][0]) and doc["a"][1:] == [math.inf, -math.inf, math.inf, 1]
    with pytest.raises(InvalidArgument, match="Invalid value"):
        parse_json_body(b"[Infinit]")


@pytest.mark.parametrize(("depth", "fmt"), [(65, "columnar"), (64, "row"), (3000, "row"), (3000, "columnar")])
def test_inputs_deeper_than_numpy_takes_are_a_400_not_a_500(depth: int, fmt: str) -> None:
    nested = "[" * depth + "1" + "]" * depth
    body = f'{{"inputs": {nested}}}' if fmt == "columnar" else f'{{"instances": [{nested}]}}'
    specs = {"x": t.TensorSpec("x", t.DT_FLOAT, None)}
    with pytest.raises(InvalidArgument) as raised:
        t.decode_predict_request(parse_json_body(body.encode()), lambda _: specs)
    assert raised.value.message == "tensor parsing error: x"
    shallower = "[" * (depth - 1) + "1" + "]" * (depth - 1)
    if depth - 1 + (fmt == "row") <= t.MAX_DIMS:
        body = f'{{"inputs": {shallower}}}' if fmt == "columnar" else f'{{"instances": [{shallower}]}}'
        _, tensors, _ = t.decode_predict_request(parse_json_body(body.encode()), lambda _: specs)
        assert tensors["x"].ndim == t.MAX_DIMS


def test_scalar_outputs_a_session_returns_as_bytes_or_numpy_scalars_are_written() -> None:
    # {"inputs": {"text": {"b64": "aGk="}}}: a string scalar in, and TF's session hands scalars back as
    # bytes and numpy scalars, not arrays (this was a 500: 'bytes' object has no attribute 'dtype').
    text = t.encode_predict_response(
        {"upper": b"HI", "length": np.int32(2), "raw_bytes": b"a\x00"}, t.Format.COLUMNAR
    )
    assert text == (
        '{\n    "outputs": {\n        "length": 2,\n        "raw_bytes": {\n            "b64": "YQA="\n'
        '        },\n        "upper": "HI"\n    }\n}'
    )
    specs = {"s": t.TensorSpec("s", t.DT_STRING, None)}
    _, inputs, _ = t.decode_predict_request({"inputs": {"s": {"b64": "aGk="}}}, lambda _: specs)
    assert inputs["s"].shape == () and inputs["s"][()] == b"hi"
