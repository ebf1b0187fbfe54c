"""The rapidjson PrettyWriter emulation and TF Serving's float formatting."""

from __future__ import annotations

import numpy as np
import pytest

from modelservice_runtime.protocols.rapidjson import (
    MAX_ECHO_CHARS,
    PrettyWriter,
    error_body,
    format_decimal,
    format_decimals,
    value_to_string,
)


@pytest.mark.parametrize(
    ("value", "single", "text"),
    [
        (2.0, True, "2.0"),
        (0.1, True, "0.1"),  # float32 0.1 round-trips at 6 digits
        (float(np.float32(0.123456789)), True, "0.123456791"),  # needs max_digits10 = 9
        (1e6, True, "1e+06"),  # %g switches to exponent: no ".0" added
        (3e-05, True, "3e-05"),
        (123456.0, True, "123456.0"),
        (1 / 3, False, "0.33333333333333331"),  # double: max_digits10 = 17
        (float("nan"), True, "NaN"),
        (float("-inf"), False, "-Infinity"),
    ],
)
def test_decimals_are_written_like_tf_serving_write_decimal(value: float, single: bool, text: str) -> None:
    assert format_decimal(value, single) == text
    assert format_decimals(np.array([value], dtype=np.float32 if single else np.float64), single) == [text]


def test_vectorised_formatting_matches_the_scalar_one_on_random_floats() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(size=500) * 10.0 ** rng.integers(-8, 9, size=500), [0.0, -0.0, 7.0]])
    for dtype, single in ((np.float32, True), (np.float64, False)):
        array = values.astype(dtype)
        assert format_decimals(array, single) == [format_decimal(float(v), single) for v in array]


def test_pretty_writer_single_line_rows_inside_pretty_containers() -> None:
    writer = PrettyWriter()
    writer.start_object()
    writer.key("predictions")
    writer.start_array()
    for row in (["1.0", "2.0"], ["3.0", "4.0"]):
        writer.single_line = True
        writer.start_array()
        for value in row:
            writer.raw(value)
        writer.end_array()
        writer.single_line = False
    writer.end_array()
    writer.end_object()
    assert writer.getvalue() == '{\n    "predictions": [[1.0, 2.0], [3.0, 4.0]\n    ]\n}'


def test_empty_containers_have_no_newlines() -> None:
    writer = PrettyWriter()
    writer.start_object()
    writer.key("a")
    writer.start_array()
    writer.end_array()
    writer.end_object()
    assert writer.getvalue() == '{\n    "a": []\n}'


def test_error_body_is_a_pretty_json_object() -> None:
    assert error_body('bad "x"\n') == '{\n    "error": "bad \\"x\\"\\n"\n}'


def test_control_characters_are_escaped_with_upper_case_hex() -> None:
    assert error_body("\x1f") == '{\n    "error": "\\u001F"\n}'


# JsonValueToDebugString (TF Serving 2.18+): PrettyWriter with kFormatSingleLineArray, rapidjson's
# Writer::Double for numbers, and JsonWriterWithLimit's stop once 256 bytes are out.
@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": [1, 2]}, '{\n    "a": [1, 2]\n}'),
        ([{"b64": "AA=="}, {}], '[{\n        "b64": "AA=="\n    }, {}]'),  # indent by depth
        (0.1, "0.1"),
        ([1e-7, 1.0, 1e21, 2.5e-300], "[1e-7, 1.0, 1e21, 2.5e-300]"),
        (10**19, "10000000000000000000"),  # a uint64
        (10**20, "100000000000000000000.0"),  # beyond uint64 rapidjson holds a double
        (10**25, "1e25"),
        ([1, float("nan"), 2], "[1, "),  # Writer::Double fails on NaN: the echo stops
        ({"a": float("inf")}, '{\n    "a": '),
        ([True, None, "x\u00e9\n"], '[true, null, "x\u00e9\\n"]'),
    ],
)
def test_echoed_values_are_tf_servings_debug_strings(value: object, text: str) -> None:
    assert value_to_string(value) == text


def test_echoes_stop_at_the_first_token_after_256_bytes() -> None:
    expected = "["
    n = 0
    while len(expected) < 256:
        expected += (", " if n else "") + str(n)
        n += 1
    assert value_to_string(list(range(1000))) == expected
    assert value_to_string([[[[[[[[[[[]]]]]]]]]]]) == "[[[[[[[[[[[]]]]]]]]]]]"
    deep: list[object] = []
    for _ in range(10000):
        deep = [deep]
    assert value_to_string(deep) == "[" * 256
    # Bytes, not characters: 200 two-byte characters are 402 bytes out, so "b" is not written.
    assert value_to_string(["\u00e9" * 200, "b"]) == '["' + "\u00e9" * 200 + '"'


def test_a_single_huge_token_is_capped_unlike_tf_serving() -> None:
    text = value_to_string("x" * 10000)
    assert text == '"' + "x" * (MAX_ECHO_CHARS - 1) + "...(truncated)"
