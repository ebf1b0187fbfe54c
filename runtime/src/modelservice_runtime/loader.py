"""Loading one SavedModel version, running its signatures, and warming it up.

This is the only module that imports TensorFlow at the top. **TensorFlow is not fork-safe,** so nothing
imports this module in the Gunicorn master or the HTTP workers: the model process imports it in its main
thread before it serves (``engine.import_tensorflow``; TensorFlow's import is not thread-safe either).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.saved_model import loader_impl
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import prediction_log_pb2

from .errors import FailedPrecondition, Internal, InvalidArgument, ServingError, code_of_tf_error
from .protocols.tensors import TensorSpec

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit

_configured = threading.Lock()
_configured_done = False
# What every model's session runs with (TF Serving's session config): thread pools and GPU options.
_session_config = config_pb2.ConfigProto(allow_soft_placement=True)


def session_config() -> config_pb2.ConfigProto:
    return _session_config


def configure_runtime(
    intra_op: int, inter_op: int, gpu_memory_fraction: float = 0.0, gpu_devices: str = ""
) -> None:
    """Set up TensorFlow once per process, before the first model loads: thread pools, and on a GPU what
    TF Serving sets in its session config. ``gpu_memory_fraction`` > 0 reserves that fraction of each GPU
    (``--per_process_gpu_memory_fraction``); 0 turns memory growth on, so the process takes what its models
    need instead of TensorFlow's default of nearly all of it. ``gpu_devices`` ("0,1") picks GPUs among the
    visible ones (the device plugin decides which are visible).

    Models run in TF1 sessions (as in TF Serving) and the rest (warmup records) eagerly: both get the same
    GPU options, so whichever touches a GPU first sets it up the same way."""
    global _configured_done
    with _configured:
        if _configured_done:
            return
        _configured_done = True
        from tensorflow.python.eager import context

        gpus = tf.config.list_physical_devices("GPU")
        config = config_pb2.ConfigProto(
            allow_soft_placement=True,
            intra_op_parallelism_threads=intra_op,
            inter_op_parallelism_threads=inter_op or default_inter_op(intra_op, bool(gpus)),
        )
        if gpu_devices:
            wanted = [int(i) for i in gpu_devices.split(",")]
            missing = [i for i in wanted if i >= len(gpus)]
            if missing:
                raise FailedPrecondition(
                    f"--tensorflow_gpu_device={gpu_devices}: GPU {missing[0]} is not visible "
                    f"({len(gpus)} GPU(s) visible)"
                )
            config.gpu_options.visible_device_list = gpu_devices
            gpus = [gpus[i] for i in wanted]
        if gpu_memory_fraction > 0:
            config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
        else:
            config.gpu_options.allow_growth = True
        _session_config.CopyFrom(config)
        ctx = context.context()
        if ctx._context_handle is not None:  # tests load several models in one process
            log.debug("TensorFlow's eager context was already initialised")
            return
        # TF2's public API has only absolute memory limits, so the options go into the eager context's
        # base config, which TensorFlow merges with its device options when it starts.
        base = config_pb2.ConfigProto()
        if ctx._config is not None:
            base.CopyFrom(ctx._config)
        base.MergeFrom(config)
        ctx._config = base
        if gpus:
            log.info(
                "Using %d GPU(s): %s; memory %s", len(gpus), ", ".join(g.name for g in gpus),
                f"fraction {gpu_memory_fraction}" if gpu_memory_fraction > 0 else "grows as needed",
            )  # fmt: skip


def default_inter_op(intra_op: int, gpu: bool) -> int:
    """TF's ``inter_op_parallelism_threads`` when ``--tensorflow_inter_op_parallelism`` is not set.

    On CPU, -1: every op runs in the thread that runs the model (TensorFlow's own meaning of a negative
    value). The batch threads (or the request threads without batching) already run as many models at
    once as there are cores, and ops of a serving graph mostly run one after the other, so an inter-op
    pool only adds a hand-off to another thread and back for each op: for the bench's small model it
    cost 74 -> 28 us per one-row run and 261 -> 156 us of CPU per 8-row batch; the large model's runs
    take the same time either way (intra-op threads still split its big ops). On a GPU, where this was
    never measured, TF Serving's usual small pool stays."""
    return max(1, min(2, intra_op)) if gpu else -1


