"""Loading one SavedModel version, running its signatures, and warming it up.

This is the only module that imports TensorFlow at the top. **TensorFlow is not fork-safe,** so nothing
imports this module in the Gunicorn master: the repository imports it lazily from the worker's loading
thread (see ``gunicorn_conf.py``).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Mapping
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

        config = config_pb2.ConfigProto(
            allow_soft_placement=True,
            intra_op_parallelism_threads=intra_op,
            inter_op_parallelism_threads=inter_op,
        )
        gpus = tf.config.list_physical_devices("GPU")
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

    def __init__(self, name: str, version: int, path: str) -> None:
        self.name = name
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

    def signature(self, name: str) -> Any:
        """The SignatureDef for ``name`` ('' means serving_default), or TF Serving's 400."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.signature_defs or key.startswith("__"):  # __saved_model_init_op is no API
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
        return dict(zip(outputs, values, strict=True))

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run(signature_name, inputs)

    def _method_signature(self, signature_name: str, method: str, what: str) -> str:
        key = signature_name or DEFAULT_SIGNATURE
        if key not in self.signature_defs:
            raise InvalidArgument(f"No signature was found with the name: {key}")
        actual = self.signature_defs[key].method_name
        if actual != method:
            raise InvalidArgument(f"Expected {what} signature method_name to be {method}. Was: {actual}")
        return key

    def classify(self, signature_name: str, examples: list[bytes]) -> list[list[tuple[str, float]]]:
        key = self._method_signature(signature_name, CLASSIFY_METHOD, "classification")
        sig = self.signature_defs[key]
        outputs = self.run(key, {next(iter(sig.inputs)): np.array(examples, dtype=object)})
        classes, scores = outputs.get("classes"), outputs.get("scores")
        if classes is None and scores is None:
            raise InvalidArgument("Expected classification signature outputs 'classes' or 'scores'")
        reference = scores if scores is not None else classes
        assert reference is not None
        if reference.ndim != 2 or reference.shape[0] != len(examples):
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(reference.shape)}"
            )
        results = []
        for i in range(len(examples)):
            row = []
            for c in range(reference.shape[1]):
                label = classes[i][c].decode("utf-8", "replace") if classes is not None else ""
                score = float(scores[i][c]) if scores is not None else 0.0
                row.append((label, score))
            results.append(row)
        return results

    def regress(self, signature_name: str, examples: list[bytes]) -> list[float]:
        key = self._method_signature(signature_name, REGRESS_METHOD, "regression")
        sig = self.signature_defs[key]
        outputs = self.run(key, {next(iter(sig.inputs)): np.array(examples, dtype=object)})
        if "outputs" not in outputs:
            raise InvalidArgument("Expected regression signature output 'outputs'")
        values = outputs["outputs"]
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1 or values.shape[0] != len(examples):
            raise InvalidArgument(
                f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                f"got {list(outputs['outputs'].shape)}"
            )
        return [float(v) for v in values]

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
    raise InvalidArgument("Input is empty")


def _op_error(exc: tf.errors.OpError) -> ServingError:
    code = code_of_tf_error(exc)
    error: ServingError
    if code == "INVALID_ARGUMENT":
        error = InvalidArgument(exc.message)
    else:
        error = Internal(exc.message)
        error.code = code
    return error


def load_model(name: str, version: int, path: str, warmup: bool = True) -> LoadedModel:
    started = time.monotonic()
    model = LoadedModel(name, version, path)
    warmed = model.warm_up() if warmup else 0
    log.info(
        "Loaded model %s version %d from %s in %.2fs (%d warmup requests)",
        name, version, path, time.monotonic() - started, warmed,
    )  # fmt: skip
    return model
