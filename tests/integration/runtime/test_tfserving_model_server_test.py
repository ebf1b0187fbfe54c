"""TF Serving's ``tensorflow_serving/model_servers/tensorflow_model_server_test.py``, ported: its REST and
gRPC cases, against our real server (``start_server``: the supervisor, Gunicorn and the model process with
gRPC), with TF Serving's stubs.

``RunServer`` starts one server per distinct set of arguments and hands the same one back for the same
arguments, as TF Serving's does (``model_servers_dict``), with TF Serving's flags where we have them
(``--port``, ``--rest_api_port``, ``--rest_api_timeout_in_ms=5000``, ``--model_name``/``--model_base_path``
or ``--model_config_file``, ``--monitoring_config_file``, ``--model_config_file_poll_wait_seconds``).
``VerifyPredictRequest``, ``CallREST``, ``SortedObject`` and ``_VerifyModelSpec`` come from
``tensorflow_model_server_test_base.py``. The models are TF Serving's testdata as ``tests/models.py``
builds them (version 123 where the testdata has 00000123): saved_model_half_plus_two_cpu,
saved_model_half_plus_two_tf2_cpu, saved_model_half_plus_three. Expected values are the Python test's.

Not ported
----------
- ``testGoodGrpcChannelArgs``: we have no ``--grpc_channel_arguments`` (our gRPC server's options are
  fixed); nor does ``RunServer`` pass TF Serving's ``grpc.so_reuseaddr=1`` or ``--grpc_socket_path``.
- ``testPredictUDS``: no gRPC on a Unix domain socket (``--grpc_socket_path``).
- ``testPredictOnTfLite``, ``testPredictWithSignatureDefOnTfLite``: TF Lite models are not served
  (``--prefer_tflite_model``).
- ``test_profiler_service_with_valid_trace_request``: no TensorFlow profiler service on the gRPC port.
- ``test_tf_text``: its model (``tf_text_regression``) needs TF Text's ops, which we do not ship.
- ``test_tf_saved_model_save``, ``test_tf_saved_model_save_multiple_signatures``,
  ``test_sequential_keras_saved_model_save``, ``test_distrat_sequential_keras_saved_model_save``: outside
  this port (its REST and gRPC API cases); they are Predict calls on other models, a server each.
- ``testModelConfigReloadWithZeroPollPeriod`` is ported next to ``testModelConfigReload``; the helpers
  ``_TestBadModel`` and ``_TestBadModelUpconvertedSavedModel`` are not tests in TF Serving either (no
  ``test`` prefix) and need a SessionBundle export (``bad_half_plus_two``), a format we do not load.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from bench.loadgen import free_port
from tests.integration.runtime.server import Server, start_server, stop
from tests.models import HALF_PLUS_TWO_METADATA

pytestmark = [pytest.mark.integration, pytest.mark.gunicorn]

RPC_TIMEOUT = 20.0
HTTP_REST_TIMEOUT_MS = 5000
WAIT_FOR_SERVER_READY_SECS = 120
VERSION = 123  # the testdata's 00000123

# testdata/good_model_config.txt, bad_model_config.txt and monitoring_config.txt.
GOOD_MODEL_CONFIG_TEMPLATE = """model_config_list: {
  config: {
    name: "half_plus_two",
    base_path: "${TEST_HALF_PLUS_TWO_DIR}",
    model_platform: "tensorflow"
  },
  config: {
    name: "half_plus_three",
    base_path: "${TEST_HALF_PLUS_THREE_DIR}",
    model_platform: "tensorflow"
  }
}
"""
BAD_MODEL_CONFIG = "improperly formatted file"
MONITORING_CONFIG = """prometheus_config: {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
"""

# testdata/half_plus_two_model_metadata.json.
HALF_PLUS_TWO_MODEL_METADATA = {
    "model_spec": {"name": "default", "signature_name": "", "version": "123"},
    "metadata": HALF_PLUS_TWO_METADATA,
}


# ---------------------------------------------------------------- tensorflow_model_server_test_base.py


@dataclass
class Running:
    server: Server
    grpc_address: str
    rest_address: str


class Servers:
    """``RunServer`` and its ``model_servers_dict``: one server per distinct set of arguments."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: dict[tuple[Any, ...], Running] = {}

    def run_server(
        self,
        model_name: str | None,
        model_path: Path | None,
        model_config_file: Path | None = None,
        monitoring_config_file: Path | None = None,
        model_config_file_poll_period: int | None = None,
    ) -> Running:
        key = (
            model_name,
            model_path,
            model_config_file,
            monitoring_config_file,
            model_config_file_poll_period,
        )
        if key in self.running:
            return self.running[key]
        port = free_port()
        # Ours: one worker and no drain on SIGTERM, so that a module's servers start and stop quickly.
        args = [f"--port={port}", f"--rest_api_timeout_in_ms={HTTP_REST_TIMEOUT_MS}", "--workers=1",
                "--drain_seconds=0"]  # fmt: skip
        if model_config_file:
            args.append(f"--model_config_file={model_config_file}")
        elif model_path:
            args += [f"--model_name={model_name}", f"--model_base_path={model_path}"]
        else:
            raise ValueError("Both model_config_file and model_path cannot be empty!")
        if monitoring_config_file:
            args.append(f"--monitoring_config_file={monitoring_config_file}")
        if model_config_file_poll_period is not None:
            args.append(f"--model_config_file_poll_wait_seconds={model_config_file_poll_period}")
        server = start_server(self.tmp_path, *args)
        running = Running(server, f"127.0.0.1:{port}", server.url.removeprefix("http://"))
        self.running[key] = running
        server.wait_ready(timeout=WAIT_FOR_SERVER_READY_SECS)
        wait_for_server_ready(running.grpc_address)
        return running

    def stop_all(self) -> None:
        for running in self.running.values():  # all at once: each takes its graceful stop
            if running.server.process.poll() is None:
                running.server.process.send_signal(signal.SIGTERM)
        for running in self.running.values():
            stop(running.server)


def wait_for_server_ready(address: str) -> None:
    """``WaitForServerReady``: a Predict for a missing model answers with an error naming 'Servable'."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "intentionally_missing_model"
    deadline = time.monotonic() + WAIT_FOR_SERVER_READY_SECS
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:
                stub.Predict(request, 5.0)
            except grpc.RpcError as error:
                if "Servable" in (error.details() or ""):  # type: ignore[attr-defined]
                    return
        time.sleep(0.25)
    raise AssertionError(f"gRPC on {address} not ready in {WAIT_FOR_SERVER_READY_SECS}s")


def call_rest(url: str, req: Any, max_attempts: int = 3) -> bytes:
    """``CallREST``, with urllib as TF Serving's (a POST goes without a JSON Content-Type); fewer
    attempts than its 60, as our servers are ready before the first call."""
    for attempt in range(max_attempts):
        try:
            json_data = json.dumps(req).encode("utf-8") if req is not None else None
            with urllib.request.urlopen(urllib.request.Request(url, data=json_data), timeout=30) as resp:
                data: bytes = resp.read()
                return data
        except Exception:
            if attempt == max_attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def sorted_object(obj: Any) -> Any:
    """``SortedObject``."""
    if isinstance(obj, dict):
        return sorted((k, sorted_object(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return sorted(sorted_object(x) for x in obj)
    if isinstance(obj, tuple):
        return sorted(sorted_object(x) for x in obj)
    return obj


def verify_model_spec(actual: Any, exp_model_name: str, exp_signature_name: str, exp_version: int) -> None:
    """``_VerifyModelSpec``."""
    assert actual.name == exp_model_name
    assert actual.signature_name == exp_signature_name
    assert actual.version.value == exp_version


def verify_predict_request(
    model_server_address: str,
    expected_output: float,
    expected_version: int,
    model_name: str = "default",
    specify_output: bool = True,
    batch_input: bool = False,
    signature_name: str = "serving_default",
    rpc_timeout: float = RPC_TIMEOUT,
) -> None:
    """``VerifyPredictRequest``: x = [2.0] in, y (DT_FLOAT, one float_val) out."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    with grpc.insecure_channel(model_server_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        result = stub.Predict(request, rpc_timeout)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, request.model_spec.name, signature_name, expected_version)


# --------------------------------------------------------------------------------------------- fixtures


@dataclass
class ServingTestdata:
    """``testdata_dir``: the models, and the config files ``setUp`` writes."""

    half_plus_two: Path  # _GetSavedModelBundlePath: saved_model_half_plus_two_cpu
    half_plus_two_tf2: Path  # _GetSavedModelHalfPlusTwoTf2: saved_model_half_plus_two_tf2_cpu
    half_plus_three: Path  # _GetSavedModelHalfPlusThreePath: saved_model_half_plus_three
    good_model_config: Path  # __BuildModelConfigFile, from good_model_config.txt
    bad_model_config: Path
    monitoring_config: Path
    tmp: Path


@pytest.fixture(scope="module")
def testdata(tmp_path_factory: pytest.TempPathFactory) -> ServingTestdata:
    from tests import models

    root = tmp_path_factory.mktemp("testdata")
    data = ServingTestdata(
        half_plus_two=root / "saved_model_half_plus_two_cpu",
        half_plus_two_tf2=root / "saved_model_half_plus_two_tf2_cpu",
        half_plus_three=root / "saved_model_half_plus_three",
        good_model_config=root / "good_model_config.conf",
        bad_model_config=root / "bad_model_config.txt",
        monitoring_config=root / "monitoring_config.txt",
        tmp=root,
    )
    models.build_half_plus_two(data.half_plus_two, VERSION)
    models.build_half_plus_two_tf2(data.half_plus_two_tf2, VERSION)
    models.build_half_plus_two(data.half_plus_three, VERSION, b=3.0)
    data.good_model_config.write_text(
        GOOD_MODEL_CONFIG_TEMPLATE.replace("${TEST_HALF_PLUS_TWO_DIR}", str(data.half_plus_two)).replace(
            "${TEST_HALF_PLUS_THREE_DIR}", str(data.half_plus_three)
        )
    )
    data.bad_model_config.write_text(BAD_MODEL_CONFIG)
    data.monitoring_config.write_text(MONITORING_CONFIG)
    return data


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    running = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield running
    finally:
        running.stop_all()


def model_version(model_path: Path) -> int:
    """``_GetModelVersion``: the one numeric directory under the model path."""
    (version,) = [int(p.name) for p in model_path.iterdir()]
    return version


# ------------------------------------------------------------------------------------------------- gRPC


# Ports testGetModelStatus.
def test_get_model_status(servers: Servers, testdata: ServingTestdata) -> None:
    model_server_address = servers.run_server("default", testdata.half_plus_two).grpc_address
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    with grpc.insecure_channel(model_server_address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        result = stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    # OK error code (0) indicates no error occurred
    assert result.model_version_status[0].status.error_code == 0


# Ports testGetModelMetadata.
def test_get_model_metadata(servers: Servers, testdata: ServingTestdata) -> None:
    model_path = testdata.half_plus_two
    model_server_address = servers.run_server("default", model_path).grpc_address
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(model_server_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        result = stub.GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == model_version(model_path)
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata


def _test_classify(servers: Servers, model_path: Path) -> None:
    """``_TestClassify``."""
    model_server_address = servers.run_server("default", model_path).grpc_address
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(model_server_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        result = stub.Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    expected_output = 3.0
    assert result.result.classifications[0].classes[0].score == expected_output
    verify_model_spec(result.model_spec, request.model_spec.name, request.model_spec.signature_name,
                      model_version(model_path))  # fmt: skip


# Ports testClassify.
def test_classify(servers: Servers, testdata: ServingTestdata) -> None:
    _test_classify(servers, testdata.half_plus_two)


# Ports testClassifyTf2 (TF2 SavedModels say tensorflow/serving/predict on every signature; TF Serving
# classifies on them as --enable_signature_method_name_check is off by default).
def test_classify_tf2(servers: Servers, testdata: ServingTestdata) -> None:
    _test_classify(servers, testdata.half_plus_two_tf2)


def _test_regress(servers: Servers, model_path: Path) -> None:
    """``_TestRegress``."""
    model_server_address = servers.run_server("default", model_path).grpc_address
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(model_server_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        result = stub.Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    expected_output = 3.0
    assert result.result.regressions[0].value == expected_output
    verify_model_spec(result.model_spec, request.model_spec.name, request.model_spec.signature_name,
                      model_version(model_path))  # fmt: skip


# Ports testRegress.
def test_regress(servers: Servers, testdata: ServingTestdata) -> None:
    _test_regress(servers, testdata.half_plus_two)


# Ports testRegressTf2.
def test_regress_tf2(servers: Servers, testdata: ServingTestdata) -> None:
    _test_regress(servers, testdata.half_plus_two_tf2)


def _test_multi_inference(servers: Servers, model_path: Path) -> None:
    """``_TestMultiInference``."""
    model_server_address = servers.run_server("default", model_path).grpc_address
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    with grpc.insecure_channel(model_server_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        result = stub.MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    expected_output = 3.0
    assert result.results[0].regression_result.regressions[0].value == expected_output
    assert result.results[1].classification_result.classifications[0].classes[0].score == expected_output
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, request.tasks[i].model_spec.name,
                          request.tasks[i].model_spec.signature_name, model_version(model_path))  # fmt: skip


# Ports testMultiInference.
def test_multi_inference(servers: Servers, testdata: ServingTestdata) -> None:
    _test_multi_inference(servers, testdata.half_plus_two)


# Ports testMultiInferenceTf2.
def test_multi_inference_tf2(servers: Servers, testdata: ServingTestdata) -> None:
    _test_multi_inference(servers, testdata.half_plus_two_tf2)


# Ports testPredictSavedModel (_TestPredict: with and without an output filter).
def test_predict_saved_model(servers: Servers, testdata: ServingTestdata) -> None:
    model_path = testdata.half_plus_two
    model_server_address = servers.run_server("default", model_path).grpc_address
    expected_version = model_version(model_path)
    verify_predict_request(model_server_address, expected_output=3.0, expected_version=expected_version)
    verify_predict_request(model_server_address, expected_output=3.0, specify_output=False,
                           expected_version=expected_version)  # fmt: skip


# Ports testGoodModelConfig.
def test_good_model_config(servers: Servers, testdata: ServingTestdata) -> None:
    model_server_address = servers.run_server(
        None, None, model_config_file=testdata.good_model_config
    ).grpc_address
    verify_predict_request(model_server_address, model_name="half_plus_two", expected_output=3.0,
                           expected_version=model_version(testdata.half_plus_two))  # fmt: skip
    verify_predict_request(model_server_address, model_name="half_plus_two", expected_output=3.0,
                           specify_output=False, expected_version=model_version(testdata.half_plus_two))  # fmt: skip
    verify_predict_request(model_server_address, model_name="half_plus_three", expected_output=4.0,
                           expected_version=model_version(testdata.half_plus_three))  # fmt: skip
    verify_predict_request(model_server_address, model_name="half_plus_three", expected_output=4.0,
                           specify_output=False, expected_version=model_version(testdata.half_plus_three))  # fmt: skip


# Ports testBadModelConfig: the server does not start, and says why on stderr in protobuf's words.
def test_bad_model_config(testdata: ServingTestdata) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelservice_runtime.cli", "--rest_api_host=127.0.0.1",
         f"--rest_api_port={free_port()}", f"--port={free_port()}",
         f"--model_config_file={testdata.bad_model_config}"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    error_message = b"Error parsing text-format tensorflow.serving.ModelServerConfig"
    assert proc.stderr is not None
    assert proc.stderr.find(error_message) > -1, proc.stderr
    assert proc.returncode != 0


BASE_CONFIG_PROTO = """
    model_config_list: {{
      config: {{
        name: "{name}",
        base_path: "{model_path}",
        model_platform: "tensorflow"
      }}
    }}
    """


# Ports testModelConfigReload.
def test_model_config_reload(servers: Servers, testdata: ServingTestdata) -> None:
    config_path = testdata.tmp / "model_config_reload.txt"
    # Write a config file serving half_plus_two model
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_two", model_path=testdata.half_plus_two))
    poll_period = 1
    model_server_address = servers.run_server(
        None, None, model_config_file=config_path, model_config_file_poll_period=poll_period
    ).grpc_address
    verify_predict_request(model_server_address, model_name="half_plus_two", expected_output=3.0,
                           specify_output=False, expected_version=model_version(testdata.half_plus_two))  # fmt: skip

    # Rewrite the config file with half_plus_three model
    config_path.write_text(
        BASE_CONFIG_PROTO.format(name="half_plus_three", model_path=testdata.half_plus_three)
    )
    # Give modelserver time to poll and load the new config (TF Serving sleeps 10 s; we poll, as long).
    deadline = time.monotonic() + 10
    while True:
        try:
            # Verify new model config was realized in model server
            verify_predict_request(model_server_address, model_name="half_plus_three", expected_output=4.0,
                                   specify_output=False,
                                   expected_version=model_version(testdata.half_plus_three))  # fmt: skip
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


# Ports testModelConfigReloadWithZeroPollPeriod.
def test_model_config_reload_with_zero_poll_period(servers: Servers, testdata: ServingTestdata) -> None:
    config_path = testdata.tmp / "model_config_zero_poll.txt"
    # Write a config file serving half_plus_two model
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_two", model_path=testdata.half_plus_two))
    poll_period = 0
    model_server_address = servers.run_server(
        None, None, model_config_file=config_path, model_config_file_poll_period=poll_period
    ).grpc_address
    verify_predict_request(model_server_address, model_name="half_plus_two", expected_output=3.0,
                           specify_output=False, expected_version=model_version(testdata.half_plus_two))  # fmt: skip

    # Rewrite the config file with half_plus_three model
    config_path.write_text(
        BASE_CONFIG_PROTO.format(name="half_plus_three", model_path=testdata.half_plus_three)
    )
    # Give modelserver enough time to poll and load the new config should it have such a desire
    time.sleep(poll_period + 1)
    # Verify model server is still serving the old model config
    verify_predict_request(model_server_address, model_name="half_plus_two", expected_output=3.0,
                           specify_output=False, expected_version=model_version(testdata.half_plus_three))  # fmt: skip


# ------------------------------------------------------------------------------------------------- REST


# Ports testClassifyREST.
def test_classify_rest(servers: Servers, testdata: ServingTestdata) -> None:
    host_port = servers.run_server("default", testdata.half_plus_two).rest_address
    url = f"http://{host_port}/v1/models/default:classify"
    json_req = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    resp_data = call_rest(url, json_req)
    assert json.loads(resp_data.decode()) == {"results": [[["", 3.0]]]}


# Ports testRegressREST.
def test_regress_rest(servers: Servers, testdata: ServingTestdata) -> None:
    host_port = servers.run_server("default", testdata.half_plus_two).rest_address
    url = f"http://{host_port}/v1/models/default:regress"
    json_req = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    resp_data = call_rest(url, json_req)
    assert json.loads(resp_data.decode()) == {"results": [3.0]}


# Ports testPredictREST.
def test_predict_rest(servers: Servers, testdata: ServingTestdata) -> None:
    host_port = servers.run_server("default", testdata.half_plus_two).rest_address
    url = f"http://{host_port}/v1/models/default:predict"
    json_req = {"instances": [2.0, 3.0, 4.0]}
    resp_data = call_rest(url, json_req)
    assert json.loads(resp_data.decode()) == {"predictions": [3.0, 3.5, 4.0]}


# Ports testPredictColumnarREST.
def test_predict_columnar_rest(servers: Servers, testdata: ServingTestdata) -> None:
    host_port = servers.run_server("default", testdata.half_plus_two).rest_address
    url = f"http://{host_port}/v1/models/default:predict"
    json_req = {"inputs": [2.0, 3.0, 4.0]}
    resp_data = call_rest(url, json_req)
    assert json.loads(resp_data.decode()) == {"outputs": [3.0, 3.5, 4.0]}


# Ports testGetStatusREST.
def test_get_status_rest(servers: Servers, testdata: ServingTestdata) -> None:
    host_port = servers.run_server("default", testdata.half_plus_two).rest_address
    url = f"http://{host_port}/v1/models/default"
    resp_data = call_rest(url, None)
    assert json.loads(resp_data.decode()) == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


# Ports testGetModelMetadataREST (compared as SortedObject, as TF Serving compares it).
def test_get_model_metadata_rest(servers: Servers, testdata: ServingTestdata) -> None:
    host_port = servers.run_server("default", testdata.half_plus_two).rest_address
    url = f"http://{host_port}/v1/models/default/metadata"
    resp_data = call_rest(url, None)
    assert sorted_object(json.loads(resp_data.decode())) == sorted_object(HALF_PLUS_TWO_MODEL_METADATA)


# Ports testPrometheusEndpoint.
def test_prometheus_endpoint(servers: Servers, testdata: ServingTestdata) -> None:
    host_port = servers.run_server(
        "default", testdata.half_plus_two, monitoring_config_file=testdata.monitoring_config
    ).rest_address
    url = f"http://{host_port}/monitoring/prometheus/metrics"
    resp_data = call_rest(url, None)
    # Verify that there should be some metric type information.
    assert "# TYPE" in resp_data.decode("utf-8")
