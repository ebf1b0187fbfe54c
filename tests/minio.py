"""A real S3 server for the tests: MinIO, built from the Go module proxy by ``tests/cluster/build.sh``.

``MinIO.start(address)`` runs it on a free port of ``address`` (loopback for integration tests, the real
node's bridge gateway for pods), with its data, config and certificates in a temporary directory and no
update checks or console; ``stop()`` leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster import harness

ACCESS_KEY = "modelservice-test"


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class MinIO:
    address: str
    port: int
    secret_key: str
    workdir: Path
    process: subprocess.Popen[bytes]
    access_key: str = ACCESS_KEY
    region: str = "us-east-1"
    log: Path = field(default_factory=Path)

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    @classmethod
    def start(cls, address: str = "127.0.0.1", timeout: float = 30.0) -> MinIO:
        binary = harness.binary("minio")
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `make cluster-build` (tests/cluster/build.sh)")
        workdir = Path(tempfile.mkdtemp(prefix="minio-"))
        port = free_port(address)
        secret = secrets.token_hex(16)
        env = dict(
            os.environ,
            MINIO_ROOT_USER=ACCESS_KEY,
            MINIO_ROOT_PASSWORD=secret,
            MINIO_UPDATE="off",
            MINIO_BROWSER="off",
        )
        log = workdir / "minio.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(binary), "server", str(workdir / "data"), "--quiet", "--address", f"{address}:{port}",
                 "--config-dir", str(workdir / "config"), "--certs-dir", str(workdir / "certs")],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        server = cls(address, port, secret, workdir, process, log=log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(server.endpoint + "/minio/health/live", timeout=2) as answer:
                    if answer.status == 200:
                        return server
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"MinIO did not become healthy in {timeout}s: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def client(self, secret_key: str | None = None) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
        )

    def upload_tree(self, bucket: str, prefix: str, root: Path) -> int:
        """Every file under ``root`` to ``s3://bucket/prefix/<relative path>`` (the bucket is created)."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
        count = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix.strip('/')}/{path.relative_to(root).as_posix()}")
            count += 1
        return count

    def env(self, secret_key: str | None = None) -> dict[str, str]:
        """What the storage initializer reads (what the operator renders from the ModelService)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
