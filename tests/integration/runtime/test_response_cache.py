"""The response cache through real Gunicorn: a hit is byte-identical, marked, skips the model, and an
entry never answers for another version."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.runtime.server import Server, served

pytestmark = pytest.mark.integration
BODY = b'{"instances": [[1.0, 2.0, 3.0, 4.0]], "signature_name": ""}'
REORDERED = b'{ "signature_name": "",\n  "instances": [[1.0,2.0,3.0,4.0]] }'


@pytest.fixture(scope="module")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    base = tmp_path_factory.mktemp("cached") / "linear"
    shutil.copytree(model_root / "linear" / "1", base / "1")  # y = x; version 2 (y = 2x) comes later
    with served(
        tmp_path_factory.mktemp("cache"), "--model_name=linear", f"--model_base_path={base}",
        "--model_version_policy=all", "--response_cache_bytes=1000000", "--workers=2",
        "--file_system_poll_wait_seconds=0.5",
    ) as started:  # fmt: skip
        yield started, base


def post(server: Server, body: bytes, path: str = "/v1/models/linear:predict") -> requests.Response:
    return requests.post(
        server.url + path, data=body, timeout=30, headers={"Content-Type": "application/json"}
    )


def batches(server: Server) -> float:
    """Model calls so far: the batcher counts every one (its _count series)."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("modelservice_batch_size_count")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_a_hit_is_byte_identical_marked_and_skips_the_model(server: tuple[Server, Path]) -> None:
    first = post(server[0], BODY)
    assert first.status_code == 200 and first.headers["X-ModelService-Cache"] == "miss"
    calls = batches(server[0])
    for body in (BODY, REORDERED):  # the canonical request: key order and spaces do not matter
        again = post(server[0], body)
        assert again.headers["X-ModelService-Cache"] == "hit"
        assert again.content == first.content
    assert batches(server[0]) == calls
    different = post(server[0], b'{"instances": [[4.0, 3.0, 2.0, 1.0]]}')
    assert different.headers["X-ModelService-Cache"] == "miss"
    metrics = requests.get(server[0].url + "/metrics", timeout=10).text
    assert 'modelservice_response_cache_requests_total{model="linear",result="hit"} 2.0' in metrics


def test_a_new_version_never_answers_with_an_old_versions_entry(
    server: tuple[Server, Path], model_root: Path
) -> None:
    old = post(server[0], BODY)
    assert old.json() == {"predictions": [[1.0, 2.0, 3.0, 4.0]]}
    shutil.copytree(model_root / "linear" / "2", server[1] / "2")
    deadline = time.monotonic() + 60
    while (answer := post(server[0], BODY)).json() != {"predictions": [[2.0, 4.0, 6.0, 8.0]]}:
        assert time.monotonic() < deadline, f"version 2 did not take over: {answer.text}"
        time.sleep(0.3)
    assert answer.headers["X-ModelService-Cache"] == "miss"
    assert post(server[0], BODY).headers["X-ModelService-Cache"] == "hit"
    pinned = post(server[0], BODY, "/v1/models/linear/versions/1:predict")  # its own entry, still there
    assert (
        pinned.json() == {"predictions": [[1.0, 2.0, 3.0, 4.0]]}
        and pinned.headers["X-ModelService-Cache"] == "hit"
    )


def test_an_unknown_model_is_a_404_and_the_model_process_keeps_serving(server: tuple[Server, Path]) -> None:
    pids = server[0].processes()["engine"]
    missing = post(server[0], BODY, "/v1/models/nope:predict")
    assert missing.status_code == 404 and missing.json() == {
        "error": "Servable not found for request: Latest(nope)"
    }
    assert post(server[0], BODY).status_code == 200
    assert server[0].processes()["engine"] == pids
