"""TF Serving's ``tensorflow_serving/model_servers/http_rest_api_handler_test.cc``, ported.

``HttpRestApiHandler::ProcessRequest(method, path, body)`` becomes a request through the Flask test client
(the handler's status is the HTTP status of its canonical code, its message the ``"error"`` of the body);
the ``ServerCore`` of ``SetUpTestSuite`` becomes our repository, given the same ``ModelServerConfig`` and,
as TF Serving's test does, reloaded with the version label once the model is available. The model is TF
Serving's half_plus_two, built by ``tests/models.py`` as its generator script builds it (versions 123 and
124 on disk, as in ``saved_model_half_plus_two_2_versions``; the config serves 123 only). Expected values
and messages are the C++ test's.

Not ported
----------
- ``GetModelMetadata``'s ``classify_x2_to_y3`` entry of ``saved_model_half_plus_two_2_versions_metadata.json``:
  that file describes TensorFlow's ``cc/saved_model/testdata/half_plus_two``, whose generator adds a
  ``classify_x2_to_y3`` signature; TF Serving's own generator script (``saved_model_half_plus_two.py``),
  which ``tests/models.py`` follows, does not. The rest of the file is compared, with one change that
  comes from the model too: ``tf_example``'s shape (see ``_EXAMPLES``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import NotFound

from modelservice_runtime.app import create_app
from modelservice_runtime.config import config_from_args, parse_model_config_text
from tests.models import HALF_PLUS_TWO_METADATA

pytestmark = pytest.mark.integration

K_TEST_MODEL_NAME = "saved_model_half_plus_two_2_versions"
K_TEST_MODEL_VERSION1 = 123
K_TEST_MODEL_VERSION_LABEL = "Version_Label"
K_NONEXISTENT_MODEL_VERSION_LABEL = "Version_Nonexistent"
UINT64_MAX = 2**64 - 1

# HttpRestApiHandlerTest::CreateServerCore: a ModelServerConfig with one model, specific version 123.
MODEL_SERVER_CONFIG = """
model_config_list {{
  config {{
    name: "{name}"
    base_path: "{base_path}"
    model_version_policy {{ specific {{ versions: {version} }} }}
    model_platform: "tensorflow"
    {labels}
  }}
}}
"""

# tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two_2_versions_metadata.json,
# less classify_x2_to_y3 (see "Not ported").
EXPECTED_METADATA = {
    "model_spec": {"name": "saved_model_half_plus_two_2_versions", "signature_name": "", "version": "123"},
    "metadata": HALF_PLUS_TWO_METADATA,
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """``SetUpTestSuite``: load the model, wait until it is available, then reload the config with the
    version label (a label may only name an available version)."""
    from tests import models

    root = tmp_path_factory.mktemp("handler")
    base = root / K_TEST_MODEL_NAME
    models.build_half_plus_two(base, K_TEST_MODEL_VERSION1)
    models.build_half_plus_two(base, 124)
    text = MODEL_SERVER_CONFIG.format(name=K_TEST_MODEL_NAME, base_path=base, version=K_TEST_MODEL_VERSION1,
                                      labels="")  # fmt: skip
    config_path = root / "models.config"
    config_path.write_text(text)
    # handler_(/*timeout_in_ms=*/-1, ...): no deadline.
    app = create_app(
        config_from_args([f"--model_config_file={config_path}", "--rest_api_timeout_in_ms=0"]),
        start_repository=False,
    )
    repository = app.extensions["modelservice.repository"]
    repository.poll_once()
    assert repository.available() == {K_TEST_MODEL_NAME: [K_TEST_MODEL_VERSION1]}
    labelled = MODEL_SERVER_CONFIG.format(
        name=K_TEST_MODEL_NAME, base_path=base, version=K_TEST_MODEL_VERSION1,
        labels=f'version_labels {{ key: "{K_TEST_MODEL_VERSION_LABEL}" value: {K_TEST_MODEL_VERSION1} }}',
    )  # fmt: skip
    repository.apply_config(parse_model_config_text(labelled))
    yield app
    app.extensions["modelservice.dataplane"].close()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def process_request(client: FlaskClient, method: str, path: str, body: str = "") -> tuple[int, str, Any]:
    """``ProcessRequest``: (HTTP status, the body, the response headers)."""
    response = client.open(path, method=method, data=body)
    return response.status_code, response.get_data(as_text=True), response.headers


def error_of(output: str) -> str:
    """``GetJsonErrorMsg``."""
    message: str = json.loads(output)["error"]
    return message


def assert_json_headers(headers: Any) -> None:
    """``headers`` == {{"Content-Type", "application/json"}} (the handler's; the server adds its own)."""
    assert headers["Content-Type"] == "application/json"


# Ports TEST_F(HttpRestApiHandlerTest, kPathRegex): which paths the REST handler is registered for.
def test_k_path_regex(app: Flask, client: FlaskClient) -> None:
    urls = app.url_map.bind("localhost")
    assert urls.match("/v1/models", method="GET")[0] == "tfserving.dispatch"
    for path in ("/statuspage", "/index"):
        with pytest.raises(NotFound):
            urls.match(path, method="GET")
        status, output, _ = process_request(client, "GET", path)
        assert status == 404 and "Malformed request" not in output


# Ports TEST_F(HttpRestApiHandlerTest, UnsupportedApiCalls).
@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v1/foo", "Malformed request"),
        ("POST", "/v1/foo", "Malformed request"),
        ("GET", "/v1/models/debug/model_name", "Malformed request"),
        ("POST", "/v1/models", "Malformed request"),
        ("GET", "/v1/models/foo:predict", "Malformed request"),
        ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
        ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
        ("POST", f"/v1/models/foo/versions/{UINT64_MAX}:regress", "Failed to convert version"),
        ("POST", "/v1/models/foo/metadata", "Malformed request"),
        ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
        ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
    ],
)
def test_unsupported_api_calls(client: FlaskClient, method: str, path: str, message: str) -> None:
    status, output, _ = process_request(client, method, path)
    assert status == 400  # IsInvalidArgument
    assert message in error_of(output)


