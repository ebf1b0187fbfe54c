"""TensorFlow Serving's gRPC API on ``--port`` (8500), served by the model process.

``tensorflow.serving.PredictionService`` (Predict, Classify, Regress, MultiInference, GetModelMetadata)
and ``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest) with the protos of
``tensorflow-serving-api``, the Open Inference Protocol's ``inference.GRPCInferenceService`` (with
``tritonclient``'s protos), and the standard ``grpc.health.v1.Health`` service. It runs next to the
models, in the model process (the protos need TensorFlow, which only that process holds): a gRPC
request goes through the same repository, batcher, deadlines and metrics as a REST one, without a hop.

Errors carry TF Serving's canonical codes and, where the gRPC path words them differently from REST,
its gRPC messages (``predict_util.cc``: "input size does not match signature ...", "output tensor alias
not found in signature ...", a missing signature is FAILED_PRECONDITION).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from . import metrics
from .config import ConfigError, parse_model_config_text
from .errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ServingError,
    Unavailable,
    Unimplemented,
    code_number,
)
from .loader import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    check_classification_signature,
    check_regression_signature,
    serialized_examples,
)
from .ratelimit import Limiter
from .security import ANONYMOUS, Authenticator, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "inference.GRPCInferenceService",
)


@contextmanager
def _answering(context: grpc.ServicerContext, model: str, api: str) -> Iterator[dict[str, Any]]:
    """Map our errors to gRPC status codes and record the request as REST requests are recorded (the
    status label holds the HTTP status the same error has over REST, so error rates add up)."""
    started = time.perf_counter()
    seen: dict[str, Any] = {"version": ""}
    status = 200
    try:
        yield seen
    except ServingError as exc:
        status = exc.status
        context.abort(grpc.StatusCode[exc.code], exc.message)
    except Exception as exc:  # a bug answers INTERNAL with its type, and is logged
        status = 500
        log.exception("gRPC %s failed", api)
        context.abort(grpc.StatusCode.INTERNAL, Internal.of_bug(exc).message)
    finally:
        metrics.observe_request(model, str(seen["version"]), api, status, time.perf_counter() - started)


def _requested(spec: Any) -> tuple[str, int | None, str | None]:
    """The model a ``ModelSpec`` asks for: (name, version or None, label or None)."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.name, int(spec.version.value), None
    if choice == "version_label":
        return spec.name, None, spec.version_label
    return spec.name, None, None


# Tensor::AsProtoField: the repeated field each dtype's values go in (TF Serving's default for Predict;
# tf.make_tensor_proto would write tensor_content instead).
_PROTO_FIELDS = {
    tf.float32: "float_val", tf.float64: "double_val", tf.int32: "int_val", tf.int16: "int_val",
    tf.int8: "int_val", tf.uint8: "int_val", tf.uint16: "int_val", tf.int64: "int64_val",
    tf.uint32: "uint32_val", tf.uint64: "uint64_val", tf.bool: "bool_val", tf.string: "string_val",
    tf.complex64: "scomplex_val", tf.complex128: "dcomplex_val", tf.float16: "half_val",
}  # fmt: skip


def as_proto_field(array: np.ndarray) -> Any:
    """An output as TF Serving's Predict writes it (``Tensor::AsProtoField``): values in the dtype's
    repeated field (``float_val`` ...), halves as their bits in ``half_val``, complex as (re, im) pairs."""
    dtype = tf.string if array.dtype.kind in "OSU" else tf.dtypes.as_dtype(array.dtype)
    field = _PROTO_FIELDS.get(dtype)
    if field is None:  # bfloat16 and the like: TensorFlow's own converter
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = array.reshape(-1)
    if dtype == tf.string:
        values: Any = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat]
    elif dtype == tf.float16:
        values = flat.view(np.uint16).tolist()
    elif dtype.is_complex:
        values = np.stack([flat.real, flat.imag], axis=-1).reshape(-1).tolist()
    else:
        values = flat.tolist()
    getattr(proto, field).extend(values)
    return proto


