"""Shared fixtures: a tree of small real SavedModels, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files under tests/unit/operator/golden from the current renderers",
    )


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests import models

    root = tmp_path_factory.mktemp("models")
    models.build_keras_linear(root / "linear", 1, scale=1.0)
    models.build_keras_linear(root / "linear", 2, scale=2.0)
    models.build_multi_io(root / "multi")
    models.build_string_model(root / "strings")
    models.build_classify_regress(root / "examples")
    models.build_slow_model(root / "slow")
    warm = models.build_keras_linear(root / "warm", 1, scale=3.0)
    models.add_warmup(warm, {"x": np.ones((1, 4), dtype=np.float32)})
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return root


MODEL_CONFIG = """
model_config_list {{
  config {{
    name: "linear" base_path: "{root}/linear" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "multi" base_path: "{root}/multi" }}
  config {{ name: "strings" base_path: "{root}/strings" }}
  config {{ name: "examples" base_path: "{root}/examples" }}
  config {{ name: "warm" base_path: "{root}/warm" }}
  config {{ name: "team/strings:v1" base_path: "{root}/strings" }}
}}
"""


@pytest.fixture(scope="session")
def model_config_file(model_root: Path) -> Path:
    path = model_root / "models.config"
    path.write_text(MODEL_CONFIG.format(root=model_root))
    return path