def _spec(key: str, info: Any) -> TensorSpec:
    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    return TensorSpec(key=key, dtype=int(info.dtype), shape=shape)


class LoadedModel:
    """One loaded version of one model: its signatures and how to run them.

    The SavedModel is loaded into a TF1 session, as TF Serving does (``LoadSavedModel``), whichever
    TensorFlow wrote it: a signature's inputs are fed by tensor name, so a request is not checked against
    the signature's shapes but fed as sent and the graph decides (``[1.0, 2.0, 5.0]`` into half_plus_two's
    ``x: [-1, 1]`` answers three values, as in TF Serving's docs), inputs may be intermediate tensors, and
    one call costs far less than an eager signature call.
    """

    def __init__(self, name: str, version: int, path: str, method_name_check: bool = False) -> None:
        self.name = name
        # TF Serving's --enable_signature_method_name_check: off, classify and regress take any signature
        # shaped like one (TF2 SavedModels say tensorflow/serving/predict on every signature).
        self.method_name_check = method_name_check
        self.version = version
        self.path = path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config())
        try:
            loader = loader_impl.SavedModelLoader(path)
            with self.graph.as_default(), deprecation.silence():
                self.meta_graph = loader.load(self.session, ["serve"])
        except (OSError, RuntimeError) as exc:  # no saved_model.pb, no 'serve' tag
            self.session.close()
            raise FailedPrecondition(f"Cannot load the SavedModel at {path}: {exc}") from None
        except BaseException:
            self.session.close()
            raise
        # Specs are read on every request (decode, feed): build them once per signature.
        self._input_specs: dict[str, dict[str, TensorSpec]] = {}
        self._output_specs: dict[str, dict[str, TensorSpec]] = {}
        self._callables: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._callables_lock = threading.Lock()

    # -- signatures

    @property
    def signature_defs(self) -> Mapping[str, Any]:
        signature_defs: Mapping[str, Any] = self.meta_graph.signature_def
        return signature_defs

    def _has_signature(self, key: str) -> bool:
        try:
            return key in self.signature_defs
        except UnicodeEncodeError:  # a lone surrogate ("\\udc80") names none: the proto map cannot look it up
            return False

    def signature(self, name: str) -> Any:
        """The SignatureDef for ``name`` ('' means serving_default), or TF Serving's 400."""
        key = name or DEFAULT_SIGNATURE
        if not self._has_signature(key) or key.startswith("__"):  # __saved_model_init_op is no API
            raise InvalidArgument(f'Serving signature name: "{key}" not found in signature def')
        return self.signature_defs[key]

    def input_specs(self, signature_name: str) -> dict[str, TensorSpec]:
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self._input_specs:
            sig = self.signature(key)
            self._input_specs[key] = {name: _spec(name, info) for name, info in sig.inputs.items()}
        return self._input_specs[key]

    def output_specs(self, signature_name: str) -> dict[str, TensorSpec]:
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self._output_specs:
            sig = self.signature(key)
            self._output_specs[key] = {name: _spec(name, info) for name, info in sig.outputs.items()}
        return self._output_specs[key]

    # -- running

    def _callable(self, key: str, names: tuple[str, ...]) -> tuple[Any, list[str]]:
        """The session callable feeding ``names`` of signature ``key`` and fetching all its outputs."""
        entry = self._callables.get((key, names))
        if entry is None:
            sig = self.signature_defs[key]
            outputs = sorted(sig.outputs)
            options = config_pb2.CallableOptions(
                feed=[sig.inputs[n].name for n in names], fetch=[sig.outputs[n].name for n in outputs]
            )
            with self._callables_lock:
                entry = self._callables.get((key, names))
                if entry is None:
                    # Session.make_callable() checks shapes against the graph's static ones in Python;
                    # the session's own callable feeds as TF Serving does and costs a third as much.
                    entry = (self.session._make_callable_from_options(options), outputs)
                    self._callables[(key, names)] = entry
        return entry

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature; TF's own errors come back as ServingErrors with TF's canonical code."""
        key = signature_name or DEFAULT_SIGNATURE
        specs = self.input_specs(key)  # raises TF Serving's 400 for an unknown signature
        names = tuple(sorted(inputs))
        feeds = []
        for name in names:
            spec = specs.get(name)
            if spec is None:
                raise InvalidArgument(f"signature '{key}' has no input '{name}'")
            feeds.append(_feedable(name, inputs[name], spec))
        call, outputs = self._callable(key, names)
        try:
            values = call(*feeds)
        except tf.errors.OpError as exc:
            raise _op_error(exc) from None
        except (TypeError, ValueError) as exc:  # a value the session cannot turn into a tensor
            raise InvalidArgument(f"signature '{key}' rejected the inputs: {exc}") from None
        # A scalar string output comes back as bytes, not an array: every output is an array from here.
        return {name: v if isinstance(v, np.ndarray) else np.asarray(v, dtype=object if isinstance(v, bytes) else None)
                for name, v in zip(outputs, values, strict=True)}  # fmt: skip

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run(signature_name, inputs)

    def _method_signature(self, signature_name: str, check: Callable[[Any, bool], None]) -> tuple[str, Any]:
        """``GetClassificationSignatureDef`` / ``GetRegressionSignatureDef``: the named signature, checked."""
        key = signature_name or DEFAULT_SIGNATURE
        if not self._has_signature(key):
            raise InvalidArgument(f"No signature was found with the name: {key}")
        signature = self.signature_defs[key]
        check(signature, self.method_name_check)
        return key, signature

    def classify(self, signature_name: str, examples: list[bytes]) -> list[list[tuple[str, float]]]:
        """TF Serving's classifier (``classifier.cc``): signature checks, one run, its output checks."""
        key, signature = self._method_signature(signature_name, check_classification_signature)
        if not examples:
            raise InvalidArgument("Input is empty.")
        outputs = self.run(key, {CLASSIFY_INPUTS: np.array(examples, dtype=object)})
        return classification_result(outputs, signature, len(examples))

    def regress(self, signature_name: str, examples: list[bytes]) -> list[float]:
        """TF Serving's regressor (``regressor.cc``): signature checks, one run, its output checks."""
        key, _ = self._method_signature(signature_name, check_regression_signature)
        if not examples:
            raise InvalidArgument("Input is empty.")
        outputs = self.run(key, {REGRESS_INPUTS: np.array(examples, dtype=object)})
        return regression_result(outputs, len(examples))

    # -- warmup

    def warm_up(self) -> int:
        """Replay ``assets.extra/tf_serving_warmup_requests`` (TFRecord of PredictionLog); return the count."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise InvalidArgument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(record)
            kind = entry.WhichOneof("log_type")
            if kind == "predict_log":
                request = entry.predict_log.request
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                self.predict(request.model_spec.signature_name, inputs)
            elif kind == "classify_log":
                request = entry.classify_log.request
                self.classify(request.model_spec.signature_name, serialized_examples(request.input))
            elif kind == "regress_log":
                request = entry.regress_log.request
                self.regress(request.model_spec.signature_name, serialized_examples(request.input))
            else:
                raise InvalidArgument(f"Unsupported log_type for warmup: {kind}")
        return count


# -- classify / regress: TF Serving's checks (classifier.cc, regressor.cc), with its words

CLASSIFY_INPUTS, CLASSIFY_CLASSES, CLASSIFY_SCORES = "inputs", "classes", "scores"
REGRESS_INPUTS, REGRESS_OUTPUTS = "inputs", "outputs"


def _debug_string(signature: Any) -> str:
    """``SignatureDef::DebugString()``: the text format."""
    from google.protobuf import text_format

    text: str = text_format.MessageToString(signature)
    return text


def check_classification_signature(signature: Any, method_name_check: bool) -> None:
    """``PreProcessClassification``. With --enable_signature_method_name_check off (TF Serving's default)
    the method_name is not looked at, only the structure: one input named "inputs", and one or two
    outputs among which "classes" or "scores"."""
    if method_name_check and signature.method_name != CLASSIFY_METHOD:
        raise InvalidArgument(
            f"Expected classification signature method_name to be {CLASSIFY_METHOD}. "
            f"Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise InvalidArgument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise InvalidArgument(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
    if CLASSIFY_CLASSES not in signature.outputs and CLASSIFY_SCORES not in signature.outputs:
        raise InvalidArgument(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSIFY_CLASSES}" or "{CLASSIFY_SCORES}". Signature was: {_debug_string(signature)}'
        )


def check_regression_signature(signature: Any, method_name_check: bool) -> None:
    """``PreProcessRegression``: one input named "inputs", one output named "outputs" (and, with
    --enable_signature_method_name_check, the regress method_name)."""
    if method_name_check and signature.method_name != REGRESS_METHOD:
        raise InvalidArgument(
            f"Expected regression signature method_name to be {REGRESS_METHOD}. Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise InvalidArgument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise InvalidArgument(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise InvalidArgument(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")


def _shape_text(array: np.ndarray) -> str:
    """``TensorShape::DebugString()``."""
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _dtype_text(array: np.ndarray) -> str:
    """``DataType_Name`` of an output."""
    from tensorflow.core.framework import types_pb2

    dtype = tf.string if array.dtype.kind in "OSU" else tf.dtypes.as_dtype(array.dtype)
    name: str = types_pb2.DataType.Name(dtype.as_datatype_enum)
    return name


def classification_result(
    outputs: Mapping[str, np.ndarray], signature: Any, num_examples: int
) -> list[list[tuple[str, float]]]:
    """``PostProcessClassificationResult``: (label, score) per class per example."""
    classes = outputs.get(CLASSIFY_CLASSES) if CLASSIFY_CLASSES in signature.outputs else None
    scores = outputs.get(CLASSIFY_SCORES) if CLASSIFY_SCORES in signature.outputs else None
    for what, tensor, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(tensor)}"
            )
        if _dtype_text(tensor) != dtype:
            raise InvalidArgument(f"Expected {what} Tensor of {dtype}. Got: {_dtype_text(tensor)}")
        if tensor.shape[0] != num_examples:
            raise InvalidArgument(
                f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    reference = classes if classes is not None else scores
    num_classes = 0 if reference is None else reference.shape[1]
    results = []
    for i in range(num_examples):
        row = []
        for c in range(num_classes):
            label = classes[i][c].decode("utf-8", "replace") if classes is not None else ""
            score = float(scores[i][c]) if scores is not None else 0.0
            row.append((label, score))
        results.append(row)
    return results


def regression_result(outputs: Mapping[str, np.ndarray], num_examples: int) -> list[float]:
    """``PostProcessRegressionResult``: one value per example."""
    tensor = outputs[REGRESS_OUTPUTS]
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape_text(tensor)}"
        )
    if tensor.shape[0] != num_examples:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {num_examples} vs. {tensor.shape[0]}"
        )
    if _dtype_text(tensor) != "DT_FLOAT":
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_text(tensor)}")
    return [float(v) for v in tensor.reshape(-1)]


def _feedable(name: str, array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``array`` in the signature input's dtype (the session feeds without converting)."""
    want = _numpy_dtype(spec.dtype)
    if array.dtype == want:
        return array
    try:
        if want == np.dtype(object):
            if array.dtype.kind in "US":
                return np.vectorize(_as_bytes, otypes=[object])(array) if array.size else array.astype(object)
            return array.astype(object)
        return array.astype(want)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"input '{name}' cannot be fed as {tf.dtypes.as_dtype(spec.dtype).name}: {exc}"
        ) from None


