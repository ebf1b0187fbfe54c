"""The example model scripts build real models that the runtime serves correctly."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from modelservice_runtime.app import create_app
from modelservice_runtime.config import ModelConfig, RuntimeConfig

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "models"


@pytest.fixture(scope="module")
def example_client(tmp_path_factory: pytest.TempPathFactory) -> tuple[FlaskClient, Path]:
    out = tmp_path_factory.mktemp("examples")
    for script in ("iris.py", "digits.py"):
        subprocess.run(
            [sys.executable, str(EXAMPLES / script), f"--out={out}"], check=True, capture_output=True
        )
    config = RuntimeConfig(
        models=(ModelConfig("iris", str(out / "iris")), ModelConfig("digits", str(out / "digits")))
    )
    app = create_app(config, start_repository=False)
    app.extensions["modelservice.repository"].poll_once()
    return app.test_client(), out


def test_iris_example_classifies_the_three_species(example_client: tuple[FlaskClient, Path]) -> None:
    client, _ = example_client
    flowers = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]  # one of each species
    response = client.post("/v1/models/iris:predict", json={"instances": flowers})
    assert response.status_code == 200
    assert [p["class_ids"] for p in response.get_json()["predictions"]] == [0, 1, 2]
    versions = [s["version"] for s in client.get("/v1/models/iris").get_json()["model_version_status"]]
    assert versions == ["2"]  # latest-1 policy: version 2 serves


def test_digits_example_reads_uploaded_png_files(example_client: tuple[FlaskClient, Path]) -> None:
    client, out = example_client
    samples = sorted((out / "digits-samples").glob("*.png"))
    files = [(path.open("rb"), path.name) for path in samples]
    response = client.post(
        "/v1/models/digits:predict", data={"file": files}, content_type="multipart/form-data"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    expected = [int(path.stem.split("-")[1]) for path in samples]
    got = [p["digit"] for p in response.get_json()["predictions"]]
    assert sum(g == e for g, e in zip(got, expected, strict=True)) >= 9


def test_digits_example_reads_b64_png_in_json(example_client: tuple[FlaskClient, Path]) -> None:
    client, out = example_client
    sample = sorted((out / "digits-samples").glob("0-0.png"))[0]
    body = {"instances": [{"b64": base64.b64encode(sample.read_bytes()).decode()}]}
    response = client.post("/v1/models/digits:predict", json=body)
    assert response.status_code == 200
    assert response.get_json()["predictions"][0]["digit"] == 0
