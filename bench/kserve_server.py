"""KServe's Python ModelServer as a peer: the SavedModel behind ``kserve.Model`` on KServe's V1 protocol.

MODEL_DIR=/path/to/saved_model/version .venv-kserve/bin/python -m bench.kserve_server --http_port 8080

It runs in its own virtual environment (``.venv-kserve``, from ``requirements/bench-kserve.txt``): kserve
pins a protobuf that TensorFlow Serving's API package does not accept. The model is called as the KServe
docs' custom-model example calls one: ``predict`` gets the parsed V1 body, runs the serving signature on
the instances and returns ``{"predictions": ...}``. KServe's defaults are kept (one worker).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import kserve
import numpy as np
import tensorflow as tf


class SavedModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.serve = tf.saved_model.load(self.path).signatures["serving_default"]
        self.input_name = next(iter(self.serve.structured_input_signature[1]))
        self.ready = True
        return self.ready

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        instances = np.asarray(payload["instances"], dtype=np.float32)
        (result,) = self.serve(**{self.input_name: tf.constant(instances)}).values()
        return {"predictions": result.numpy().tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    args, _ = parser.parse_known_args()
    path = os.environ["MODEL_DIR"]  # <base>/<name>/<version>: served under <name>, as the other peers
    kserve.ModelServer().start([SavedModel(os.path.basename(os.path.dirname(path)), path)])