@functools.cache
def _numpy_dtype(dtype: int) -> np.dtype[Any]:
    numpy_dtype: np.dtype[Any] = np.dtype(tf.dtypes.as_dtype(dtype).as_numpy_dtype)
    return numpy_dtype


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def serialized_examples(input_proto: Any) -> list[bytes]:
    """tf.Examples of an ``Input`` proto, each merged with the context when there is one."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        with_context = input_proto.example_list_with_context
        context = with_context.context.SerializeToString()
        # Concatenated serialized protos parse as a merge: the example's features win.
        return [context + e.SerializeToString() for e in with_context.examples]
    return []  # no kind: classify and regress answer "Input is empty." after checking the signature


def _op_error(exc: tf.errors.OpError) -> ServingError:
    code = code_of_tf_error(exc)
    error: ServingError
    if code == "INVALID_ARGUMENT":
        error = InvalidArgument(exc.message)
    else:
        error = Internal(exc.message)
        error.code = code
    return error


def load_model(
    name: str, version: int, path: str, warmup: bool = True, method_name_check: bool = False
) -> LoadedModel:
    started = time.monotonic()
    model = LoadedModel(name, version, path, method_name_check=method_name_check)
    warmed = model.warm_up() if warmup else 0
    log.info(
        "Loaded model %s version %d from %s in %.2fs (%d warmup requests)",
        name, version, path, time.monotonic() - started, warmed,
    )  # fmt: skip
    return model
