from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from modelservice_runtime.app import create_app
from modelservice_runtime.config import config_from_args


@pytest.fixture(scope="session")
def app(model_config_file: Path) -> Iterator[Flask]:
    config = config_from_args([f"--model_config_file={model_config_file}", "--max_request_bytes=200000"])
    app = create_app(config, start_repository=False)
    app.extensions["modelservice.repository"].poll_once()  # load everything, synchronously
    yield app
    app.extensions["modelservice.dataplane"].close()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()
