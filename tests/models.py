"""Small real SavedModels for the tests, built in seconds without downloads.

Each builder writes ``<base>/<version>/`` and returns the version directory. Values are chosen so that the
expected outputs are easy to compute by hand in the tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


def build_keras_linear(base: Path, version: int, scale: float) -> Path:
    """Keras -> ``model.export()``: y = x @ W with W = scale * I (4 -> 4), input (None, 4) float32."""
    import keras

    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(4, use_bias=False)])
    model.layers[0].set_weights([np.eye(4, dtype=np.float32) * scale])
    path = base / str(version)
    model.export(str(path), verbose=False)
    return path


def build_multi_io(base: Path, version: int = 1) -> Path:
    """Named inputs ``a`` (None, 2) float32 and ``b`` (None,) int64; outputs ``sum``, ``double_b`` and
    ``tag_bytes`` (a string tensor whose name ends in _bytes, so TF Serving base64-encodes it)."""
    import tensorflow as tf

    class MultiIO(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None], tf.int64, name="b"),
            ]
        )
        def serve(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
            return {
                "sum": tf.reduce_sum(a, axis=1),
                "double_b": b * 2,
                "tag_bytes": tf.strings.as_string(b),
            }

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def halve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"half": x / 2.0}

    module = MultiIO()
    path = base / str(version)
    tf.saved_model.save(
        module,
        str(path),
        signatures={"serving_default": module.serve, "halve": module.halve},
    )
    return path


def build_string_model(base: Path, version: int = 1) -> Path:
    """String input ``text`` (None,): outputs ``length`` (int32) and ``upper`` (string)."""
    import tensorflow as tf

    class Strings(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"length": tf.strings.length(text), "upper": tf.strings.upper(text)}

    module = Strings()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def build_slow_model(base: Path, version: int = 1, rounds: int = 96) -> Path:
    """y = x (input ``x`` (None, 4) float32), after ``rounds`` 384x384 matmuls: tens of milliseconds of real
    compute per call, so a test can fill a batch queue without sleeping in Python."""
    import tensorflow as tf

    class Slow(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(tf.eye(384) * 0.5)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            state = tf.eye(384)
            for _ in tf.range(rounds):
                state = tf.matmul(state, self.weights) * 2.0
            return {"y": x + 0.0 * tf.reduce_sum(state[:1, :4], axis=0)}

    module = Slow()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def build_classify_regress(base: Path, version: int = 1) -> Path:
    """A TF1-style SavedModel with classify, regress and predict signatures over tf.Examples.

    Feature ``x`` (float, length 1). classify: classes ["neg", "pos"] with scores [1 - s, s] where
    s = sigmoid(x); regress: outputs = 2x + 1.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    path = base / str(version)
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})
        x = features["x"][:, 0]
        s = tf.sigmoid(x)
        scores = tf.stack([1.0 - s, s], axis=1)
        batch = tf.shape(x)[0]
        classes = tf.tile(tf.constant([["neg", "pos"]]), [batch, 1])
        regression = tf.reshape(2.0 * x + 1.0, [-1, 1])
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={
                    "serving_default": v1.saved_model.classification_signature_def(
                        serialized, classes, scores
                    ),
                    "classify_x": v1.saved_model.classification_signature_def(serialized, classes, scores),
                    "regress_x": v1.saved_model.regression_signature_def(serialized, regression),
                    "predict_x": v1.saved_model.predict_signature_def(
                        {"examples": serialized}, {"scores": scores}
                    ),
                },
            )
            builder.save()
    return path


