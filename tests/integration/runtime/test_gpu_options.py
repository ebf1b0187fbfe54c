"""TF Serving's GPU options reach TensorFlow in the model process (checked on a CPU-only machine: the
session options TensorFlow starts with, and a clear error for a GPU that is not there)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def run_in_fresh_process(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_memory_fraction_becomes_tf_servings_session_option() -> None:
    done = run_in_fresh_process(
        "from modelservice_runtime import loader\n"
        "loader.configure_runtime(1, 1, 0.25, '')\n"
        "from tensorflow.python.eager import context\n"
        "config = context.context().config\n"
        "print(config.gpu_options.per_process_gpu_memory_fraction, config.intra_op_parallelism_threads)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0.25", "1"]


def test_a_gpu_that_is_not_visible_is_a_clear_error() -> None:
    done = run_in_fresh_process(
        "from modelservice_runtime import loader\n"
        "from modelservice_runtime.errors import FailedPrecondition\n"
        "try:\n"
        "    loader.configure_runtime(1, 1, 0.0, '3')\n"
        "except FailedPrecondition as exc:\n"
        "    print(exc.message)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "--tensorflow_gpu_device=3: GPU 3 is not visible" in done.stdout