def _fill_spec(out: Any, name: str, version: int, signature: str) -> None:
    out.name = name
    out.version.value = version
    out.signature_name = signature


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def _model(self, spec: Any) -> Any:
        return self.engine.repository.resolve(*_requested(spec))

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _answering(context, request.model_spec.name, "grpc_predict") as seen:
            model = self._model(request.model_spec)
            seen["version"] = model.version
            signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature not in model.signature_defs:
                raise FailedPrecondition(f'Serving signature key "{signature}" not found.')
            specs = model.input_specs(signature)
            sent, wanted = set(request.inputs), set(specs)
            if sent != wanted:
                raise InvalidArgument(
                    f"input size does not match signature: {len(sent)}!={len(wanted)} "
                    f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                    f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                    f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
                )
            inputs = {}
            for index, key in enumerate(sorted(sent)):
                proto = request.inputs[key]
                try:
                    sent_dtype = tf.dtypes.as_dtype(proto.dtype)
                except TypeError:  # DT_INVALID, or no type's number: TF Serving's Tensor::FromProto fails
                    raise InvalidArgument(f"tensor parsing error: {key}") from None
                if proto.dtype != specs[key].dtype:
                    raise InvalidArgument(
                        f"Expects arg[{index}] to be {tf.dtypes.as_dtype(specs[key].dtype).name} but "
                        f"{sent_dtype.name} is provided"
                    )
                try:
                    inputs[key] = tf.make_ndarray(proto)
                except (ValueError, TypeError) as exc:  # e.g. tensor_content that does not fit the shape
                    raise InvalidArgument(f"input tensor '{key}' is malformed: {exc}") from None
            outputs_wanted = list(request.output_filter)
            output_specs = model.output_specs(signature)
            for alias in outputs_wanted:
                if alias not in output_specs:
                    raise InvalidArgument(
                        f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                        f"the set {{{','.join(sorted(output_specs))}}}."
                    )
            if len(set(outputs_wanted)) != len(outputs_wanted):
                duplicate = next(a for a in outputs_wanted if outputs_wanted.count(a) > 1)
                raise InvalidArgument(f"duplicate output tensor alias: {duplicate}")
            outputs = self.engine.plane.predict(model, signature, inputs)
            response = predict_pb2.PredictResponse()
            _fill_spec(response.model_spec, request.model_spec.name, model.version, signature)
            for alias in outputs_wanted or sorted(outputs):
                response.outputs[alias].CopyFrom(as_proto_field(outputs[alias]))
            return response

    def _classify(self, model: Any, spec: Any, input_proto: Any, out_spec: Any, result: Any) -> None:
        """Classify ``input_proto`` into a ``ClassificationResult`` and fill the response's model spec."""
        signature = spec.signature_name or DEFAULT_SIGNATURE
        rows = self.engine.plane.classify(model, signature, serialized_examples(input_proto))
        _fill_spec(out_spec, spec.name, model.version, signature)
        for row in rows:
            classifications = result.classifications.add()
            for label, score in row:
                entry = classifications.classes.add()
                entry.label = label
                entry.score = score

    def _regress(self, model: Any, spec: Any, input_proto: Any, out_spec: Any, result: Any) -> None:
        signature = spec.signature_name or DEFAULT_SIGNATURE
        values = self.engine.plane.regress(model, signature, serialized_examples(input_proto))
        _fill_spec(out_spec, spec.name, model.version, signature)
        for value in values:
            result.regressions.add().value = value

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _answering(context, request.model_spec.name, "grpc_classify") as seen:
            model = self._model(request.model_spec)
            seen["version"] = model.version
            response = classification_pb2.ClassificationResponse()
            self._classify(model, request.model_spec, request.input, response.model_spec, response.result)
            return response

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _answering(context, request.model_spec.name, "grpc_regress") as seen:
            model = self._model(request.model_spec)
            seen["version"] = model.version
            response = regression_pb2.RegressionResponse()
            self._regress(model, request.model_spec, request.input, response.model_spec, response.result)
            return response

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Several classify/regress tasks of one model version on one input (``multi_inference.cc``):
        the first task's ModelSpec picks the version, then every task is checked in TF Serving's order
        and with its words before anything runs."""
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        with _answering(context, spec.name, "grpc_multi_inference") as seen:
            model = self._model(spec)
            seen["version"] = model.version
            signatures: set[str] = set()
            for task in request.tasks:
                if not task.model_spec.name:
                    raise InvalidArgument("Found ModelSpec with an empty model name.")
                if task.model_spec.name != spec.name:
                    raise InvalidArgument(
                        "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                    )
                signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
                if signature in signatures:
                    raise InvalidArgument(f"Duplicate evaluation of signature: {signature}")
                signatures.add(signature)
                if signature not in model.signature_defs:
                    raise InvalidArgument(f"Requested signature not found in model graph: {signature}")
                check = getattr(model, "method_name_check", False)
                if task.method_name == CLASSIFY_METHOD:
                    check_classification_signature(model.signature_defs[signature], check)
                elif task.method_name == REGRESS_METHOD:
                    check_regression_signature(model.signature_defs[signature], check)
                else:
                    raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
            response = inference_pb2.MultiInferenceResponse()
            for task in request.tasks:
                result = response.results.add()
                if task.method_name == CLASSIFY_METHOD:
                    self._classify(model, task.model_spec, request.input, result.model_spec,
                                   result.classification_result)  # fmt: skip
                else:
                    self._regress(
                        model, task.model_spec, request.input, result.model_spec, result.regression_result
                    )
            return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _answering(context, request.model_spec.name, "grpc_metadata") as seen:
            fields = list(request.metadata_field)
            if not fields:
                raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
            for field in fields:
                if field != "signature_def":
                    raise InvalidArgument(f"Metadata field {field} is not supported")
            model = self._model(request.model_spec)
            seen["version"] = model.version
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = model.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in model.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
            response.metadata["signature_def"].Pack(signature_map)
            return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _answering(context, request.model_spec.name, "grpc_status"):
            name, version, label = _requested(request.model_spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            for status in self.engine.repository.statuses(name, version, label):
                entry = response.model_version_status.add()
                entry.version = status.version
                entry.state = status.state.value
                entry.status.error_code = code_number(status.error_code)
                entry.status.error_message = status.error_message
            return response

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Adopt a new ``model_config_list``: new models load, removed ones unload, labels change."""
        with _answering(context, "", "grpc_reload_config"):
            text = text_format.MessageToString(request.config)
            try:
                models = parse_model_config_text(text, source="ReloadConfigRequest")
            except ConfigError as exc:
                raise InvalidArgument(str(exc)) from None
            self.engine.repository.apply_config(models)
            self.engine.repository.poll_once()
            log.info(
                "Reloaded the model config over gRPC: %s", ", ".join(m.name for m in models) or "no models"
            )
            return model_management_pb2.ReloadConfigResponse()


