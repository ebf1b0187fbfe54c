"""The storage initializer against a real S3 server (MinIO on loopback) and a real HTTP server, then the
runtime serving what it downloaded: the init container's job, outside a pod."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.runtime.server import start_server, stop
from tests.minio import MinIO
from tests.models import build_half_plus_two

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minio() -> Iterator[MinIO]:
    server = MinIO.start("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def half_plus_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TF Serving's half_plus_two, versions 1 and 123 (version 123: y = 0.5x + 3, half_plus_three)."""
    base = tmp_path_factory.mktemp("models") / "half_plus_two"
    build_half_plus_two(base, 1)
    build_half_plus_two(base, 123, b=3.0)
    return base


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    thread.join(timeout=10)


def initialize(uri: str, dest: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The init container's command, with what the operator puts in its environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "modelservice_runtime.storage", uri, str(dest)],
        capture_output=True, text=True, timeout=120, env={**clean, **(env or {})},
    )  # fmt: skip


def wait_available(url: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/v1/models/half_plus_two/versions/{version}", timeout=5)
        if status.ok and status.json()["model_version_status"][0]["state"] == "AVAILABLE":
            return
        time.sleep(0.1)
    raise AssertionError(f"version {version} not AVAILABLE in {timeout}s: {status.text}")


def predict(base: Path, tmp_path: Path, body: dict[str, object], version: int | None = None) -> object:
    server = start_server(tmp_path, "--model_name=half_plus_two", f"--model_base_path={base}",
                          "--model_version_policy=all", "--workers=1")  # fmt: skip
    try:
        server.wait_ready()
        if version:
            # Ready means every model has a version AVAILABLE; with --model_version_policy=all the
            # others may still be loading.
            wait_available(server.url, version)
        path = (
            f"/v1/models/half_plus_two/versions/{version}:predict"
            if version
            else "/v1/models/half_plus_two:predict"
        )
        answer = requests.post(server.url + path, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]
    finally:
        stop(server)


def test_a_model_downloaded_from_s3_is_served(minio: MinIO, half_plus_two: Path, tmp_path: Path) -> None:
    minio.upload_tree("models", "tfserving/half_plus_two", half_plus_two)
    dest = tmp_path / "mnt" / "model"
    done = initialize("s3://models/tfserving/half_plus_two", dest, minio.env())
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == [".modelservice-source", "1", "123"]
    # TF Serving's first example, through the runtime, from what came out of S3.
    assert predict(dest, tmp_path, {"instances": [1.0, 2.0, 5.0]}, version=1) == [2.5, 3.0, 4.5]
    assert predict(dest, tmp_path, {"instances": [1.0, 2.0, 5.0]}) == [3.5, 4.0, 5.5]
    again = initialize("s3://models/tfserving/half_plus_two", dest, minio.env())
    assert again.returncode == 0 and "is already in" in again.stderr


def test_a_single_saved_model_prefix_is_served_as_version_1(
    minio: MinIO, half_plus_two: Path, tmp_path: Path
) -> None:
    minio.upload_tree("models", "bare/hp3", half_plus_two / "123")
    dest = tmp_path / "model"
    done = initialize("s3://models/bare/hp3", dest, minio.env())
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == [".modelservice-source", "1"]
    assert (dest / "1" / "saved_model.pb").is_file() and (dest / "1" / "variables").is_dir()


def test_a_wrong_s3_secret_is_a_403_naming_the_endpoint_and_leaves_nothing(
    minio: MinIO, half_plus_two: Path, tmp_path: Path
) -> None:
    minio.upload_tree("models", "tfserving/half_plus_two", half_plus_two)
    dest = tmp_path / "model"
    done = initialize("s3://models/tfserving/half_plus_two", dest, minio.env(secret_key="not-the-secret"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"downloading model: 403 Forbidden from s3 endpoint {minio.endpoint} for "
        "s3://models/tfserving/half_plus_two: SignatureDoesNotMatch (The request signature we calculated does "
        "not match the signature you provided. Check your key and signing method.)"
    )
    assert not dest.exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://no-such-bucket/m", "404 Not Found from s3 endpoint {endpoint} for s3://no-such-bucket/m: NoSuchBucket"),
        ("s3://models/no/such/prefix", "no objects under s3://models/no/such/prefix (bucket models, prefix no/such/prefix/)"),
    ],
)  # fmt: skip
def test_a_missing_bucket_or_prefix_says_which(minio: MinIO, tmp_path: Path, uri: str, message: str) -> None:
    minio.upload_tree("models", "tfserving/readme", Path(__file__).parent / "__init__.py")
    done = initialize(uri, tmp_path / "model", minio.env())
    assert done.returncode == 1
    assert message.format(endpoint=minio.endpoint) in done.stderr.strip().splitlines()[-1]


def test_an_unreachable_s3_endpoint_is_reported_not_retried_forever(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    done = initialize("s3://models/m", tmp_path / "model", env)
    assert done.returncode == 1
    assert "downloading model: cannot reach s3 endpoint http://127.0.0.1:9 for s3://models/m" in done.stderr


def test_tar_gz_and_zip_archives_over_http_are_served(
    http_root: tuple[str, Path], half_plus_two: Path, tmp_path: Path
) -> None:
    url, root = http_root
    with tarfile.open(root / "half_plus_two.tar.gz", "w:gz") as tar:
        tar.add(half_plus_two, arcname="half_plus_two")  # a wrapping directory of versions
    with zipfile.ZipFile(root / "hp2.zip", "w") as zipped:  # one bare SavedModel
        for path in (half_plus_two / "1").rglob("*"):
            zipped.write(path, path.relative_to(half_plus_two / "1").as_posix())
    tgz, zipped_dest = tmp_path / "tgz", tmp_path / "zip"
    assert initialize(f"{url}/half_plus_two.tar.gz", tgz).returncode == 0
    assert initialize(f"{url}/hp2.zip", zipped_dest).returncode == 0
    assert sorted(p.name for p in tgz.iterdir()) == [".modelservice-source", "1", "123"]
    assert predict(zipped_dest, tmp_path, {"instances": [[1.0], [4.0]]}) == [[2.5], [4.0]]


def test_a_missing_archive_is_a_404_naming_the_url(http_root: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = http_root
    done = initialize(f"{url}/nope.tar.gz", tmp_path / "model")
    assert done.returncode == 1
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"downloading model: 404 File not found from {url}/nope.tar.gz"
    )