# Ports the GET "/v1/models" case of TEST_F(HttpRestApiHandlerTest, UnsupportedApiCalls), where TF Serving
# answers INVALID_ARGUMENT "Missing model name". We differ on purpose (README): a bare GET /v1/models lists
# the models, as KServe V1 clients expect. With a version, label or sub-resource and no name, TF Serving's
# answer stands.
def test_unsupported_api_calls_missing_model_name(client: FlaskClient) -> None:
    status, output, _ = process_request(client, "GET", "/v1/models")
    assert status == 200 and json.loads(output)["models"] == [K_TEST_MODEL_NAME]
    for path in ("/v1/models/versions/1", "/v1/models/labels/some_label"):
        status, output, _ = process_request(client, "GET", path)
        assert status == 400 and "Missing model name" in error_of(output)


# Ports TEST_F(HttpRestApiHandlerTest, PredictModelNameVersionErrors).
@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/foo:predict",  # 'foo' is not a valid model name.
        "/v1/models/foo/versions/50:predict",  # 'foo' is not a valid model name.
        f"/v1/models/{K_TEST_MODEL_NAME}99:predict",  # as written in TF Serving's test ("...versions99")
    ],
)
def test_predict_model_name_version_errors(client: FlaskClient, path: str) -> None:
    status, _, _ = process_request(client, "POST", path, '{ "instances": [1] }')
    assert status == 404  # IsNotFound


# Ports TEST_F(HttpRestApiHandlerTest, PredictRequestErrors).
@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (f"/v1/models/{K_TEST_MODEL_NAME}:predict", "", "JSON Parse error: The document is empty"),
        (f"/v1/models/{K_TEST_MODEL_NAME}:predict", "instances = [1, 2]", "JSON Parse error: Invalid value"),
        (f"/v1/models/{K_TEST_MODEL_NAME}:predict", '{ "instances": ["x", "y"] }', "not of expected type: float"),
        (f"/v1/models/{K_TEST_MODEL_NAME}/labels/{K_NONEXISTENT_MODEL_VERSION_LABEL}:predict",
         '{ "instances": ["x", "y"] }', "Unrecognized servable version label"),
        (f"/v1/models/{K_TEST_MODEL_NAME}:predict", '{ "signature_name": 100 }',
         "'signature_name' key must be a string value."),
    ],
    ids=["empty document", "badly formatted JSON", "incorrect type", "nonexistent version label",
         "incorrect signature_name type"],
)  # fmt: skip
def test_predict_request_errors(client: FlaskClient, path: str, body: str, message: str) -> None:
    status, output, _ = process_request(client, "POST", path, body)
    assert status == 400  # IsInvalidArgument
    assert message in error_of(output)