# ------------------------------------------------------------------------- Open Inference Protocol (V2)

_CONTENTS = {  # V2 datatype -> the typed field of InferTensorContents that carries it
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def _v2_version(text: str) -> int | None:
    """The REST API's rule and words (``v2._version``); gRPC's unset string is ""."""
    from .protocols.v2 import _version

    return _version(text or None)


def _parameter(parameters: Any, key: str) -> Any:
    if key not in parameters:
        return None
    choice = parameters[key].WhichOneof("parameter_choice")
    return getattr(parameters[key], choice) if choice else None


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """``inference.GRPCInferenceService``, the Open Inference Protocol's gRPC API (the protos of
    ``tritonclient``). A request is turned into the REST API's header and binary body and decoded by the
    same code (``protocols/v2.py``), so both APIs check inputs alike and say the same things."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.pb = service_pb2

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.pb.ServerReadyResponse(ready=self.engine.repository.is_ready())

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        with _answering(context, request.name, "grpc_ready"):
            ready = self.engine.model_ready(request.name, _v2_version(request.version))
            return self.pb.ModelReadyResponse(ready=ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        from . import __version__
        from .protocols.v2 import EXTENSIONS

        return self.pb.ServerMetadataResponse(
            name="modelservice-runtime", version=__version__, extensions=EXTENSIONS
        )

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        from .protocols.v2 import PLATFORM, _tensor_metadata

        with _answering(context, request.name, "grpc_metadata") as seen:
            model = self.engine.repository.resolve(request.name, _v2_version(request.version), None)
            seen["version"] = model.version
            response = self.pb.ModelMetadataResponse(
                name=request.name,
                versions=[str(v) for v in self.engine.repository.available().get(request.name, [])],
                platform=PLATFORM,
            )
            for field, specs in (("inputs", model.input_specs("")), ("outputs", model.output_specs(""))):
                for meta in _tensor_metadata(specs):
                    getattr(response, field).add(
                        name=meta["name"], datatype=meta["datatype"], shape=meta["shape"]
                    )
            return response

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        from .protocols import v2

        with _answering(context, request.model_name, "grpc_infer") as seen:
            model = self.engine.repository.resolve(
                request.model_name, _v2_version(request.model_version), None
            )
            seen["version"] = model.version
            signature = _parameter(request.parameters, "signature_name") or ""
            header, binary = self._as_rest(request)
            specs = model.input_specs(signature)
            # The size REST checks a shape against (no shape may claim more elements than were sent).
            inputs = v2.decode_infer_request(header, memoryview(binary), specs, request.ByteSize())
            results = self.engine.plane.predict(model, signature, inputs)
            wanted = {"outputs": [{"name": o.name} for o in request.outputs]} if request.outputs else {}
            response = self.pb.ModelInferResponse(
                model_name=request.model_name, model_version=str(model.version), id=request.id
            )
            for name, _ in v2._requested_outputs(wanted, results):
                array = results[name]
                response.outputs.add(
                    name=name,
                    datatype=v2.V2_DATATYPES.get(v2._tf_dtype(array), "BYTES"),
                    shape=list(array.shape),
                )
                response.raw_output_contents.append(v2._binary_data(array))
            return response

    def _as_rest(self, request: Any) -> tuple[dict[str, Any], bytes]:
        """The REST API's header (and binary body) for a gRPC request: raw contents become binary data,
        typed contents become JSON ``data``."""
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidArgument(
                f"expected {len(request.inputs)} raw input contents (one per input), got {len(raw)}"
            )
        items = []
        for index, tensor in enumerate(request.inputs):
            item: dict[str, Any] = {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
            }
            if raw:
                item["parameters"] = {"binary_data_size": len(raw[index])}
            else:
                field = _CONTENTS.get(tensor.datatype)
                if field is None:
                    raise InvalidArgument(f"input '{tensor.name}' has unsupported datatype {tensor.datatype}")
                # BYTES stay bytes: a round trip through text would not give back bytes that are not UTF-8.
                item["data"] = list(getattr(tensor.contents, field))
            items.append(item)
        return {"inputs": items}, b"".join(raw)


class GuardInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """The REST API's guards on gRPC. Authentication: the credential in the ``authorization`` (``Bearer
    <key>``) or ``x-api-key`` metadata; UNAUTHENTICATED or PERMISSION_DENIED before the method runs. Rate
    limits: a token for (client, the request's model) from this model process's buckets, else
    RESOURCE_EXHAUSTED with the RateLimit-* fields as trailing metadata. The health service stays open."""

    OPEN_PREFIX = "/grpc.health.v1.Health/"

    def __init__(self, authenticator: Authenticator | None, limiter: Limiter | None) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method.startswith(self.OPEN_PREFIX):
            return continuation(details)
        identity = ANONYMOUS
        if self.authenticator is not None and self.authenticator.enabled:
            metadata = {key: value for key, value in details.invocation_metadata or ()}
            try:
                identity = self.authenticator.authenticate(
                    metadata.get("authorization"), metadata.get("x-api-key")
                )
            except Unavailable as exc:  # the API server could not review a token
                return _refusal(continuation(details), grpc.StatusCode.UNAVAILABLE, exc.message)
            except (Unauthenticated, PermissionDenied) as exc:
                refused = isinstance(exc, Unauthenticated)
                metrics.AUTH_REQUESTS.labels("unauthenticated" if refused else "forbidden", "-").inc()
                code = grpc.StatusCode.UNAUTHENTICATED if refused else grpc.StatusCode.PERMISSION_DENIED
                return _refusal(continuation(details), code, exc.message)
            metrics.AUTH_REQUESTS.labels("allowed", identity.label).inc()
        handler = continuation(details)
        if self.limiter is None or handler is None or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._limited(handler.unary_unary, identity.label),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _limited(self, behaviour: Any, client: str) -> Any:
        limiter = self.limiter
        assert limiter is not None

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            model = _model_of(request)
            try:
                decision = limiter.take(client, model)
            except ServingError as exc:  # the process keeping the pod's buckets is restarting
                context.abort(grpc.StatusCode[exc.code], exc.message)
            if not decision.allowed:
                metrics.RATE_LIMITED.labels(model, client).inc()
                context.set_trailing_metadata([(k.lower(), v) for k, v in decision.headers()])
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, decision.refusal(client, model).message)
            return behaviour(request, context)

        return call


def _model_of(request: Any) -> str:
    """The model a request names: TF Serving's model_spec, MultiInference's first task, V2's name."""
    fields = request.DESCRIPTOR.fields_by_name
    if "model_spec" in fields:
        return str(request.model_spec.name)
    if "tasks" in fields:
        return str(request.tasks[0].model_spec.name) if request.tasks else ""
    for field in ("model_name", "name"):
        if field in fields:
            return str(getattr(request, field))
    return ""


def _refusal(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same kind as ``handler`` that aborts with ``code``."""
    if handler is None:
        return None

    def abort(_: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class GrpcServer:
    """The gRPC server of the model process; its health follows the repository's readiness."""

    def __init__(
        self,
        engine: Any,
        host: str,
        port: int,
        threads: int,
        authenticator: Authenticator | None = None,
        limiter: Limiter | None = None,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.engine = engine
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
            interceptors=(
                [GuardInterceptor(authenticator, limiter)]
                if (authenticator is not None and authenticator.enabled) or limiter is not None
                else None
            ),
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(engine), self.server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(engine), self.server)
        # Triton's whole service: what the Open Inference Protocol does not have answers UNIMPLEMENTED.
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(engine), self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        address = f"{'[::]' if host in ('0.0.0.0', '') else host}:{port}"
        if credentials is not None:  # TLS: tls.grpc_credentials()
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        self._stop = False

    def start(self) -> None:
        self.server.start()
        log.info("Serving TF Serving's gRPC API on port %d", self.port)

    def update_health(self) -> None:
        """SERVING once every configured model has an AVAILABLE version, as /v2/health/ready."""
        ready = self.engine.repository.is_ready()
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", *SERVICE_NAMES):
            self.health.set(service, status)

    def stop(self, grace: float) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)
