"""Byte-for-byte emulation of the JSON that TensorFlow Serving writes.

TF Serving writes its REST responses with rapidjson's ``PrettyWriter`` (4-space indent), switching to
``kFormatSingleLineArray`` for each row of a row-format response, and writes floats with
``WriteDecimal`` (``absl::StrCat`` = ``%.6g``, full ``max_digits10`` precision when that does not
round-trip, ``.0`` appended to whole numbers). Clients and dashboards that diff responses, and the
conformance suite, compare against that output, so **for compatibility** we reproduce the writer's state
machine rather than approximate it with ``json.dumps``. The state machine mirrors ``PrettyPrefix``,
``EndArray`` and ``EndObject`` of rapidjson's ``prettywriter.h``.

Reading goes the other way: ``parse_json_body`` parses with orjson and falls back to Python's parser for
what orjson refuses but rapidjson (with ``kParseNanAndInfFlag``) accepts, and words its errors as rapidjson
does ("JSON Parse error: ...").
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson

from ..errors import InvalidArgument

INDENT = "    "
_F32_MAX = float(np.finfo(np.float32).max)


class PrettyWriter:
    """A minimal rapidjson PrettyWriter: values are written as already-formatted raw strings."""

    __slots__ = ("_out", "_stack", "single_line")

    def __init__(self) -> None:
        self._out: list[str] = []
        # One [in_array, value_count] pair per open container, like rapidjson's level stack.
        self._stack: list[list[Any]] = []
        self.single_line = False

    def _prefix(self) -> None:
        if not self._stack:
            return
        level = self._stack[-1]
        out = self._out
        if level[0]:
            if level[1] > 0:
                out.append(", " if self.single_line else ",")
            if not self.single_line:
                out.append("\n" + INDENT * len(self._stack))
        else:
            if level[1] > 0:
                out.append(",\n" if level[1] % 2 == 0 else ": ")
            else:
                out.append("\n")
            if level[1] % 2 == 0:
                out.append(INDENT * len(self._stack))
        level[1] += 1

    def raw(self, text: str) -> None:
        self._prefix()
        self._out.append(text)

    def key(self, name: str) -> None:
        self.raw(quote(name))

    def start_array(self) -> None:
        self._prefix()
        self._stack.append([True, 0])
        self._out.append("[")

    def end_array(self) -> None:
        level = self._stack.pop()
        if level[1] and not self.single_line:
            self._out.append("\n" + INDENT * len(self._stack))
        self._out.append("]")

    def start_object(self) -> None:
        self._prefix()
        self._stack.append([False, 0])
        self._out.append("{")

    def end_object(self) -> None:
        level = self._stack.pop()
        if level[1]:
            self._out.append("\n" + INDENT * len(self._stack))
        self._out.append("}")

    def getvalue(self) -> str:
        return "".join(self._out)


_ESCAPE_LOWER_HEX = re.compile(r"\\u00([0-9a-f]{2})")


def quote(text: str) -> str:
    """A JSON string as rapidjson writes it: UTF-8 left as is, control characters as upper-case \\u00XX."""
    quoted = json.dumps(text, ensure_ascii=False)
    if "\\u00" in quoted:
        quoted = _ESCAPE_LOWER_HEX.sub(lambda m: "\\u00" + m.group(1).upper(), quoted)
    return quoted


def format_decimal(value: float, single: bool) -> str:
    """``WriteDecimal``: the shortest of %.6g / max_digits10 that round-trips, with '.0' on whole numbers."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    roundtrip = float(np.float32(text)) if single else float(text)
    if roundtrip != value:
        text = ("%.9g" if single else "%.17g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def format_decimals(array: np.ndarray, single: bool) -> list[str]:
    """``format_decimal`` over a whole array, with the round-trip check done by numpy for speed."""
    values = array.astype(np.float64, copy=False).ravel()
    as_list = values.tolist()
    texts = [f"{v:.6g}" for v in as_list]
    finite = np.isfinite(values)
    if texts:
        parsed = np.array(texts, dtype=np.float32 if single else np.float64)
        with np.errstate(invalid="ignore"):
            bad = np.nonzero(finite & (parsed.astype(np.float64) != values))[0]
        wide = "%.9g" if single else "%.17g"
        for i in bad.tolist():
            texts[i] = wide % as_list[i]
    for i, text in enumerate(texts):
        if not finite[i]:
            v = as_list[i]
            texts[i] = "NaN" if v != v else ("-Infinity" if v < 0 else "Infinity")
        elif "." not in text and "e" not in text:
            texts[i] = text + ".0"
    return texts


def _grisu_style(value: float) -> str:
    """rapidjson ``Writer::Double`` (Grisu2 + Prettify) for numbers echoed inside error messages."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits, _, exp_text = repr(abs(value)).partition("e")
    exponent = int(exp_text) if exp_text else 0
    if "." in digits:
        whole, frac = digits.split(".")
        frac = frac.rstrip("0")
        exponent -= len(frac)
        digits = (whole + frac).lstrip("0") or "0"
    length = len(digits)
    kk = length + exponent
    if exponent >= 0 and kk <= 21:
        body = digits + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        body = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        body = "0." + "0" * (-kk) + digits
    elif length == 1:
        body = f"{digits}e{kk - 1}"
    else:
        body = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + body


def _write_value(writer: PrettyWriter, value: Any) -> None:
    if isinstance(value, dict):
        writer.start_object()
        for k, v in value.items():
            writer.key(k)
            _write_value(writer, v)
        writer.end_object()
    elif isinstance(value, list):
        writer.start_array()
        for v in value:
            _write_value(writer, v)
        writer.end_array()
    elif value is None:
        writer.raw("null")
    elif value is True:
        writer.raw("true")
    elif value is False:
        writer.raw("false")
    elif isinstance(value, int):
        writer.raw(str(value))
    elif isinstance(value, float):
        writer.raw(_grisu_style(value))
    else:
        writer.raw(quote(str(value)))


MAX_ECHO_CHARS = 4096


def value_to_string(value: Any) -> str:
    """``JsonValueToString``: a JSON value as TF Serving echoes it in error messages.

    Unlike TF Serving we cap the echo (``MAX_ECHO_CHARS``), so a huge bad request does not come back as a
    huge error body.
    """
    if isinstance(value, float):
        single = not math.isfinite(value) or abs(value) <= _F32_MAX
        text = format_decimal(float(np.float32(value)) if single else value, single)
    else:
        writer = PrettyWriter()
        _write_value(writer, value)
        text = writer.getvalue()
    if len(text) > MAX_ECHO_CHARS:
        text = text[:MAX_ECHO_CHARS] + "...(truncated)"
    return text


def error_body(message: str) -> str:
    """``MakeJsonFromStatus``: ``{"error": message}`` as a PrettyWriter writes it."""
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.raw(quote(message))
    writer.end_object()
    return writer.getvalue()


def _innermost_open(text: str, end: int) -> str:
    """The bracket (``[`` or ``{``) enclosing position ``end`` of a JSON text, ignoring strings."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def rapidjson_parse_error(exc: json.JSONDecodeError) -> str:
    """Python's parse error as rapidjson's ``GetParseError_En`` words it, with the byte offset."""
    text, pos = exc.doc, exc.pos
    message = exc.msg
    if message.startswith("Expecting property name"):
        words = "Missing a name for object member."
    elif message == "Expecting ':' delimiter":
        words = "Missing a colon after a name of object member."
    elif message == "Expecting ',' delimiter":
        words = ("Missing a comma or '}' after an object member." if _innermost_open(text, pos) == "{"
                 else "Missing a comma or ']' after an array element.")  # fmt: skip
    elif message.startswith("Unterminated string"):
        words, pos = "Missing a closing quotation mark in string.", len(text)
    elif message.startswith("Invalid control character"):
        words = "Invalid encoding in string."
    elif message.startswith("Invalid \\u"):
        words = "Incorrect hex digit after \\u escape in string."
    elif message.startswith("Invalid \\escape"):
        words = "Invalid escape character in string."
    else:  # "Expecting value" and anything else rapidjson finds where a value should start
        words = "Invalid value."
    return f"JSON Parse error: {words} at offset: {len(text[:pos].encode('utf-8', 'surrogatepass'))}"


def parse_json_body(body: bytes) -> Any:
    """``ParseJson``: orjson first; Python's parser for what orjson refuses (NaN, Infinity, huge ints)."""
    if not body.strip():
        raise InvalidArgument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            # rapidjson's kParseStopWhenDoneFlag (TF Serving sets it): parsing stops after the document,
            # whatever follows it is ignored.
            start = len(exc.doc) - len(exc.doc.lstrip(" \t\n\r"))
            return json.JSONDecoder().raw_decode(exc.doc, start)[0]
        raise InvalidArgument(rapidjson_parse_error(exc)) from None
    except RecursionError:
        raise InvalidArgument("JSON Parse error: The document is nested too deeply.") from None
