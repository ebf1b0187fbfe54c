"""TF Serving's ``tensorflow_serving/model_servers/http_rest_api_util_test.cc``, ported.

``ParseModelInfo(method, path, ...)`` is ``parse_model_info(method, path)``: it returns None where TF
Serving sets ``parse_successful`` to false (and returns OK), the parsed ``ModelInfo`` where it sets it to
true, and raises ``InvalidArgument`` where TF Serving returns that status. Expected values are the C++
test's. Every case of the two tests is ported.
"""

from __future__ import annotations

import pytest

from modelservice_runtime.errors import InvalidArgument
from modelservice_runtime.protocols.tfserving import ModelInfo, parse_model_info

RESERVED = "%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
RESERVED_DECODED = "!#$%&'()*+,/:;=?@[]"
UINT64_MAX = 2**64 - 1


def parsed(http_method: str, request_path: str) -> ModelInfo:
    info = parse_model_info(http_method, request_path)
    assert info is not None, f"{http_method} {request_path} should parse"  # parse_successful
    return info


# Ports TEST_F(HttpRestApiUtilTest, TestParseModelInfoForGet).
def test_parse_model_info_for_get() -> None:
    # Test reserved charactors in model name.
    info = parsed("GET", f"/v1/models/modelname{RESERVED}")
    assert info.model_name == "modelname" + RESERVED_DECODED

    # Test model version.
    info = parsed("GET", "/v1/models/modelname/versions/99")
    assert info.model_name == "modelname"
    assert info.model_version == 99

    # Test labels.
    info = parsed("GET", "/v1/models/modelname/labels/latest")
    assert info.model_name == "modelname"
    assert info.model_version_label == "latest"

    # Test labels with reserved charactors.
    info = parsed("GET", f"/v1/models/modelname/labels/latest{RESERVED}")
    assert info.model_name == "modelname"
    assert info.model_version_label == "latest" + RESERVED_DECODED

    # Test metadata.
    info = parsed("GET", "/v1/models/modelname/labels/latest/metadata")
    assert info.model_name == "modelname"
    assert info.model_version_label == "latest"
    assert info.model_subresource == "metadata"

    # Test metadata with reserved charactors.
    info = parsed("GET", f"/v1/models/modelname{RESERVED}/labels/latest{RESERVED}/metadata")
    assert info.model_name == "modelname" + RESERVED_DECODED
    assert info.model_version_label == "latest" + RESERVED_DECODED
    assert info.model_subresource == "metadata"

    # Test failure cases.
    assert parse_model_info("GET", "/v1/foo") is None
    assert parse_model_info("GET", "/v1/models/foo:predict") is None
    assert parse_model_info("GET", "/v1/models/foo/version/50:predict") is None


# Ports TEST_F(HttpRestApiUtilTest, TestParseModelInfoForPost).
def test_parse_model_info_for_post() -> None:
    # Test reserved charactors in model name.
    info = parsed("POST", f"/v1/models/modelname{RESERVED}:predict")
    assert info.model_name == "modelname" + RESERVED_DECODED
    assert info.method == "predict"

    # Test model version.
    info = parsed("POST", "/v1/models/modelname/versions/99:predict")
    assert info.model_name == "modelname"
    assert info.model_version == 99
    assert info.method == "predict"

    # Test labels.
    info = parsed("POST", "/v1/models/modelname/labels/latest:predict")
    assert info.model_name == "modelname"
    assert info.model_version_label == "latest"
    assert info.method == "predict"

    # Test labels with reserved charactors.
    info = parsed("POST", f"/v1/models/modelname/labels/latest{RESERVED}:predict")
    assert info.model_name == "modelname"
    assert info.model_version_label == "latest" + RESERVED_DECODED
    assert info.method == "predict"

    # Test reserved charactors in labels and model name.
    info = parsed("POST", f"/v1/models/modelname{RESERVED}/labels/latest{RESERVED}:predict")
    assert info.model_name == "modelname" + RESERVED_DECODED
    assert info.model_version_label == "latest" + RESERVED_DECODED
    assert info.method == "predict"

    # Test failure cases.
    assert parse_model_info("POST", "/v1/foo") is None
    assert parse_model_info("POST", "/v1/models") is None
    assert parse_model_info("POST", "/v1/models/foo/version/50:predict") is None
    assert parse_model_info("POST", "/v1/models/foo/versions/string:predict") is None
    # parse_successful, but the version does not fit: INVALID_ARGUMENT (a path that does not parse
    # returns None instead of raising).
    with pytest.raises(InvalidArgument, match="Failed to convert version"):
        parse_model_info("POST", f"/v1/models/foo/versions/{UINT64_MAX}:predict")
    assert parse_model_info("POST", "/v1/models/foo/metadata") is None
    assert parse_model_info("POST", "/v1/models/foo/versions/50/labels/some_label:regress") is None