def build_half_plus_two(base: Path, version: int = 1, b: float = 2.0, as_text: bool = False) -> Path:
    """TF Serving's test model, built as its generator script builds it (``saved_model_half_plus_two.py``,
    ``tf.compat.v1``): y = 0.5 * x + b, y2 = 0.5 * x + 3, y3 = 0.5 * x2 + 3, where ``x`` and ``x2`` are
    parsed from tf.Examples (features ``x``, and ``x2`` defaulting to 0) and then fed directly by the
    predict signature (``x`` is an intermediate tensor of shape [-1, 1], not a placeholder). Signatures:
    serving_default (predict x -> y), regress_x_to_y, regress_x_to_y2, regress_x2_to_y3, classify_x_to_y.
    ``b=3.0`` gives half_plus_three; an asset file and a main op are saved as the script saves them."""
    import tensorflow as tf

    v1 = tf.compat.v1
    path = base / str(version)
    assets = Path(tempfile.mkdtemp())  # copied into the SavedModel's assets/ by the builder
    (assets / "foo.txt").write_text("asset-file-contents")
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        a = v1.Variable(0.5, name="a")
        b_var = v1.Variable(b, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        features = v1.io.parse_example(
            serialized,
            {
                "x": v1.io.FixedLenFeature([1], dtype=tf.float32),
                "x2": v1.io.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(features["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b_var), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        a2 = v1.Variable(0.5, name="a2")
        c2 = v1.Variable(3.0, name="c2")
        y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")
        asset_path = tf.constant(str(assets / "foo.txt"))
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        filename = v1.Variable("foo.txt", name="filename_tensor", trainable=False, collections=[])
        assign_filename = filename.assign("foo.txt")
        info = v1.saved_model.utils.build_tensor_info
        regress, classify = v1.saved_model.REGRESS_METHOD_NAME, v1.saved_model.CLASSIFY_METHOD_NAME

        def signature(inputs: dict[str, tf.Tensor], outputs: dict[str, tf.Tensor], method: str) -> object:
            return v1.saved_model.build_signature_def(
                {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method
            )

        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            session,
            ["serve"],
            signature_def_map={
                "regress_x_to_y": signature({"inputs": serialized}, {"outputs": y}, regress),
                "regress_x_to_y2": signature({"inputs": serialized}, {"outputs": y2}, regress),
                "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": y3}, regress),
                "classify_x_to_y": signature({"inputs": serialized}, {"scores": y}, classify),
                "serving_default": signature({"x": x}, {"y": y}, v1.saved_model.PREDICT_METHOD_NAME),
            },
            assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            main_op=tf.group(assign_filename),
        )
        builder.save(as_text)
    shutil.rmtree(assets)
    return path


def build_half_plus_two_tf2(base: Path, version: int = 1) -> Path:
    """TF Serving's native TF2 half_plus_two (``HalfPlusTwoModel`` in its generator script): the same
    regress/classify signatures over tf.Examples, ``regress_x2_to_y3`` and ``classify_x2_to_y3`` over a
    float [1], and serving_default predicting y = 0.5 * x + 2 for ``x`` of shape [1]."""
    import tensorflow as tf

    def parse_x(serialized: tf.Tensor) -> tf.Tensor:
        features = {
            "x": tf.io.FixedLenFeature([1], dtype=tf.float32),
            "x2": tf.io.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
        }
        return tf.io.parse_example(serialized, features)["x"]

    examples = tf.TensorSpec([None], tf.string, name="inputs")
    floats = tf.TensorSpec([1], tf.float32, name="inputs")

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": self.a * parse_x(serialized) + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy2(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": self.a * parse_x(serialized) + self.c}

        @tf.function(input_signature=[floats])
        def regress_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": self.a * x2 + self.c}

        @tf.function(input_signature=[examples])
        def classify_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": self.a * parse_x(serialized) + self.b}

        @tf.function(input_signature=[floats])
        def classify_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": self.a * x2 + self.c}

    module = HalfPlusTwo()
    path = base / str(version)
    signatures = {
        "regress_x_to_y": module.regress_xy,
        "regress_x_to_y2": module.regress_xy2,
        "regress_x2_to_y3": module.regress_x2y3,
        "classify_x_to_y": module.classify_xy,
        "classify_x2_to_y3": module.classify_x2y3,
        "serving_default": module.predict,
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def _signature_metadata(
    inputs: dict[str, object], outputs: dict[str, object], method: str
) -> dict[str, object]:
    return {"inputs": inputs, "outputs": outputs, "method_name": method, "defaults": {}}


_FLOAT_N_1 = {
    "dtype": "DT_FLOAT",
    "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False},
}
# TF Serving's checked-in test data says {"dim": [], "unknown_rank": true} for tf_example: its SavedModels
# predate the generator script's placeholder shape (shape=[None]), which build_half_plus_two follows, so
# the model built here says [-1]. That is the model, not the server.
_EXAMPLES = {
    "dtype": "DT_STRING",
    "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
    "name": "tf_example:0",
}
# The "metadata" of GetModelMetadata for build_half_plus_two, as TF Serving's testdata JSON files write it
# (half_plus_two_model_metadata.json, saved_model_half_plus_two_2_versions_metadata.json).
HALF_PLUS_TWO_METADATA = {"signature_def": {"signature_def": {
    "regress_x2_to_y3": _signature_metadata({"inputs": {**_FLOAT_N_1, "name": "x2:0"}},
                                            {"outputs": {**_FLOAT_N_1, "name": "y3:0"}}, "tensorflow/serving/regress"),
    "serving_default": _signature_metadata({"x": {**_FLOAT_N_1, "name": "x:0"}}, {"y": {**_FLOAT_N_1, "name": "y:0"}},
                                           "tensorflow/serving/predict"),
    "classify_x_to_y": _signature_metadata({"inputs": _EXAMPLES}, {"scores": {**_FLOAT_N_1, "name": "y:0"}},
                                           "tensorflow/serving/classify"),
    "regress_x_to_y2": _signature_metadata({"inputs": _EXAMPLES}, {"outputs": {**_FLOAT_N_1, "name": "y2:0"}},
                                           "tensorflow/serving/regress"),
    "regress_x_to_y": _signature_metadata({"inputs": _EXAMPLES}, {"outputs": {**_FLOAT_N_1, "name": "y:0"}},
                                          "tensorflow/serving/regress"),
}}}  # fmt: skip


def add_warmup(version_dir: Path, inputs: dict[str, np.ndarray], count: int = 2) -> Path:
    """Write ``assets.extra/tf_serving_warmup_requests`` (TFRecord of PredictionLog) for serving_default."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    extra = version_dir / "assets.extra"
    os.makedirs(extra, exist_ok=True)
    path = extra / "tf_serving_warmup_requests"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(count):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name="warm", signature_name="serving_default")
            )
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path
