"""TF Serving's gRPC API through a real server, called with TF Serving's own Python stubs.

The same models answer the same numbers over REST and gRPC, errors carry the same canonical codes, and
gRPC shares the model process (one load), the batcher and the metrics with REST.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from bench.loadgen import free_port
from tests.integration.runtime.server import Server, start_server, stop

pytestmark = [pytest.mark.integration, pytest.mark.gunicorn]


class Served:
    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)


@pytest.fixture(scope="module")
def served(model_config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("grpc")
    port = free_port()
    server = start_server(
        tmp_path, f"--model_config_file={model_config_file}", f"--port={port}", "--workers=2"
    )
    try:
        server.wait_ready()
        served = Served(server, port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status = served.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        yield served
    finally:
        stop(server)


def predict_request(model: str, inputs: dict[str, np.ndarray], **spec: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = int(value)  # type: ignore[call-overload]
        else:
            setattr(request.model_spec, key, value)
    for name, array in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()  # type: ignore[no-any-return]


def test_predict_answers_the_same_numbers_over_grpc_and_rest(served: Served) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]]
    response = served.predictions.Predict(
        predict_request("linear", {"x": np.array(rows, np.float32)}), timeout=30
    )
    (name,) = response.outputs
    grpc_values = tf.make_ndarray(response.outputs[name]).tolist()
    rest = requests.post(
        served.server.url + "/v1/models/linear:predict", json={"instances": rows}, timeout=30
    )
    assert grpc_values == rest.json()["predictions"] == [[2 * v for v in row] for row in rows]
    assert (response.model_spec.name, response.model_spec.version.value) == ("linear", 2)
    assert response.model_spec.signature_name == "serving_default"


def test_a_version_or_label_picks_what_rest_picks(served: Served) -> None:
    x = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
    by_version = served.predictions.Predict(predict_request("linear", {"x": x}, version=1), timeout=30)
    by_label = served.predictions.Predict(
        predict_request("linear", {"x": x}, version_label="stable"), timeout=30
    )
    for response in (by_version, by_label):
        assert response.model_spec.version.value == 1
        assert tf.make_ndarray(next(iter(response.outputs.values()))).tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_output_filter_and_multiple_inputs(served: Served) -> None:
    inputs = {"a": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "b": np.array([3, 5], np.int64)}
    rest = requests.post(served.server.url + "/v1/models/multi:predict",
                         json={"inputs": {k: v.tolist() for k, v in inputs.items()}}, timeout=30).json()  # fmt: skip
    everything = served.predictions.Predict(predict_request("multi", inputs), timeout=30)
    outputs = {k: tf.make_ndarray(v).tolist() for k, v in everything.outputs.items()}
    assert outputs["sum"] == rest["outputs"]["sum"] == [3.0, 7.0]
    assert outputs["double_b"] == rest["outputs"]["double_b"] == [6, 10]
    assert outputs["tag_bytes"] == [b"3", b"5"]  # raw bytes over gRPC; REST base64-encodes *_bytes outputs
    request = predict_request("multi", inputs)
    request.output_filter.append("double_b")
    filtered = served.predictions.Predict(request, timeout=30)
    assert list(filtered.outputs) == ["double_b"]


@pytest.mark.parametrize(
    ("request_", "code", "rest_path", "rest_body", "rest_status"),
    [
        (predict_request("nope", {"x": np.ones((1, 4), np.float32)}), grpc.StatusCode.NOT_FOUND,
         "/v1/models/nope:predict", {"instances": [[1, 1, 1, 1]]}, 404),
        (predict_request("linear", {"x": np.ones((1, 4), np.float32)}, version=9), grpc.StatusCode.NOT_FOUND,
         "/v1/models/linear/versions/9:predict", {"instances": [[1, 1, 1, 1]]}, 404),
        (predict_request("linear", {"y": np.ones((1, 4), np.float32)}), grpc.StatusCode.INVALID_ARGUMENT,
         "/v1/models/linear:predict", {"inputs": {"y": [[1, 1, 1, 1]]}}, 400),
        (predict_request("linear", {"x": np.ones((1, 4), np.float64)}), grpc.StatusCode.INVALID_ARGUMENT,
         "/v1/models/linear:predict", {"instances": [["a", "b", "c", "d"]]}, 400),
        (predict_request("linear", {"x": np.ones((1, 4), np.float32)}, version_label="nope"),
         grpc.StatusCode.INVALID_ARGUMENT, "/v1/models/linear/labels/nope:predict", {"instances": [[1, 1, 1, 1]]}, 400),
    ],
    ids=["unknown model", "unknown version", "unknown input", "wrong dtype", "unknown label"],
)  # fmt: skip
def test_errors_carry_the_same_canonical_codes_as_rest(
    served: Served, request_: predict_pb2.PredictRequest, code: grpc.StatusCode, rest_path: str,
    rest_body: dict[str, object], rest_status: int,
) -> None:  # fmt: skip
    assert code_of(lambda: served.predictions.Predict(request_, timeout=30)) == code
    assert requests.post(served.server.url + rest_path, json=rest_body, timeout=30).status_code == rest_status


def test_grpc_words_its_errors_as_tf_serving_does(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        served.predictions.Predict(predict_request("linear", {"y": np.ones((1, 4), np.float32)}), timeout=30)
    assert caught.value.details() == (
        "input size does not match signature: 1!=1 len({y}) != len({x}). Sent extra: {y}. Missing but required: {x}."
    )
    with pytest.raises(grpc.RpcError) as caught:
        served.predictions.Predict(
            predict_request("linear", {"x": np.ones((1, 4), np.float32)}, signature_name="nope"), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == 'Serving signature key "nope" not found.'
    request = predict_request("linear", {"x": np.ones((1, 4), np.float32)})
    request.output_filter.append("nope")
    with pytest.raises(grpc.RpcError) as caught:
        served.predictions.Predict(request, timeout=30)
    assert caught.value.details().startswith("output tensor alias not found in signature: nope")


def test_a_malformed_tensor_is_invalid_argument_not_internal(served: Served) -> None:
    request = predict_request("linear", {"x": np.ones((1, 4), np.float32)})
    request.inputs["x"].tensor_content = b"\x00" * 5  # 5 bytes for a [1, 4] float tensor
    assert (
        code_of(lambda: served.predictions.Predict(request, timeout=30)) == grpc.StatusCode.INVALID_ARGUMENT
    )
    for dtype in (0, 999):  # DT_INVALID, and a number no TensorFlow type has
        request = predict_request("linear", {"x": np.ones((1, 4), np.float32)})
        request.inputs["x"].dtype = dtype
        with pytest.raises(grpc.RpcError) as caught:
            served.predictions.Predict(request, timeout=30)
        assert (caught.value.code(), caught.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "tensor parsing error: x",
        )


def examples_input(values: list[float]) -> object:
    from tensorflow_serving.apis import input_pb2

    proto = input_pb2.Input()
    for value in values:
        example = example_pb2.Example()
        example.features.feature["x"].float_list.value.append(value)
        proto.example_list.examples.append(example)
    return proto


def test_classify_regress_and_multi_inference_match_rest(served: Served) -> None:
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "examples", "classify_x"
    classify.input.CopyFrom(examples_input([0.0, 2.0]))
    classified = served.predictions.Classify(classify, timeout=30)
    rest = requests.post(served.server.url + "/v1/models/examples:classify",
                         json={"signature_name": "classify_x", "examples": [{"x": 0.0}, {"x": 2.0}]}, timeout=30)  # fmt: skip
    assert [[[c.label, pytest.approx(c.score)] for c in row.classes]
            for row in classified.result.classifications] == rest.json()["results"]  # fmt: skip

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "examples", "regress_x"
    regress.input.CopyFrom(examples_input([1.0, 2.0]))
    regressed = served.predictions.Regress(regress, timeout=30)
    rest = requests.post(served.server.url + "/v1/models/examples:regress",
                         json={"signature_name": "regress_x", "examples": [{"x": 1.0}, {"x": 2.0}]}, timeout=30)  # fmt: skip
    assert (
        [r.value for r in regressed.result.regressions] == pytest.approx(rest.json()["results"]) == [3.0, 5.0]
    )

    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        ("classify_x", "tensorflow/serving/classify"),
        ("regress_x", "tensorflow/serving/regress"),
    ):
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "examples", signature, method
    multi.input.CopyFrom(examples_input([1.0, 2.0]))
    both = served.predictions.MultiInference(multi, timeout=30)
    classify.input.CopyFrom(examples_input([1.0, 2.0]))
    assert both.results[0].classification_result == served.predictions.Classify(classify, timeout=30).result
    assert [r.value for r in both.results[1].regression_result.regressions] == pytest.approx([3.0, 5.0])
    assert [r.model_spec.signature_name for r in both.results] == ["classify_x", "regress_x"]


def test_predict_writes_outputs_in_their_typed_fields_as_tf_serving_does(served: Served) -> None:
    # predict_util.cc's default (kAsProtoField, Tensor::AsProtoField): float_val, not tensor_content;
    # TF Serving's tensorflow_model_server_test reads result.outputs['y'].float_val.
    response = served.predictions.Predict(
        predict_request("multi", {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([3], np.int64)}),
        timeout=30,
    )
    assert list(response.outputs["sum"].float_val) == [3.0] and not response.outputs["sum"].tensor_content
    assert list(response.outputs["double_b"].int64_val) == [6]
    assert list(response.outputs["tag_bytes"].string_val) == [b"3"]
    assert [d.size for d in response.outputs["sum"].tensor_shape.dim] == [1]


def test_multi_inference_checks_its_tasks_in_tf_serving_order_and_words(served: Served) -> None:
    """multi_inference.cc (TensorFlowMultiInferenceRunner::Infer) and util.cc's "Input is empty."."""

    def request(*tasks: tuple[str, str, str], values: tuple[float, ...] = (1.0,)) -> Any:
        multi = inference_pb2.MultiInferenceRequest()
        for model, signature, method in tasks:
            task = multi.tasks.add()
            task.model_spec.name, task.model_spec.signature_name, task.method_name = model, signature, method
        multi.input.CopyFrom(examples_input(list(values)))
        return multi

    classify, regress = "tensorflow/serving/classify", "tensorflow/serving/regress"
    cases = [
        (request(("examples", "classify_x", classify), ("linear", "regress_x", regress)),
         grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        (request(("examples", "classify_x", classify), ("examples", "classify_x", classify)),
         grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: classify_x"),
        (request(("examples", "nope", classify)),
         grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope"),
        (request(("examples", "classify_x", "tensorflow/serving/predict")),
         grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict"),
        (request(("examples", "regress_x", classify)), grpc.StatusCode.INVALID_ARGUMENT,
         'Expected classification signature outputs to contain at least one of "classes" or "scores".'),
        (request(("examples", "classify_x", classify), values=()),
         grpc.StatusCode.INVALID_ARGUMENT, "Input is empty."),
    ]  # fmt: skip
    for multi, code, message in cases:
        with pytest.raises(grpc.RpcError) as caught:
            served.predictions.MultiInference(multi, timeout=30)
        assert (caught.value.code(), caught.value.details().startswith(message)) == (code, True), (
            caught.value.details()
        )


def test_metadata_and_status_over_grpc(served: Served) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "linear"
    request.metadata_field.append("signature_def")
    metadata = served.predictions.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    assert "serving_default" in signatures.signature_def
    assert metadata.model_spec.version.value == 2

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "linear"
    status = served.models.GetModelStatus(status_request, timeout=30)
    assert {(s.version, s.state) for s in status.model_version_status} == {(2, 30), (1, 30)}  # AVAILABLE
    status_request.model_spec.name = "nope"
    assert (
        code_of(lambda: served.models.GetModelStatus(status_request, timeout=30)) == grpc.StatusCode.NOT_FOUND
    )


def test_grpc_shares_the_model_process_and_the_metrics_with_rest(served: Served) -> None:
    for _ in range(3):
        served.predictions.Predict(predict_request("linear", {"x": np.ones((1, 4), np.float32)}), timeout=30)
    text = requests.get(served.server.url + "/metrics", timeout=5).text
    assert 'modelservice_requests_total{api="grpc_predict",model="linear",status="200",version="2"}' in text
    assert served.server.log().count("Loaded model linear version 2 ") == 1
    assert served.health.Check(health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"),
                               timeout=5).status == health_pb2.HealthCheckResponse.SERVING  # fmt: skip


def test_a_taken_grpc_port_is_one_clear_error(model_root: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "modelservice_runtime.cli", "--rest_api_host=127.0.0.1", f"--port={port}",
             f"--rest_api_port={free_port()}", "--model_name=linear", f"--model_base_path={model_root / 'linear'}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"--port={port} (gRPC) is already in use" in done.stderr


# ------------------------------------------------------------------------- Open Inference Protocol (V2)


@pytest.fixture(scope="module")
def triton(served: Served) -> Iterator[object]:
    import tritonclient.grpc as triton_grpc

    target = served.channel._channel.target().decode()  # type: ignore[attr-defined]
    client = triton_grpc.InferenceServerClient(url=target)
    yield client
    client.close()


def test_v2_health_and_metadata_over_grpc_with_tritonclient(triton: object, served: Served) -> None:
    client: Any = triton
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("linear")
    assert client.is_model_ready("linear", "1")
    metadata = client.get_model_metadata("linear")
    rest = requests.get(served.server.url + "/v2/models/linear", timeout=10).json()
    assert metadata.name == "linear" and list(metadata.versions) == rest["versions"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["inputs"]
    ]
    assert client.get_server_metadata().name == "modelservice-runtime"


def test_v2_infer_answers_the_same_numbers_over_grpc_and_rest(triton: object, served: Served) -> None:
    import tritonclient.grpc as triton_grpc

    client: Any = triton
    rows = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]], np.float32)
    tensor = triton_grpc.InferInput("x", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer("linear", [tensor], model_version="1", request_id="r-1")
    rest = requests.post(served.server.url + "/v2/models/linear/versions/1/infer", timeout=10, json={
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]}).json()  # fmt: skip
    (output,) = rest["outputs"]
    assert result.as_numpy(output["name"]).ravel().tolist() == output["data"] == rows.ravel().tolist()
    response = result.get_response()
    assert (response.model_version, response.id) == ("1", "r-1")

    texts = np.array([b"ab", b"xyz"], dtype=object)
    text = triton_grpc.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(texts)
    strings = client.infer("strings", [text])
    assert strings.as_numpy("upper").tolist() == [b"AB", b"XYZ"]
    assert strings.as_numpy("length").tolist() == [2, 3]


def test_v2_typed_contents_and_errors_match_rest(served: Served) -> None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(served.channel)
    request = service_pb2.ModelInferRequest(model_name="linear", model_version="1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    answer = stub.ModelInfer(request, timeout=30)
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [1.0, 2.0, 3.0, 4.0]

    wrong = service_pb2.ModelInferRequest(model_name="linear")
    wrong.inputs.add(name="x", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([1, 2, 3, 4])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(wrong, timeout=30)
    rest = requests.post(served.server.url + "/v2/models/linear/infer", timeout=10, json={
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]})  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and rest.status_code == 400
    assert caught.value.details() == rest.json()["error"]
    unknown = service_pb2.ModelInferRequest(model_name="nope")
    assert code_of(lambda: stub.ModelInfer(unknown, timeout=30)) == grpc.StatusCode.NOT_FOUND
    assert (
        requests.post(
            served.server.url + "/v2/models/nope/infer", json={"inputs": []}, timeout=10
        ).status_code
        == 404
    )
    # "²" is a digit to str.isdigit() but not a number to int(): a bad version, not a server error.
    superscript = service_pb2.ModelInferRequest(model_name="linear", model_version="\u00b2")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(superscript, timeout=30)
    rest = requests.post(served.server.url + "/v2/models/linear/versions/%C2%B2/infer", json={}, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and rest.status_code == 400
    assert (
        caught.value.details()
        == rest.json()["error"]
        == "Model version must be a non-negative integer, got '\u00b2'"
    )


def test_v2_bytes_contents_reach_the_model_byte_for_byte(served: Served) -> None:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(served.channel)
    request = service_pb2.ModelInferRequest(model_name="strings")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"\xff\xd8", b"ok"])  # a JPEG's first two bytes: not UTF-8
    answer = stub.ModelInfer(request, timeout=30)
    index = [output.name for output in answer.outputs].index("length")
    assert np.frombuffer(answer.raw_output_contents[index], "<i4").tolist() == [2, 2]


# Last: it replaces the model list every other test uses.
def test_reload_config_adds_and_removes_models_without_a_restart(served: Served, model_root: Path) -> None:
    request = model_management_pb2.ReloadConfigRequest()
    entry = request.config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = "linear", str(model_root / "linear"), "tensorflow"
    served.models.HandleReloadConfigRequest(request, timeout=60)
    models = requests.get(served.server.url + "/v1/models", timeout=5).json()["models"]
    assert models == ["linear"]
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.model_config_list.config.add().name = "no-base-path"
    assert (
        code_of(lambda: served.models.HandleReloadConfigRequest(bad, timeout=30))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
