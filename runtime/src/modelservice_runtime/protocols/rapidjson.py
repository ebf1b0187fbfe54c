"""Byte-for-byte emulation of the JSON that TensorFlow Serving writes.

TF Serving writes its REST responses with rapidjson's ``PrettyWriter`` (4-space indent), switching to
``kFormatSingleLineArray`` for each row of a row-format response, and writes floats with
``WriteDecimal`` (``absl::StrCat`` = ``%.6g``, full ``max_digits10`` precision when that does not
round-trip, ``.0`` appended to whole numbers). Clients and dashboards that diff responses, and the
conformance suite, compare against that output, so **for compatibility** we reproduce the writer's state
machine rather than approximate it with ``json.dumps``. The state machine mirrors ``PrettyPrefix``,
``EndArray`` and ``EndObject`` of rapidjson's ``prettywriter.h``.

Error messages echo request values as TF Serving's ``JsonValueToDebugString`` does (``value_to_string``:
single-line arrays, cut after 256 bytes).

Reading goes the other way: ``parse_json_body`` parses with orjson and falls back to Python's parser for
what orjson refuses but rapidjson (with ``kParseNanAndInfFlag``) accepts, and words its errors as rapidjson
does ("JSON Parse error: ..."). What Python's parser cannot take but TF Serving's iterative rapidjson
parser can (nesting beyond Python's recursion limit, "-NaN", "Inf") goes to ``parse_deep``, an iterative
parser in Python: slow, and only ever reached by such documents.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from ..errors import InvalidArgument

INDENT = "    "


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


def _raw_surrogates(exc: UnicodeError) -> tuple[bytes, int]:
    """Lone surrogates in a JSON text, as bytes (encoding such a text strictly failed the response with
    a 500). One in U+DC80..U+DCFF is taken for a raw byte of a string output (``surrogateescape``): that
    byte again, as TF Serving writes a string's bytes as they are, UTF-8 or not. Any other came from a
    request (a lone low surrogate's escape, which rapidjson 1.1.0 takes, kept by ``surrogatepass``): its
    three bytes. A request's own U+DC80..U+DCFF, quoted back in an error, is written as one byte where
    TF Serving would write three."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for char in exc.object[exc.start : exc.end]:
        code = ord(char)
        out += bytes((code - 0xDC00,)) if 0xDC80 <= code <= 0xDCFF else char.encode("utf-8", "surrogatepass")
    return bytes(out), exc.end


codecs.register_error("modelservice.raw_surrogates", _raw_surrogates)


def json_bytes(text: str) -> bytes:
    """A JSON text as a response's bytes: UTF-8, and lone surrogates as ``_raw_surrogates`` writes them."""
    return text.encode("utf-8", "modelservice.raw_surrogates")


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


_END = object()
DEBUG_STRING_BYTES = 256  # TF Serving's kMaxJsonDebugStringBytes
MAX_ECHO_CHARS = 4096
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def value_to_string(value: Any) -> str:
    """``JsonValueToDebugString``: a JSON value as TF Serving 2.18+ echoes it in error messages.

    rapidjson's PrettyWriter with ``kFormatSingleLineArray`` behind TF Serving's ``JsonWriterWithLimit``:
    before each token it checks that fewer than 256 bytes are out and stops for good once not, so a
    long value is cut at a token boundary, unmarked. Numbers are ``Writer::Double`` (Grisu: ``1e-7``,
    ``1.0``), which cannot write NaN or infinity: the echo stops there, after the separator. The walk is
    iterative, so a document of any depth costs at most 256 bytes of work.

    Unlike TF Serving we also cap a single huge token (``MAX_ECHO_CHARS``), which it echoes whole.
    """
    writer = PrettyWriter()
    writer.single_line = True
    _accept(writer, value)
    text = writer.getvalue()
    if len(text) > MAX_ECHO_CHARS:
        text = text[:MAX_ECHO_CHARS] + "...(truncated)"
    return text


def _accept(writer: PrettyWriter, value: Any) -> None:
    """``Value::Accept`` through ``JsonWriterWithLimit``, without recursion."""
    pieces = writer._out
    counted = size = 0

    def in_limit() -> bool:
        nonlocal counted, size
        for piece in pieces[counted:]:  # the limit is on bytes
            size += len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogatepass"))
        counted = len(pieces)
        return size < DEBUG_STRING_BYTES

    stack: list[tuple[bool, Iterator[Any]]] = []  # (is an object, its members or elements still to write)
    node = value
    while True:
        if not in_limit():
            return
        if isinstance(node, dict):
            writer.start_object()
            stack.append((True, iter(node.items())))
        elif isinstance(node, list):
            writer.start_array()
            stack.append((False, iter(node)))
        elif not _write_scalar(writer, node):
            return
        while True:
            if not stack:
                return
            is_object, rest = stack[-1]
            item: Any = next(rest, _END)
            if item is _END:
                if not in_limit():
                    return
                stack.pop()
                if is_object:
                    writer.end_object()
                else:
                    writer.end_array()
                continue
            if is_object:
                if not in_limit():
                    return
                writer.key(item[0])
                node = item[1]
            else:
                node = item
            break


def _write_scalar(writer: PrettyWriter, value: Any) -> bool:
    """One rapidjson handler call for a scalar; False where rapidjson's writer fails (NaN, infinity)."""
    if value is None:
        writer.raw("null")
    elif value is True:
        writer.raw("true")
    elif value is False:
        writer.raw("false")
    elif isinstance(value, str):
        writer.raw(quote(value))
    elif isinstance(value, int) and _INT64_MIN <= value <= _UINT64_MAX:
        writer.raw(str(value))
    elif not isinstance(value, (int, float)):
        writer.raw(quote(str(value)))  # not from a JSON document
    else:  # a double; rapidjson holds a whole number beyond (u)int64 as one
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            writer.raw("")  # Writer::Double writes the separator, then fails
            return False
        writer.raw(_grisu_style(number))
    return True


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


def _offset(text: str, pos: int) -> int:
    return len(text[:pos].encode("utf-8", "surrogatepass"))


def _parse_error(words: str, text: str, pos: int) -> InvalidArgument:
    return InvalidArgument(f"JSON Parse error: {words} at offset: {_offset(text, pos)}")


_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_HIGH_SURROGATE_ERROR = "The surrogate pair in string is invalid."


def _lone_high_surrogate(text: str, end: int | None = None) -> int | None:
    """Where the first ``\\uD800``-``\\uDBFF`` escape not followed by a low one (``\\uDC00``-``\\uDFFF``)
    starts, before ``end``: rapidjson 1.1.0 (TF Serving's) refuses it, Python's parser takes it. Escapes
    are read left to right, so an escaped backslash is never taken for the start of one. A lone low
    surrogate passes, as in rapidjson 1.1.0 (its three bytes go into the string)."""
    pending = pending_end = -1
    for match in _ESCAPE.finditer(text, 0, len(text) if end is None else end):
        hex_digits = match.group(1)
        code = int(hex_digits, 16) if hex_digits else -1
        if pending >= 0:
            if 0xDC00 <= code <= 0xDFFF and match.start() == pending_end:
                pending = -1
                continue
            return pending
        if 0xD800 <= code <= 0xDBFF:
            pending, pending_end = match.start(), match.end()
    return pending if pending >= 0 else None


def rapidjson_parse_error(exc: json.JSONDecodeError) -> str:
    """Python's parse error as rapidjson's ``GetParseError_En`` words it, with the byte offset."""
    text, pos = exc.doc, exc.pos
    message = exc.msg
    surrogate = _lone_high_surrogate(text, pos)
    if surrogate is not None:  # rapidjson stops there, before what Python's parser tripped on
        return f"JSON Parse error: {_HIGH_SURROGATE_ERROR} at offset: {_offset(text, surrogate)}"
    if message.startswith("Expecting property name"):
        words = "Missing a name for object member."
    elif message == "Expecting ':' delimiter":
        words = "Missing a colon after a name of object member."
    elif message in ("Expecting ',' delimiter", "Extra data"):
        number_error = _number_error(text, pos)
        if number_error is not None:
            words, pos = number_error
        elif _innermost_open(text, pos) == "{":
            words = "Missing a comma or '}' after an object member."
        else:
            words = "Missing a comma or ']' after an array element."
    elif message.startswith("Unterminated string"):
        words, pos = "Missing a closing quotation mark in string.", len(text)
    elif message.startswith("Invalid control character"):
        words = "Invalid encoding in string."
    elif message.startswith("Invalid \\u"):
        words = "Incorrect hex digit after \\u escape in string."
    elif message.startswith("Invalid \\escape"):
        words = "Invalid escape character in string."
    elif pos == len(text) - len(text.lstrip(" \t\n\r")) and text[pos : pos + 1] in ("]", "}", ",", ":"):
        # rapidjson's iterative parser (TF Serving's) reports a closing or separating token where the
        # document should start as an empty document.
        words = "The document is empty."
    else:  # "Expecting value" and anything else rapidjson finds where a value should start
        words, pos = "Invalid value.", _invalid_value_offset(text, pos)
    return f"JSON Parse error: {words} at offset: {_offset(text, pos)}"


def _invalid_value_offset(text: str, pos: int) -> int:
    """Where rapidjson stops on a bad value: after what matched of null/true/false, or after a '-'."""
    char = text[pos : pos + 1]
    if char == "-":
        return pos + 1
    if char in _LITERALS and char:
        word = _LITERALS[char][0]
        matched = 1
        while matched < len(word) and text[pos + matched : pos + matched + 1] == word[matched]:
            matched += 1
        return pos + matched
    return pos


def _number_error(text: str, pos: int) -> tuple[str, int] | None:
    """rapidjson's error for a number cut short (``1.``, ``1e``) that Python reports at the '.' or 'e'."""
    if not (0 < pos < len(text) and text[pos] in ".eE" and text[pos - 1].isdigit()):
        return None
    start = pos
    while start > 0 and text[start - 1] in "0123456789.eE+-":
        start -= 1
    number = _NUMBER.match(text, start)
    if number is None or number.end() != pos or number.group(2):
        return None
    if text[pos] == ".":
        return None if number.group(1) else ("Missing fraction part in number.", pos + 1)
    return "Missing exponent in number.", pos + 2 if text[pos + 1 : pos + 2] in ("+", "-") else pos + 1


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_OPEN_RUN = re.compile(r"\[+")
_CLOSE_RUN = re.compile(r"\]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_NAN_INF = re.compile(r"(-?)(?:(NaN)|Inf(inity)?)")
_LITERALS = {"n": ("null", None), "t": ("true", True), "f": ("false", False)}
# Containers nested deeper than this are checked but kept empty. Nothing reads that deep: a tensor has at
# most 64 dimensions, an Example's values are at depth 5, and an echo stops after 256 bytes (a level
# takes at least one); Python code walking the document (pickle's included) stays within its
# recursion limit.
KEPT_DEPTH = 384
_DEEP_LIST: list[Any] = []  # never written to: _attach keeps nothing below KEPT_DEPTH
_DEEP_OBJECT: dict[str, Any] = {}
# States of rapidjson's iterative parser, with the error each reports (``HandleError``).
_START, _VALUE, _ARRAY_FIRST, _OBJECT_FIRST, _KEY, _COLON, _AFTER = range(7)
_STATE_ERRORS = {
    _START: "The document is empty.",
    _VALUE: "Invalid value.",
    _ARRAY_FIRST: "Invalid value.",
    _OBJECT_FIRST: "Missing a name for object member.",
    _KEY: "Missing a name for object member.",
    _COLON: "Missing a colon after a name of object member.",
}


def parse_deep(text: str) -> Any:
    """rapidjson's iterative parser (``kParseIterativeFlag``, as TF Serving parses): no depth limit.

    Only for documents too deep for Python's recursive parser; words its errors as rapidjson does. Runs
    of brackets are taken at once, and below ``KEPT_DEPTH`` one shared empty container stands for each
    level, so a megabyte of ``[`` costs about a tenth of a second.
    """
    stack: list[Any] = []  # open containers, innermost last
    keys: list[str] = []  # the pending key of each open object
    state = _START
    size = len(text)
    pos = _skip(text, 0)
    while pos < size and text[pos] != "\0":  # rapidjson stops reading at a NUL
        char = text[pos]
        if state == _AFTER:
            in_object = isinstance(stack[-1], dict)
            if char == ",":
                state, pos = (_KEY if in_object else _VALUE), pos + 1
            elif in_object and char == "}":
                container = stack.pop()
                keys.pop()
                pos += 1
                if not stack:
                    return container
            elif not in_object and char == "]":
                end = _CLOSE_RUN.match(text, pos).end()  # type: ignore[union-attr]
                while pos < end and stack and isinstance(stack[-1], list):
                    container = stack.pop()
                    pos += 1
                if not stack:
                    return container
            else:
                break
        elif state == _COLON:
            if char != ":":
                break
            state, pos = _VALUE, pos + 1
        elif state in (_OBJECT_FIRST, _KEY):
            if char == "}" and state == _OBJECT_FIRST:
                container = stack.pop()
                keys.pop()
                state, pos = _AFTER, pos + 1
                if not stack:
                    return container
            elif char == '"':
                keys[-1], pos = _scan_string(text, pos)
                state = _COLON
            else:
                break
        elif char == "[":
            end = _OPEN_RUN.match(text, pos).end()  # type: ignore[union-attr]
            while pos < end and len(stack) <= KEPT_DEPTH:
                container = []
                _attach(stack, keys, container)
                stack.append(container)
                pos += 1
            stack.extend([_DEEP_LIST] * (end - pos))
            state, pos = _ARRAY_FIRST, end
        elif char == "{":
            if len(stack) <= KEPT_DEPTH:
                container = {}
                _attach(stack, keys, container)
            else:
                container = _DEEP_OBJECT
            stack.append(container)
            keys.append("")
            state, pos = _OBJECT_FIRST, pos + 1
        elif char == "]" and state == _ARRAY_FIRST:
            container = stack.pop()
            state, pos = _AFTER, pos + 1
            if not stack:
                return container
        elif char in "]},:":
            break
        else:
            value, pos = _scan_scalar(text, pos)
            if not stack:
                return value
            _attach(stack, keys, value)
            state = _AFTER
        if pos < size and text[pos] in " \t\n\r":
            pos = _skip(text, pos)
    if state == _AFTER:
        words = ("Missing a comma or '}' after an object member." if isinstance(stack[-1], dict)
                 else "Missing a comma or ']' after an array element.")  # fmt: skip
    else:
        words = _STATE_ERRORS[state]
    raise _parse_error(words, text, pos)


def _skip(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]


def _attach(stack: list[Any], keys: list[str], value: Any) -> None:
    if not stack or len(stack) > KEPT_DEPTH:
        return
    container = stack[-1]
    if isinstance(container, dict):
        container[keys[-1]] = value
    else:
        container.append(value)


def _scan_string(text: str, pos: int) -> tuple[str, int]:
    try:
        string, end = json.decoder.scanstring(text, pos + 1, True)  # type: ignore[attr-defined]
    except json.JSONDecodeError as exc:
        raise InvalidArgument(rapidjson_parse_error(exc)) from None
    return string, end


def _scan_scalar(text: str, pos: int) -> tuple[Any, int]:
    char = text[pos]
    if char == '"':
        return _scan_string(text, pos)
    if char in _LITERALS:
        word, value = _LITERALS[char]
        if not text.startswith(word, pos):
            raise _parse_error("Invalid value.", text, _invalid_value_offset(text, pos))
        return value, pos + len(word)
    number = _NUMBER.match(text, pos)
    if number:
        end = number.end()
        cut = _number_error(text, end)
        if cut is not None:
            raise _parse_error(cut[0], text, cut[1])
        literal = number.group()
        return (float(literal) if number.group(1) or number.group(2) else int(literal)), end
    special = _NAN_INF.match(text, pos)
    if special and not (special.group(3) is None and text[special.end() : special.end() + 1] == "i"):
        minus, nan = special.group(1), special.group(2)
        return (math.nan if nan else (-math.inf if minus else math.inf)), special.end()
    raise _parse_error("Invalid value.", text, _invalid_value_offset(text, pos))


def parse_json_body(body: bytes) -> Any:
    """``ParseJson``: orjson first; Python's parser for what orjson refuses (NaN, Infinity, huge ints);
    ``parse_deep`` for what Python's refuses but rapidjson takes (deep nesting, "-NaN", "Inf")."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    if not body.strip(b" \t\n\r"):
        raise InvalidArgument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        doc = json.loads(body)
        if b"\\u" in body:
            _refuse_lone_high_surrogates(body.decode(json.detect_encoding(body), "surrogatepass"))
        return doc
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}"
        ) from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _number_error(exc.doc, exc.pos) is None:
            # rapidjson's kParseStopWhenDoneFlag (TF Serving sets it): parsing stops after the document,
            # whatever follows it is ignored.
            start = len(exc.doc) - len(exc.doc.lstrip(" \t\n\r"))
            doc, end = json.JSONDecoder().raw_decode(exc.doc, start)
            _refuse_lone_high_surrogates(exc.doc[:end])
            return doc
        if not _NAN_INF.match(exc.doc, exc.pos):
            raise InvalidArgument(rapidjson_parse_error(exc)) from None
        text = exc.doc  # rapidjson also takes "-NaN", "Inf" and "-Inf", which Python refuses
    except RecursionError:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    _refuse_lone_high_surrogates(text)
    return parse_deep(text)


def _refuse_lone_high_surrogates(text: str) -> None:
    surrogate = _lone_high_surrogate(text)
    if surrogate is not None:
        raise _parse_error(_HIGH_SURROGATE_ERROR, text, surrogate)
