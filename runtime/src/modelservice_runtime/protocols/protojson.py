"""Protocol buffers as TF Serving's C++ ``MessageToJsonString`` prints them.

TF Serving prints model status and metadata with ``add_whitespace`` (one-space indent, trailing newline)
and ``always_print_primitive_fields``; fields come in declaration order with the members of a ``oneof``
after the plain fields (why ``"name"`` follows ``"tensor_shape"`` in a TensorInfo), 64-bit integers and
``Int64Value`` as strings, enums by name, map entries sorted by key. Python's ``json_format`` differs in
order and spacing, hence this small printer.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

_WRAPPERS = {
    "google.protobuf.Int64Value", "google.protobuf.UInt64Value", "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value", "google.protobuf.BoolValue", "google.protobuf.StringValue",
    "google.protobuf.FloatValue", "google.protobuf.DoubleValue", "google.protobuf.BytesValue",
}  # fmt: skip
_QUOTED_INTS = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}  # fmt: skip


def _scalar(field: FieldDescriptor, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum_value = field.enum_type.values_by_number.get(value)
        return json.dumps(enum_value.name) if enum_value is not None else str(value)
    if field.type in _QUOTED_INTS:
        return json.dumps(str(value))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return json.dumps(base64.b64encode(value).decode("ascii"))
    if field.type == FieldDescriptor.TYPE_STRING:
        return json.dumps(value, ensure_ascii=False)
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        if value != value:
            return '"NaN"'
        if value in (float("inf"), float("-inf")):
            return '"Infinity"' if value > 0 else '"-Infinity"'
        return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(value)
    return str(value)


def _value(field: FieldDescriptor, value: Any, depth: int, preserve_names: bool) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(value, depth, preserve_names)
    return _scalar(field, value)


def _ordered_fields(message: Any) -> list[FieldDescriptor]:
    fields = message.DESCRIPTOR.fields
    plain = [f for f in fields if f.containing_oneof is None]
    oneofs = [
        f
        for f in fields
        if f.containing_oneof is not None and message.WhichOneof(f.containing_oneof.name) == f.name
    ]
    return plain + oneofs


def _message(message: Any, depth: int, preserve_names: bool) -> str:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name in _WRAPPERS:
        return _scalar(descriptor.fields_by_name["value"], message.value)
    pad = " " * (depth + 1)
    items = []
    for field in _ordered_fields(message):
        name = field.name if preserve_names else field.json_name
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if not value:
                text = "{}"
            else:
                inner = " " * (depth + 2)
                entries = [
                    f"{inner}{json.dumps(str(k), ensure_ascii=False)}: "
                    f"{_value(value_field, value[k], depth + 2, preserve_names)}"
                    for k in sorted(value)
                ]
                text = "{\n" + ",\n".join(entries) + "\n" + pad + "}"
        elif field.is_repeated:
            if not value:
                text = "[]"
            else:
                inner = " " * (depth + 2)
                entries = [f"{inner}{_value(field, v, depth + 2, preserve_names)}" for v in value]
                text = "[\n" + ",\n".join(entries) + "\n" + pad + "]"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if not message.HasField(field.name):
                continue  # unset sub-messages are omitted; only primitives print their defaults
            text = _message(value, depth + 1, preserve_names)
        else:
            text = _scalar(field, value)
        items.append(f"{pad}{json.dumps(name)}: {text}")
    if not items:
        return "{}"
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"


def proto_to_json(message: Any, preserve_names: bool = False) -> str:
    """The whole message, with the trailing newline the C++ printer adds."""
    return _message(message, 0, preserve_names) + "\n"
