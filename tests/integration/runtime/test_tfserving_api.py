"""TF Serving's REST API through the Flask test client, against real SavedModels."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from modelservice_runtime import offload

pytestmark = pytest.mark.integration


def post(client: FlaskClient, path: str, body: object) -> tuple[int, str]:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    response = client.post(path, data=data, content_type="application/json")
    return response.status_code, response.get_data(as_text=True)


def error_of(text: str) -> str:
    message: str = json.loads(text)["error"]
    return message


def test_a_big_requests_cache_digest_leaves_the_event_loop_with_its_decoding(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the response cache on, the request's digest writes the whole document canonically: as CPU-heavy
    # as decoding it, so a big request's goes to the worker's offload thread too (offload.py).
    off_the_loop: list[str] = []

    def recording(fn: Callable[..., Any], *args: Any) -> Any:
        off_the_loop.append(fn.__name__)
        return fn(*args)

    monkeypatch.setattr(offload, "HEAVY_BYTES", 1000)  # this app's body limit is below the real threshold
    monkeypatch.setitem(app.extensions, offload.EXTENSION, recording)
    monkeypatch.setitem(app.extensions, "modelservice.cached", True)
    status, text = post(
        client, "/v1/models/linear/versions/1:predict", {"instances": [[1.0, 2.0, 3.0, 4.0]] * 100}
    )
    assert status == 200 and json.loads(text)["predictions"][99] == [1.0, 2.0, 3.0, 4.0]
    assert {"parse_json_object", "request_digest", "decode_predict_request"} <= set(off_the_loop)
    off_the_loop.clear()
    status, _ = post(client, "/v1/models/linear/versions/1:predict", {"instances": [[1.0, 2.0, 3.0, 4.0]]})
    assert status == 200 and off_the_loop == []  # a small request stays on the loop


# ------------------------------------------------------------------------------------------------- status


def test_model_status_lists_every_version_newest_first_in_tf_serving_layout(client: FlaskClient) -> None:
    response = client.get("/v1/models/linear")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == (
        "{\n"
        ' "model_version_status": [\n'
        "  {\n"
        '   "version": "2",\n'
        '   "state": "AVAILABLE",\n'
        '   "status": {\n'
        '    "error_code": "OK",\n'
        '    "error_message": ""\n'
        "   }\n"
        "  },\n"
        "  {\n"
        '   "version": "1",\n'
        '   "state": "AVAILABLE",\n'
        '   "status": {\n'
        '    "error_code": "OK",\n'
        '    "error_message": ""\n'
        "   }\n"
        "  }\n"
        " ]\n"
        "}\n"
    )


def test_model_status_of_one_version_and_of_a_label(client: FlaskClient) -> None:
    one = json.loads(client.get("/v1/models/linear/versions/1").get_data())
    assert [s["version"] for s in one["model_version_status"]] == ["1"]
    canary = json.loads(client.get("/v1/models/linear/labels/canary").get_data())
    assert [s["version"] for s in canary["model_version_status"]] == ["2"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("/v1/models/linear/versions/9", 404, "Could not find version 9 of model linear"),
        ("/v1/models/linear/labels/nope", 400, "Unrecognized servable version label: nope"),
        ("/v1/models/linear/versions/99999999999999999999", 400,
         "Failed to convert version: 99999999999999999999 to numeric."),
        ("/v1/nonsense", 400, "Malformed request: GET /v1/nonsense"),
    ],
)  # fmt: skip
def test_model_status_errors_match_tf_serving(
    client: FlaskClient, path: str, status: int, message: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.content_type == "application/json"
    assert error_of(response.get_data(as_text=True)) == message


def test_list_models_answers_kserve_v1_clients(client: FlaskClient) -> None:
    body = json.loads(client.get("/v1/models").get_data())
    assert body["models"] == ["examples", "linear", "multi", "strings", "team/strings:v1", "warm"]


def test_failed_load_is_reported_in_status_while_other_models_serve(model_root, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from modelservice_runtime.app import create_app
    from modelservice_runtime.config import ModelConfig, RuntimeConfig

    config = RuntimeConfig(
        models=(
            ModelConfig("broken", str(model_root / "broken")),
            ModelConfig("linear", str(model_root / "linear")),
        )
    )
    app = create_app(config, start_repository=False)
    app.extensions["modelservice.repository"].poll_once()
    client = app.test_client()
    status = json.loads(client.get("/v1/models/broken").get_data())["model_version_status"][0]
    assert status["state"] == "END"
    assert status["status"]["error_code"] != "OK" and status["status"]["error_message"]
    assert client.post("/v1/models/linear:predict", json={"instances": [[1, 1, 1, 1]]}).status_code == 200
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and "broken" in ready.get_json()["error"]


# ----------------------------------------------------------------------------------------------- metadata


def test_metadata_concatenates_model_spec_and_signature_defs_like_tf_serving(client: FlaskClient) -> None:
    text = client.get("/v1/models/linear/versions/1/metadata").get_data(as_text=True)
    assert text.startswith(
        '{\n"model_spec":{\n "name": "linear",\n "signature_name": "",\n "version": "1"\n}\n,\n'
        '"metadata": {"signature_def": {\n "signature_def": {\n'
    )
    body = json.loads(text)
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    tensor = signature["inputs"]["x"]
    assert list(tensor) == ["dtype", "tensor_shape", "name"]  # oneof "name" after plain fields
    assert tensor["dtype"] == "DT_FLOAT"
    assert tensor["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}, {"size": "4", "name": ""}]
    assert signature["method_name"] == "tensorflow/serving/predict"


def test_metadata_by_label_reports_the_resolved_version(client: FlaskClient) -> None:
    body = json.loads(client.get("/v1/models/linear/labels/stable/metadata").get_data())
    assert body["model_spec"]["version"] == "1"


# ------------------------------------------------------------------------------------------------ predict


def test_row_predict_writes_tf_serving_bytes(client: FlaskClient) -> None:
    status, text = post(client, "/v1/models/linear:predict", {"instances": [[1, 2, 3, 4], [0.5, 0, 0, 0]]})
    assert status == 200
    # Latest version (2) doubles its input; floats keep ".0", rows sit on one line each.
    assert text == '{\n    "predictions": [[2.0, 4.0, 6.0, 8.0], [1.0, 0.0, 0.0, 0.0]\n    ]\n}'


def test_versions_and_labels_route_to_their_version(client: FlaskClient) -> None:
    body = {"instances": [[1, 1, 1, 1]]}
    assert json.loads(post(client, "/v1/models/linear/versions/1:predict", body)[1])["predictions"] == [
        [1.0] * 4
    ]
    assert json.loads(post(client, "/v1/models/linear/labels/canary:predict", body)[1])["predictions"] == [
        [2.0] * 4
    ]
    status, text = post(client, "/v1/models/linear/versions/7:predict", body)
    assert (status, error_of(text)) == (404, "Servable not found for request: Specific(linear, 7)")
    status, text = post(client, "/v1/models/ghost:predict", body)
    assert (status, error_of(text)) == (404, "Servable not found for request: Latest(ghost)")


def test_columnar_predict_writes_pretty_nested_arrays(client: FlaskClient) -> None:
    status, text = post(client, "/v1/models/linear/versions/1:predict", {"inputs": [[1, 2, 3, 4]]})
    assert status == 200
    assert text == (
        '{\n    "outputs": [\n        [\n            1.0,\n            2.0,\n            3.0,\n'
        "            4.0\n        ]\n    ]\n}"
    )


def test_named_multi_input_rows_give_one_object_per_prediction(client: FlaskClient) -> None:
    status, text = post(
        client,
        "/v1/models/multi:predict",
        {"instances": [{"a": [1.5, 2], "b": 3}, {"a": [0, 0.25], "b": -4}]},
    )
    assert status == 200
    assert json.loads(text) == {
        "predictions": [
            {"double_b": 6, "sum": 3.5, "tag_bytes": {"b64": base64.b64encode(b"3").decode()}},
            {"double_b": -8, "sum": 0.25, "tag_bytes": {"b64": base64.b64encode(b"-4").decode()}},
        ]
    }
    assert (
        '        {\n            "double_b": 6,\n            "sum": 3.5,\n            "tag_bytes": {\n' in text
    )


def test_named_multi_input_columnar_gives_an_object_of_outputs(client: FlaskClient) -> None:
    status, text = post(client, "/v1/models/multi:predict", {"inputs": {"a": [[1, 2]], "b": [5]}})
    assert status == 200
    body = json.loads(text)
    assert body["outputs"]["sum"] == [3.0] and body["outputs"]["double_b"] == [10]


def test_signature_name_selects_another_signature(client: FlaskClient) -> None:
    status, text = post(
        client, "/v1/models/multi:predict", {"signature_name": "halve", "instances": [[1, 3]]}
    )
    assert (status, json.loads(text)) == (200, {"predictions": [[0.5, 1.5]]})


def test_string_inputs_take_plain_and_b64_values(client: FlaskClient) -> None:
    body = {"instances": ["abc", {"b64": base64.b64encode("héllo".encode()).decode()}]}
    status, text = post(client, "/v1/models/strings:predict", body)
    assert status == 200
    assert json.loads(text)["predictions"] == [{"length": 3, "upper": "ABC"}, {"length": 6, "upper": "HéLLO"}]


def test_lone_surrogates_are_parsed_as_rapidjson_1_1_does_and_never_fail_the_answer(
    client: FlaskClient,
) -> None:
    # TF Serving's rapidjson (1.1.0) refuses a lone high surrogate's escape, at the escape's offset.
    response = client.post("/v1/models/strings:predict", data=b'{"instances": ["\\ud800"]}')
    assert (response.status_code, response.get_json()) == (
        400, {"error": "JSON Parse error: The surrogate pair in string is invalid. at offset: 16"}
    )  # fmt: skip
    # It takes a lone low one as its three bytes (and raw bytes as they are), which come back in the
    # string output: the answer holds those bytes as they are, as TF Serving writes a string's bytes.
    for body, raw in [
        (b'{"instances": ["\\udc80"]}', b"\xed\xb2\x80"),
        (b'{"instances": ["\xed\xa0\x80"]}', b"\xed\xa0\x80"),
    ]:
        response = client.post("/v1/models/strings:predict", data=body, content_type="application/json")
        assert response.status_code == 200, response.data
        assert response.data == b'{\n    "predictions": [\n        {\n            "length": 3,\n' + (
            b'            "upper": "' + raw + b'"\n        }\n    ]\n}'
        )
    # An error that quotes such a value, or a name no signature or feature can have, is a 400.
    for path, body, words in [
        ("/v1/models/linear:predict", b'{"instances": [[1, 2, 3, 4]], "signature_name": "\\udc80"}', b"not found in signature def"),
        ("/v1/models/linear:predict", b'{"instances": [["\xed\xa0\x80", 2, 3, 4]]}', b'JSON Value: \\"\xed\xa0\x80\\" Type: String'),
        ("/v1/models/examples:classify", b'{"signature_name": "\\udc80", "examples": [{"x": 1}]}', b"No signature was found"),
        ("/v1/models/examples:classify", b'{"examples": [{"\\udc80": 1}]}', b"is not valid UTF-8"),
    ]:  # fmt: skip
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 400 and words in response.data, response.data


def test_nan_and_infinity_are_accepted_and_written_back(client: FlaskClient) -> None:
    body = '{"signature_name": "halve", "instances": [[NaN, Infinity], [-Infinity, 2e-7]]}'
    status, text = post(client, "/v1/models/multi:predict", body)
    assert status == 200
    assert text == '{\n    "predictions": [[NaN, Infinity], [-Infinity, 1e-07]\n    ]\n}'


def test_multipart_upload_turns_each_file_into_one_instance(client: FlaskClient) -> None:
    response = client.post(
        "/v1/models/strings:predict",
        data={"file": [(io.BytesIO(b"one"), "a.txt"), (io.BytesIO(b"three"), "b.txt")]},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200
    assert [p["upper"] for p in response.get_json()["predictions"]] == ["ONE", "THREE"]


def test_multipart_upload_to_a_numeric_model_explains_what_it_needs(client: FlaskClient) -> None:
    response = client.post(
        "/v1/models/linear:predict",
        data={"file": (io.BytesIO(b"x"), "a.bin")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert "single string input" in response.get_json()["error"]
    assert "x (float)" in response.get_json()["error"]


def test_warmup_requests_run_before_the_version_is_available(client: FlaskClient) -> None:
    status, text = post(client, "/v1/models/warm:predict", {"instances": [[1, 0, 0, 0]]})
    assert (status, json.loads(text)["predictions"]) == (200, [[3.0, 0.0, 0.0, 0.0]])


# ---------------------------------------------------------------------------------------- classify/regress


def test_classify_returns_label_score_pairs_per_example(client: FlaskClient) -> None:
    status, text = post(
        client, "/v1/models/examples:classify", {"signature_name": "classify_x", "examples": [{"x": 0.0}]}
    )
    assert status == 200
    assert text == '{\n    "results": [[["neg", 0.5], ["pos", 0.5]]\n    ]\n}'


def test_regress_uses_context_features_for_every_example(client: FlaskClient) -> None:
    body = {"signature_name": "regress_x", "context": {"x": 1.0}, "examples": [{}, {"x": 2.0}]}
    status, text = post(client, "/v1/models/examples:regress", body)
    assert (status, json.loads(text)) == (200, {"results": [3.0, 5.0]})


def test_example_numbers_follow_rapidjson_a_whole_number_beyond_int64_is_a_float_feature(
    client: FlaskClient,
) -> None:
    # TF Serving's MakeExampleFromJsonObject: rapidjson holds -2^63-1 as a double, so it is a float feature
    # (the regress signature reads x as float); 2^64-1 is a uint64, which Example cannot hold.
    body = {"signature_name": "regress_x", "examples": [{"x": -(2**63) - 1}]}
    status, text = post(client, "/v1/models/examples:regress", body)
    assert status == 200 and json.loads(text)["results"][0] == pytest.approx(2 * -(2.0**63) + 1)
    body = {"signature_name": "regress_x", "examples": [{"x": 2**64 - 1}]}
    status, text = post(client, "/v1/models/examples:regress", body)
    assert (status, error_of(text)) == (400, "Feature: x has uint64_t element. Only int64_t is supported.")


def test_classify_on_a_regress_signature_is_a_400_naming_the_outputs_it_lacks(client: FlaskClient) -> None:
    # TF Serving's default (--enable_signature_method_name_check off): classifier.cc's
    # PreProcessClassification checks the signature's structure, not its method_name; regress_x has one
    # input "inputs" but its one output is "outputs", neither "classes" nor "scores".
    status, text = post(
        client, "/v1/models/examples:classify", {"signature_name": "regress_x", "examples": [{"x": 1.0}]}
    )
    assert status == 400
    message = error_of(text)
    assert message.startswith(
        'Expected classification signature outputs to contain at least one of "classes" or "scores". '
        "Signature was: "
    )
    assert 'method_name: "tensorflow/serving/regress"' in message  # SignatureDef::DebugString()


def test_regress_on_a_classify_signature_is_a_400_naming_the_output_it_lacks(client: FlaskClient) -> None:
    status, text = post(
        client, "/v1/models/examples:regress", {"signature_name": "classify_x", "examples": [{"x": 1.0}]}
    )
    assert status == 400
    assert error_of(text).startswith("Expected one output Tensor.")  # classes and scores: two outputs


def test_classify_and_regress_take_a_predict_signature_shaped_like_theirs(client: FlaskClient) -> None:
    # predict_x has one input, but it is named "examples", not "inputs" (regressor.cc's kRegressInputs).
    status, text = post(
        client, "/v1/models/examples:regress", {"signature_name": "predict_x", "examples": [{"x": 1.0}]}
    )
    assert status == 400
    assert error_of(text).startswith("No regression inputs found in SignatureDef: ")
    status, text = post(
        client, "/v1/models/examples:classify", {"signature_name": "predict_x", "examples": [{"x": 1.0}]}
    )
    assert status == 400
    assert error_of(text).startswith("No classification inputs found in SignatureDef: ")


@pytest.fixture(scope="module")
def method_checking_client(model_config_file) -> Iterator[FlaskClient]:  # type: ignore[no-untyped-def]
    from modelservice_runtime.app import create_app
    from modelservice_runtime.config import config_from_args

    config = config_from_args(
        [f"--model_config_file={model_config_file}", "--enable_signature_method_name_check"]
    )
    app = create_app(config, start_repository=False)
    app.extensions["modelservice.repository"].poll_once()
    yield app.test_client()
    app.extensions["modelservice.dataplane"].close()


def test_with_the_method_name_check_classify_on_a_regress_signature_names_both_methods(
    method_checking_client: FlaskClient,
) -> None:
    # TF Serving with --enable_signature_method_name_check (GetClassificationSignatureDef).
    status, text = post(
        method_checking_client,
        "/v1/models/examples:classify",
        {"signature_name": "regress_x", "examples": [{"x": 1.0}]},
    )
    assert status == 400
    assert error_of(text) == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/regress"
    )
    status, text = post(
        method_checking_client,
        "/v1/models/examples:regress",
        {"signature_name": "classify_x", "examples": [{"x": 1.0}]},
    )
    assert (status, error_of(text)) == (
        400,
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/classify",
    )
    status, text = post(
        method_checking_client,
        "/v1/models/examples:regress",
        {"signature_name": "regress_x", "context": {"x": 1.0}, "examples": [{}]},
    )
    assert (status, json.loads(text)) == (200, {"results": [3.0]})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"signature_name": "regress_x"}, "key 'examples' is expected and was not found"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": [{"x": [[1.0]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"examples": [{"x": [1.0, "a"]}]}, "Unexpected element type in feature: x expecting type: float"),
        ({"examples": [3]}, "Example must be JSON object but got JSON Number"),
    ],
)
def test_bad_examples_are_400_with_tf_serving_messages(
    client: FlaskClient, body: object, message: str
) -> None:
    status, text = post(client, "/v1/models/examples:regress", body)
    assert status == 400 and message in error_of(text)


def test_whole_numbers_that_a_float_cannot_hold_are_rounded_and_trailing_bytes_ignored_as_tf_serving_does(
    client: FlaskClient,
) -> None:
    status, text = post(client, "/v1/models/linear:predict", '{"instances": [[16777217, 2, 3, 4]]} trailing')
    same_status, same_text = post(
        client, "/v1/models/linear:predict", '{"instances": [[16777216.0, 2, 3, 4]]}'
    )
    assert (status, text) == (same_status, same_text) and status == 200


# Ported from tensorflow_serving/model_servers/http_rest_api_util.cc (ParseModelInfo): the regexes match the
# raw, case-insensitive path; the model name and label are percent-decoded afterwards.
@pytest.mark.parametrize(
    "path", ["/v1/models/team%2Fstrings%3Av1:predict", "/V1/MODELS/team%2fstrings%3av1:predict"]
)
def test_model_names_with_an_encoded_slash_or_colon_are_addressable_and_paths_ignore_case(
    client: FlaskClient, path: str
) -> None:
    status, text = post(client, path, {"instances": ["ab"]})
    assert (status, json.loads(text)) == (200, {"predictions": [{"length": 2, "upper": "AB"}]})
    upper_method = post(client, path.replace(":predict", ":PREDICT"), {"instances": ["ab"]})
    assert upper_method[0] == 400 and "Malformed request" in error_of(upper_method[1]), (
        "as TF Serving: method compared as is"
    )
    response = client.get(
        path.rsplit(":", 1)[0].replace("%3A", ":").replace("%3a", ":").replace(":v1", "%3Av1")
    )
    assert response.status_code == 200 and '"state": "AVAILABLE"' in response.get_data(as_text=True)


def test_a_cors_preflight_needs_an_origin_as_in_tf_serving_http_server(client: FlaskClient) -> None:
    allowed = client.options("/v1/models/linear:predict", headers={"Origin": "https://app.example"})
    assert (allowed.status_code, allowed.get_data()) == (200, b"")
    refused = client.options("/v1/models/linear:predict")
    assert refused.status_code == 400 and refused.mimetype == "application/json"
    assert error_of(refused.get_data(as_text=True)) == "Origin header is missing in CORS preflight"


def test_percent_encoded_letters_in_a_model_name_decode_to_the_same_model(client: FlaskClient) -> None:
    assert client.get("/v1/models/lin%65ar/labels/st%61ble").status_code == 200


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("", 400, "JSON Parse error: The document is empty"),
        ("{not json", 400, "JSON Parse error:"),
        ("[1, 2]", 400, "Is not object"),
        ({"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, 400,
         "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
        ({"instances": []}, 400, "No values in 'instances' array"),
        ({"instances": 5}, 400, "Expecting 'instances' to be an list/array"),
        ({"nothing": 1}, 400, "Missing 'inputs' or 'instances' key"),
        ({"signature_name": 7, "instances": [1]}, 400, "'signature_name' key must be a string value."),
        ({"signature_name": "nope", "instances": [[1, 2, 3, 4]]}, 400,
         'Serving signature name: "nope" not found in signature def'),
        ({"instances": [["a", 2, 3, 4]]}, 400,
         'Failed to process element: 0 of \'instances\' list. Error: INVALID_ARGUMENT: JSON Value: "a" '
         "Type: String is not of expected type: float"),
        ({"instances": [[1, 2, 3, 4], [1, 2]]}, 400, "Expecting tensor size: 4 but got: 2"),
        ({"instances": [[1, 2, 3]]}, 400,
         "Matrix size-incompatible: In[0]: [1,3], In[1]: [4,4]"),
        ({"instances": [[True, 2, 3, 4]]}, 400, "Type: True is not of expected type: float"),
        ({"inputs": [[[1, 2, 3, 4]]]}, 400, "In[0] ndims must be >= 2"),  # the graph decides, as in TF Serving,
    ],
)  # fmt: skip
def test_bad_predict_requests_get_a_4xx_json_error_not_a_500(
    client: FlaskClient, body: object, status: int, message: str
) -> None:
    got_status, text = post(client, "/v1/models/linear:predict", body)
    assert got_status == status
    assert message in error_of(text)


def test_multi_input_errors_name_the_input(client: FlaskClient) -> None:
    status, text = post(client, "/v1/models/multi:predict", {"inputs": {"a": [[1, 2]]}})
    assert (status, error_of(text)) == (400, "Missing named input: b in 'inputs' object.")
    status, text = post(client, "/v1/models/multi:predict", {"instances": [{"a": [1, 2], "b": 1.5}]})
    assert status == 400
    assert "key: b" in error_of(text) and "is not of expected type: int64" in error_of(text)
    status, text = post(client, "/v1/models/multi:predict", {"instances": [[1, 2]]})
    assert status == 400 and "expecting list of objects as multiple input tensors" in error_of(text)


def test_oversized_body_is_413(client: FlaskClient) -> None:
    big = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]] * 20000})
    status, text = post(client, "/v1/models/linear:predict", big)
    assert status == 413 and "--max_request_bytes" in error_of(text)


def test_unknown_path_and_method_are_json_errors(client: FlaskClient) -> None:
    assert client.get("/nowhere").status_code == 404
    assert "error" in client.get("/nowhere").get_json()
    response = client.put("/v1/models/linear:predict")
    assert response.status_code == 405 and "error" in response.get_json()


def test_request_id_is_passed_through_or_created(client: FlaskClient) -> None:
    assert (
        client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    assert len(client.get("/v2/health/live").headers["X-Request-ID"]) == 32


def test_each_request_gets_one_access_log_line_carrying_its_id_model_and_status(client: FlaskClient) -> None:
    import logging

    from modelservice_runtime.logs import JsonFormatter

    lines: list[dict[str, object]] = []

    class Lines(logging.Handler):  # formats as the runtime's handler does: while the request is served
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    access = logging.getLogger("modelservice_runtime.access")
    handler, level = Lines(), access.level
    access.addHandler(handler)
    access.setLevel("INFO")
    try:
        response = client.post(
            "/v1/models/linear/versions/1:predict",
            data=json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]}),
            content_type="application/json",
            headers={"X-Request-ID": "trace-7"},
        )
        client.post("/v1/models/nosuchmodel:predict", data="{}", content_type="application/json")
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-7"
    assert [line["message"] for line in lines] == [
        "Served POST /v1/models/linear/versions/1:predict with 200",
        "Served POST /v1/models/nosuchmodel:predict with 404",
    ]
    first, second = lines
    assert first["request_id"] == "trace-7"
    assert first["model"] == "linear" and first["status"] == 200 and first["method"] == "POST"
    assert first["path"] == "/v1/models/linear/versions/1:predict"
    assert first["duration_ms"] > 0
    assert len(second["request_id"]) == 32 and second["request_id"] != "trace-7"


# ---------------------------------------------------------------------------------- health, metrics, docs


def test_health_is_live_and_ready_once_every_model_is_available(client: FlaskClient) -> None:
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}


def test_metrics_count_requests_by_model_version_api_and_status(client: FlaskClient) -> None:
    post(client, "/v1/models/linear/versions/1:predict", {"instances": [[1, 1, 1, 1]]})
    post(client, "/v1/models/linear/versions/1:predict", {"instances": []})
    for path in ("/metrics", "/monitoring/prometheus/metrics"):
        text = client.get(path).get_data(as_text=True)
        assert 'modelservice_requests_total{api="predict",model="linear",status="200",version="1"}' in text
        assert 'modelservice_requests_total{api="predict",model="linear",status="400",version="1"}' in text
        assert "modelservice_request_duration_seconds_bucket" in text
        assert 'modelservice_model_loads_total{model="linear",result="success"}' in text


def test_a_monitoring_config_file_serves_prometheus_on_its_path_too(model_config_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # TF Serving's --monitoring_config_file (testPrometheusEndpoint starts its server with one): metrics on
    # prometheus_config.path; ours stay on /metrics and /monitoring/prometheus/metrics as well.
    from modelservice_runtime.app import create_app
    from modelservice_runtime.config import config_from_args

    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text('prometheus_config: { enable: true, path: "/custom/metrics" }')
    app = create_app(
        config_from_args(
            [f"--model_config_file={model_config_file}", f"--monitoring_config_file={monitoring}"]
        ),
        start_repository=False,
    )
    client = app.test_client()
    for path in ("/custom/metrics", "/monitoring/prometheus/metrics", "/metrics"):
        response = client.get(path)
        assert response.status_code == 200 and "# TYPE" in response.get_data(as_text=True)
    app.extensions["modelservice.dataplane"].close()


def test_openapi_describes_every_registered_route(app, client: FlaskClient) -> None:  # type: ignore[no-untyped-def]
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    described = set(document["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "tfserving.dispatch", "v2.model_route"):
            continue
        assert rule.rule in described, f"{rule.rule} is not in /openapi.json"
    for path in ("/v1/models/{model}:predict", "/v1/models/{model}/labels/{label}:classify",
                 "/v1/models/{model}/versions/{version}/metadata", "/v1/models",
                 "/v2/models/{model}/versions/{version}/infer", "/v2/models/{model}/ready",
                 "/v2/models/{model}"):  # fmt: skip
        assert path in described
    page = client.get("/docs")
    assert page.status_code == 200 and b"openapi.json" in page.data and b"cdn" not in page.data.lower()
