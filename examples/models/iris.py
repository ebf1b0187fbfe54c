"""Build the iris example: scikit-learn's bundled iris data -> Keras -> SavedModel, two versions.

    python examples/models/iris.py --out /tmp/models     # writes /tmp/models/iris/1 and /tmp/models/iris/2

Version 1 is trained briefly, version 2 longer, so a rollout from 1 to 2 changes the answers. The
signature takes ``features`` (None, 4) float32 [sepal length, sepal width, petal length, petal width] in
cm and returns ``probabilities`` (None, 3) and ``class_ids`` (None,). Version 2 ships TF Serving warmup
requests (assets.extra/tf_serving_warmup_requests), so its first real request is not the slow one.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_iris

CLASSES = ("setosa", "versicolor", "virginica")


def train(epochs: int, seed: int = 0) -> tuple[keras.Model, float]:
    keras.utils.set_random_seed(seed)
    data = load_iris()
    x, y = data.data.astype(np.float32), data.target
    mean, std = x.mean(axis=0), x.std(axis=0)
    model = keras.Sequential(
        [
            keras.Input((4,), name="features"),
            keras.layers.Normalization(mean=mean, variance=std**2),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model, float(history.history["accuracy"][-1])


def export(model: keras.Model, path: Path) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(features, training=False)
        return {"probabilities": probabilities, "class_ids": tf.argmax(probabilities, axis=1)}

    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")]
    )
    archive.write_out(str(path), verbose=False)


def write_warmup(path: Path) -> None:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    (path / "assets.extra").mkdir(parents=True, exist_ok=True)
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="iris"))
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)))
    entry = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(path / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        writer.write(entry.SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="examples/models/out", help="model base directory")
    args = parser.parse_args()
    base = Path(args.out) / "iris"
    for version, epochs in ((1, 3), (2, 60)):
        model, accuracy = train(epochs)
        export(model, base / str(version))
        if version == 2:
            write_warmup(base / str(version))
        print(f"Wrote {base / str(version)} (training accuracy {accuracy:.2f})")


if __name__ == "__main__":
    main()
