"""The Open Inference Protocol (V2) on real SavedModels: metadata, readiness, JSON and binary inference."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from flask.testing import FlaskClient

pytestmark = pytest.mark.integration

LINEAR = "/v2/models/linear"


def infer_body(*inputs: dict[str, object], **extra: object) -> dict[str, object]:
    return {"inputs": list(inputs), **extra}


def x_input(rows: list[list[float]]) -> dict[str, object]:
    return {"name": "x", "shape": [len(rows), 4], "datatype": "FP32", "data": [v for r in rows for v in r]}


def binary_request(header: dict[str, object], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(text)), "Content-Type": "application/octet-stream"}
    return text + b"".join(blobs), headers


def split_binary_response(data: bytes, header_length: int) -> tuple[dict[str, object], bytes]:
    return json.loads(data[:header_length]), data[header_length:]


def bytes_elements(blob: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(blob):
        (length,) = struct.unpack_from("<I", blob, offset)
        out.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return out


# --------------------------------------------------------------------------------- metadata, ready


def test_server_metadata_names_the_binary_extension(client: FlaskClient) -> None:
    body = client.get("/v2").get_json()
    assert body["name"] == "modelservice-runtime"
    assert "binary_tensor_data" in body["extensions"]


def test_model_metadata_has_v2_datatypes_and_shapes(client: FlaskClient) -> None:
    body = client.get(LINEAR).get_json()
    assert body["name"] == "linear" and body["versions"] == ["1", "2"]
    assert body["platform"] == "tensorflow_savedmodel"
    assert body["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["datatype"] for o in body["outputs"]] == ["FP32"]
    multi = client.get("/v2/models/multi/versions/1").get_json()
    assert {i["name"]: i["datatype"] for i in multi["inputs"]} == {"a": "FP32", "b": "INT64"}
    assert {o["name"]: o["datatype"] for o in multi["outputs"]}["tag_bytes"] == "BYTES"


def test_metadata_of_an_unknown_version_is_404_json(client: FlaskClient) -> None:
    response = client.get(LINEAR + "/versions/9")
    assert response.status_code == 404
    assert "linear" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        ({"name": "x", "shape": [True, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
         "'shape' must be a list of non-negative integers"),
        ({"name": "x", "shape": [2**62, 0], "datatype": "FP32", "data": []},
         "no tensor can have shape [4611686018427387904, 0]"),
        ({"name": "\udc80", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
         "is not an input of the model"),
    ],
)  # fmt: skip
def test_shapes_and_names_no_tensor_can_have_are_400_not_500(
    client: FlaskClient, tensor: dict[str, object], words: str
) -> None:
    response = client.post(
        LINEAR + "/infer", data=json.dumps({"inputs": [tensor]}), content_type="application/json"
    )
    assert response.status_code == 400 and words in response.get_data().decode("utf-8", "replace"), (
        response.data
    )


def test_a_request_id_with_a_lone_surrogate_comes_back_escaped(client: FlaskClient) -> None:
    body = {
        "id": "\udc80",
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
    }
    response = client.post(LINEAR + "/infer", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200 and b'"id":"\\udc80"' in response.data, response.data


def test_model_ready_is_200_for_a_served_model_and_404_for_an_unknown_one(client: FlaskClient) -> None:
    assert client.get(LINEAR + "/ready").get_json() == {"name": "linear", "ready": True}
    assert client.get(LINEAR + "/versions/1/ready").status_code == 200
    missing = client.get("/v2/models/nope/ready")
    assert missing.status_code == 404 and "nope" in missing.get_json()["error"]


# --------------------------------------------------------------------------------------- JSON infer


def test_infer_with_flat_json_data_answers_each_row(client: FlaskClient) -> None:
    response = client.post(
        LINEAR + "/infer", json=infer_body(x_input([[1, 2, 3, 4], [5, 6, 7, 8]]), id="r-1")
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["model_name"] == "linear" and body["model_version"] == "2" and body["id"] == "r-1"
    (output,) = body["outputs"]
    assert output["datatype"] == "FP32" and output["shape"] == [2, 4]
    assert output["data"] == [2, 4, 6, 8, 10, 12, 14, 16]  # version 2 doubles


def test_infer_accepts_nested_data_and_a_pinned_version(client: FlaskClient) -> None:
    nested = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}
    body = client.post(LINEAR + "/versions/1/infer", json=infer_body(nested)).get_json()
    assert body["model_version"] == "1" and body["outputs"][0]["data"] == [1, 2, 3, 4]


def test_infer_returns_only_the_requested_outputs(client: FlaskClient) -> None:
    a = {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}
    b = {"name": "b", "shape": [2], "datatype": "INT64", "data": [5, 6]}
    body = client.post(
        "/v2/models/multi/infer", json=infer_body(a, b, outputs=[{"name": "tag_bytes"}, {"name": "sum"}])
    ).get_json()
    assert [o["name"] for o in body["outputs"]] == ["tag_bytes", "sum"]
    assert body["outputs"][0] == {"name": "tag_bytes", "datatype": "BYTES", "shape": [2], "data": ["5", "6"]}
    assert body["outputs"][1]["data"] == [3, 7]


def test_infer_with_bytes_tensors_as_json_strings(client: FlaskClient) -> None:
    text = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["abc", "héllo"]}
    body = client.post("/v2/models/strings/infer", json=infer_body(text)).get_json()
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["length"] == {"name": "length", "datatype": "INT32", "shape": [2], "data": [3, 6]}
    assert outputs["upper"]["data"] == ["ABC", "HéLLO"]


def test_nan_and_infinity_survive_the_json_round_trip(client: FlaskClient) -> None:
    body = (b'{"parameters": {"signature_name": "halve"}, "inputs": [{"name": "x", "shape": [2, 2], '
            b'"datatype": "FP32", "data": [NaN, 1, -Infinity, 2]}]}')  # fmt: skip
    response = client.post("/v2/models/multi/infer", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert b"NaN" in response.data and b"-Infinity" in response.data
    output = json.loads(response.data)["outputs"][0]
    assert output["name"] == "half"
    assert np.isnan(output["data"][0]) and output["data"][1:] == [0.5, float("-inf"), 1.0]


# ------------------------------------------------------------------------------------ binary extension


def test_binary_input_is_read_after_the_json_header(client: FlaskClient) -> None:
    values = np.arange(8, dtype="<f4")
    header = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                          "parameters": {"binary_data_size": values.nbytes}}]}  # fmt: skip
    data, headers = binary_request(header, [values.tobytes()])
    response = client.post(LINEAR + "/versions/1/infer", data=data, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["outputs"][0]["data"] == values.tolist()


def test_binary_output_follows_the_json_header_when_asked_for(client: FlaskClient) -> None:
    request = infer_body(
        x_input([[1, 2, 3, 4]]), outputs=[{"name": "output_0", "parameters": {"binary_data": True}}]
    )
    response = client.post(LINEAR + "/versions/1/infer", json=request)
    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    header, blob = split_binary_response(
        response.data, int(response.headers["Inference-Header-Content-Length"])
    )
    (output,) = header["outputs"]  # type: ignore[misc]
    assert output["parameters"] == {"binary_data_size": 16} and "data" not in output
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4"), [1, 2, 3, 4])


def test_binary_bytes_tensors_use_length_prefixed_elements(client: FlaskClient) -> None:
    elements = [b"ab", b"\xff\x00z"]
    blob = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    header = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(blob)}}],
              "parameters": {"binary_data_output": True}}  # fmt: skip
    data, headers = binary_request(header, [blob])
    response = client.post("/v2/models/strings/infer", data=data, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    meta, payload = split_binary_response(
        response.data, int(response.headers["Inference-Header-Content-Length"])
    )
    outputs = meta["outputs"]  # type: ignore[index]
    assert [o["name"] for o in outputs] == ["length", "upper"]
    length_size = outputs[0]["parameters"]["binary_data_size"]
    np.testing.assert_array_equal(np.frombuffer(payload[:length_size], "<i4"), [2, 3])
    assert bytes_elements(payload[length_size:]) == [b"AB", b"\xff\x00Z"]


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (infer_body({"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}),
         "input 'x' has datatype FP64 but the model expects FP32"),
        (infer_body({"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}),
         "input 'x': shape says 4 elements but 'data' has 3"),
        (infer_body({"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}),
         "input 'y' is not an input of the model; expected: x"),
        (infer_body({"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}),
         "input 'x': FP32 data cannot hold non-numbers"),
        (infer_body({"name": "x", "shape": [1, 4], "datatype": "FLOAT", "data": [1, 2, 3, 4]}),
         "unsupported datatype 'FLOAT'"),
        (infer_body({"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}),
         "Matrix size-incompatible: In[0]: [1,3], In[1]: [4,4]"),
        ({"inputs": []}, "needs a non-empty 'inputs' list"),
        (infer_body({"name": "x", "shape": [2**40, 2**40], "datatype": "FP32", "data": []}),
         "has more elements than the request has bytes"),
        (infer_body({"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1e300, 1, 2, 3]}),
         "input 'x': a value is out of range for FP32"),
        (infer_body(x_input([[1, 2, 3, 4]]), outputs=[{"name": "nope"}]), "output 'nope' is not an output"),
        (infer_body(x_input([[1, 2, 3, 4]]), parameters=[1]), "the request: 'parameters' must be an object"),
        (infer_body(x_input([[1, 2, 3, 4]]), outputs=[{"name": "output_0", "parameters": "binary"}]),
         "output 'output_0': 'parameters' must be an object"),
        ([1, 2], "must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_infer_requests_are_400_with_a_message_that_names_the_problem(
    client: FlaskClient, body: dict[str, object], message: str
) -> None:
    response = client.post(LINEAR + "/versions/1/infer", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_a_missing_input_is_named(client: FlaskClient) -> None:
    a = {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    response = client.post("/v2/models/multi/infer", json=infer_body(a))
    assert response.status_code == 400 and response.get_json()["error"] == "missing input(s): b"


@pytest.mark.parametrize("length", ["99", "-1", "\u00b2"])  # "²": a digit to str.isdigit(), not to int()
def test_a_header_length_past_the_body_or_not_a_number_is_400(client: FlaskClient, length: str) -> None:
    response = client.post(LINEAR + "/infer", data=b"{}", headers={"Inference-Header-Content-Length": length})
    assert response.status_code == 400 and "Inference-Header-Content-Length" in response.get_json()["error"]


def test_binary_data_of_the_wrong_size_is_400(client: FlaskClient) -> None:
    header = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                          "parameters": {"binary_data_size": 8}}]}  # fmt: skip
    data, headers = binary_request(header, [b"\0" * 8])
    response = client.post(LINEAR + "/infer", data=data, headers=headers)
    assert response.status_code == 400 and "needs 16 bytes" in response.get_json()["error"]


def test_unknown_models_and_malformed_json_are_json_errors(client: FlaskClient) -> None:
    missing = client.post("/v2/models/nope/infer", json=infer_body(x_input([[1, 2, 3, 4]])))
    assert missing.status_code == 404 and "nope" in missing.get_json()["error"]
    broken = client.post(LINEAR + "/infer", data=b"{nope", content_type="application/json")
    assert broken.status_code == 400 and "JSON Parse error" in broken.get_json()["error"]
    wrong_method = client.get(LINEAR + "/infer")
    assert wrong_method.status_code == 405 and "error" in wrong_method.get_json()