# Ports TEST_F(HttpRestApiHandlerTest, Predict).
@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (f"/v1/models/{K_TEST_MODEL_NAME}:predict", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
         '{ "predictions": [[2.5, 3.0], [3.5, 4.0]] }'),
        (f"/v1/models/{K_TEST_MODEL_NAME}/versions/{K_TEST_MODEL_VERSION1}:predict", '{"instances": [1.0, 2.0]}',
         '{ "predictions": [2.5, 3.0] }'),
        (f"/v1/models/{K_TEST_MODEL_NAME}/labels/{K_TEST_MODEL_VERSION_LABEL}:predict",
         '{"instances": [1.0, 2.0]}', '{ "predictions": [2.5, 3.0] }'),
        (f"/v1/models/{K_TEST_MODEL_NAME}/versions/{K_TEST_MODEL_VERSION1}:predict",
         '{"signature_name": "serving_default", "instances": [3.0, 4.0]}', '{ "predictions": [3.5, 4.0] }'),
        (f"/v1/models/{K_TEST_MODEL_NAME}/versions/{K_TEST_MODEL_VERSION1}:predict",
         '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', '{ "outputs": [3.5, 4.0] }'),
    ],
    ids=["latest version", "specific version", "version label", "explicit signature_name",
         "explicit signature_name and columnar inputs"],
)  # fmt: skip
def test_predict(client: FlaskClient, path: str, body: str, expected: str) -> None:
    status, output, headers = process_request(client, "POST", path, body)
    assert status == 200, output
    assert json.loads(output) == json.loads(expected)  # CompareJson
    assert_json_headers(headers)


# Ports TEST_F(HttpRestApiHandlerTest, Regress).
@pytest.mark.parametrize(
    "path",
    [
        f"/v1/models/{K_TEST_MODEL_NAME}:regress",
        f"/v1/models/{K_TEST_MODEL_NAME}/versions/{K_TEST_MODEL_VERSION1}:regress",
        f"/v1/models/{K_TEST_MODEL_NAME}/labels/{K_TEST_MODEL_VERSION_LABEL}:regress",
    ],
    ids=["latest version", "specific version", "version label"],
)
def test_regress(client: FlaskClient, path: str) -> None:
    body = '{"signature_name": "regress_x_to_y", "examples": [ { "x": 80.0 } ] }'
    status, output, headers = process_request(client, "POST", path, body)
    assert status == 200, output
    assert json.loads(output) == json.loads('{ "results": [42] }')
    assert_json_headers(headers)


# Ports TEST_F(HttpRestApiHandlerTest, Classify).
@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (f"/v1/models/{K_TEST_MODEL_NAME}:classify",
         '{"signature_name": "classify_x_to_y", "examples": [ { "x": 20.0 } ] }', '{ "results": [[["", 12]]] }'),
        (f"/v1/models/{K_TEST_MODEL_NAME}/labels/{K_TEST_MODEL_VERSION_LABEL}:classify",
         '{"signature_name": "classify_x_to_y", "examples": [ { "x": 10.0 } ] }', '{ "results": [[["", 7]]] }'),
    ],
    ids=["latest version", "version label"],
)  # fmt: skip
def test_classify(client: FlaskClient, path: str, body: str, expected: str) -> None:
    status, output, headers = process_request(client, "POST", path, body)
    assert status == 200, output
    assert json.loads(output) == json.loads(expected)
    assert_json_headers(headers)


# Ports TEST_F(HttpRestApiHandlerTest, GetStatus).
@pytest.mark.parametrize(
    "path",
    [
        f"/v1/models/{K_TEST_MODEL_NAME}",
        f"/v1/models/{K_TEST_MODEL_NAME}/versions/{K_TEST_MODEL_VERSION1}",
        f"/v1/models/{K_TEST_MODEL_NAME}/labels/{K_TEST_MODEL_VERSION_LABEL}",
    ],
    ids=["all versions", "specific version", "version label"],
)
def test_get_status(client: FlaskClient, path: str) -> None:
    status, output, headers = process_request(client, "GET", path)
    assert status == 200, output
    assert_json_headers(headers)
    assert json.loads(output) == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


# Ports TEST_F(HttpRestApiHandlerTest, GetModelMetadata).
def test_get_model_metadata(client: FlaskClient) -> None:
    status, output, headers = process_request(client, "GET", f"/v1/models/{K_TEST_MODEL_NAME}/metadata")
    assert status == 200, output
    assert_json_headers(headers)
    assert json.loads(output) == EXPECTED_METADATA
