"""Build the digits example: an image classifier whose signature takes PNG bytes.

    python examples/models/digits.py --out /tmp/models   # writes /tmp/models/digits/1 and sample PNGs

Trained on scikit-learn's bundled 8x8 digits. The serving signature takes ``image_bytes`` (None,) string:
each element is a PNG file, decoded, converted to grayscale and resized to 8x8 inside the graph, so a
client posts the file itself (multipart upload or ``{"b64": ...}``). Outputs: ``probabilities`` (None, 10)
and ``digit`` (None,). Sample PNGs go to ``<out>/digits-samples/<index>-<label>.png``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits


def train(epochs: int = 30) -> tuple[keras.Model, float]:
    keras.utils.set_random_seed(0)
    data = load_digits()
    x = (data.images / 16.0).reshape(-1, 64).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(x, data.target, epochs=epochs, batch_size=64, verbose=0)
    return model, float(history.history["accuracy"][-1])


def decode(png: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_png(png, channels=1)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, [8, 8], antialias=True)
    return tf.reshape(image, [64])


def export(model: keras.Model, path: Path) -> None:
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([64], tf.float32))
        probabilities = model(pixels, training=False)
        return {"probabilities": probabilities, "digit": tf.argmax(probabilities, axis=1)}

    archive.add_endpoint(
        "serving_default", serve, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
    )
    archive.write_out(str(path), verbose=False)


def write_samples(directory: Path, count: int = 10) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = load_digits()
    for index in range(count):
        pixels = np.round(data.images[index] / 16.0 * 255).astype(np.uint8)[..., None]
        png = tf.io.encode_png(pixels).numpy()
        (directory / f"{index}-{data.target[index]}.png").write_bytes(png)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="examples/models/out", help="model base directory")
    args = parser.parse_args()
    model, accuracy = train()
    path = Path(args.out) / "digits" / "1"
    export(model, path)
    write_samples(Path(args.out) / "digits-samples")
    print(
        f"Wrote {path} (training accuracy {accuracy:.2f}) and samples in {Path(args.out) / 'digits-samples'}"
    )


if __name__ == "__main__":
    main()
