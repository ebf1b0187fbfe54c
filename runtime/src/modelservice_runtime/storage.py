"""The storage initializer: downloads a model into the pod's model volume before the runtime starts.

``modelservice-storage-initializer <uri> <dest>`` runs as the pod's init container (KServe's
storage-initializer pattern) and leaves a TF Serving model base path in ``dest``: numbered version
directories, each a SavedModel. Sources:

- ``s3://bucket/prefix``: every object under the prefix, from AWS or any S3-compatible endpoint
  (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``; credentials ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` from the Secret the ModelService names, or anonymous without them).
- ``http(s)://.../model.tar.gz`` or ``.zip``: an archive of the same layout, extracted safely (no path
  outside ``dest``, no links, no devices). ``MODELSERVICE_HTTP_AUTHORIZATION`` is sent as the
  ``Authorization`` header when set.

A source holding one SavedModel (``saved_model.pb`` at its root, or inside one top-level directory) is
served as version 1. The download lands in a scratch directory next to ``dest`` and is moved into place
only when complete, so a retried init container never serves half a model; a completed download of the
same URI is not fetched again.

On failure the one-line reason ("downloading model: 403 Forbidden from s3 endpoint ...: ...") goes to
stderr and to the container's termination message, where the operator reads it into the ModelService's
status; the exit code is 1 and the kubelet retries with back-off, so fixing the cause (a Secret, an
object) is enough.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("modelservice_runtime.storage")

TERMINATION_LOG = "/dev/termination-log"
MARKER = ".modelservice-source"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
CHUNK = 1 << 20
HTTP_TIMEOUT_S = 60.0


class DownloadError(Exception):
    """A reason the model could not be downloaded, worded for the ModelService's status."""


# ------------------------------------------------------------------------------------------------- layout


def _is_saved_model(path: Path) -> bool:
    return any((path / name).is_file() for name in SAVED_MODEL_FILES)


def _versions(path: Path) -> list[Path]:
    return [
        p
        for p in path.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and _is_saved_model(p)
    ]


def model_root(path: Path, source: str) -> tuple[Path, bool]:
    """Where the model lies in a downloaded tree: (directory, is it a bare SavedModel). A bare SavedModel
    becomes version 1; a directory of numbered versions is a model base path as it is. One wrapping
    top-level directory (what ``tar czf model.tar.gz model/`` makes) is looked through."""
    for candidate in (path, *_only_child(path)):
        if _is_saved_model(candidate):
            return candidate, True
        if _versions(candidate):
            return candidate, False
    found = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())[:5]
    raise DownloadError(
        f"no SavedModel in {source}: expected saved_model.pb at its root or numbered version "
        f"directories (1/saved_model.pb ...); found {', '.join(found) if found else 'no files'}"
    )


def _only_child(path: Path) -> Iterator[Path]:
    children = [p for p in path.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        yield children[0]


def install(tree: Path, dest: Path, source: str) -> None:
    """Move a complete download into ``dest`` (a model base path), recording its source."""
    root, bare = model_root(tree, source)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():  # a previous, different source
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    if bare:
        root.rename(dest / "1")
    else:
        for child in root.iterdir():
            child.rename(dest / child.name)
    (dest / MARKER).write_text(source + "\n")


def already_installed(dest: Path, source: str) -> bool:
    marker = dest / MARKER
    return marker.is_file() and marker.read_text().strip() == source


# ---------------------------------------------------------------------------------------------------- s3


def parse_s3(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    if not parsed.netloc:
        raise DownloadError(f"{uri} names no bucket: use s3://<bucket>/<prefix>")
    return parsed.netloc, parsed.path.lstrip("/")


def _s3_client() -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    if session.get_credentials() is None:  # a public bucket: anonymous requests
        config = config.merge(Config(signature_version=UNSIGNED))
    # An S3-compatible endpoint (MinIO, Ceph ...) names buckets in the path: its host has no per-bucket
    # DNS names. S3_ADDRESSING_STYLE (path, virtual, auto) overrides.
    style = os.environ.get("S3_ADDRESSING_STYLE") or ("path" if os.environ.get("AWS_ENDPOINT_URL") else "")
    if style:
        config = config.merge(Config(s3={"addressing_style": style}))
    return session.client("s3", config=config)


def _s3_reason(exc: Exception, uri: str) -> DownloadError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    if isinstance(exc, ClientError):
        response = exc.response
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        error = response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        words = {403: "Forbidden", 404: "Not Found", 400: "Bad Request", 301: "Moved Permanently"}
        status_text = f"{status} {words.get(status, '')}".strip() if isinstance(status, int) else str(status)
        return DownloadError(
            f"{status_text} from s3 endpoint {endpoint} for {uri}: {code}"
            + (f" ({message})" if message else "")
        )
    if isinstance(exc, EndpointConnectionError):
        return DownloadError(f"cannot reach s3 endpoint {endpoint} for {uri}: {exc}")
    if isinstance(exc, NoCredentialsError):
        return DownloadError(f"no credentials for {uri}: {exc}")
    return DownloadError(f"{type(exc).__name__} from s3 endpoint {endpoint} for {uri}: {exc}")


def download_s3(uri: str, into: Path) -> int:
    """Every object under the prefix into ``into`` (relative paths kept); returns the bytes fetched."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # s3://b/models/iris is the "directory" iris, not every key starting with "iris"
    total, count = 0, 0
    try:
        client = _s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key: str = item["Key"]
                relative = key[len(prefix) :]
                if not relative or key.endswith("/"):
                    continue  # the prefix itself, or a "folder" placeholder object
                target = _safe_join(into, relative, uri)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, key, str(target))
                total += int(item.get("Size", 0))
                count += 1
                if count % 50 == 0:
                    log.info("downloaded %d objects (%.1f MiB) from %s", count, total / 2**20, uri)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_reason(exc, uri) from None
    if count == 0:
        raise DownloadError(f"no objects under {uri} (bucket {bucket}, prefix {prefix or '(none)'})")
    log.info("downloaded %d objects (%.1f MiB) from %s", count, total / 2**20, uri)
    return total


# -------------------------------------------------------------------------------------------------- http


def download_http(uri: str, into: Path) -> int:
    """A tar (gzip, bzip2, xz or none) or zip archive, extracted into ``into``; returns the bytes fetched."""
    request = urllib.request.Request(uri, headers={"User-Agent": "modelservice-storage-initializer"})
    if os.environ.get("MODELSERVICE_HTTP_AUTHORIZATION"):
        request.add_header("Authorization", os.environ["MODELSERVICE_HTTP_AUTHORIZATION"])
    archive = into.parent / "archive"
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response, archive.open("wb") as out:
            length = response.headers.get("Content-Length")
            last = time.monotonic()
            while chunk := response.read(CHUNK):
                out.write(chunk)
                total += len(chunk)
                if time.monotonic() - last > 5:
                    last = time.monotonic()
                    log.info("downloaded %.1f of %s MiB from %s", total / 2**20,
                             f"{int(length) / 2**20:.1f}" if length else "?", uri)  # fmt: skip
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{exc.code} {exc.reason} from {uri}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot fetch {uri}: {reason}") from None
    log.info("downloaded %.1f MiB from %s", total / 2**20, uri)
    extract(archive, into, uri)
    archive.unlink()
    return total


def extract(archive: Path, into: Path, source: str) -> None:
    """Regular files and directories only, each inside ``into``, written with the downloader's own
    ownership and default modes (what ``tarfile``'s "data" filter does, which older Pythons lack)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(
                        f"{source} holds a symbolic link ({member.filename}); links are refused"
                    )
                target = _safe_join(into, member.filename, source)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                with zipped.open(member) as src:
                    _write(src, target)
        return
    try:
        with tarfile.open(archive) as tar:
            for entry in tar:
                if not (entry.isfile() or entry.isdir()):
                    raise DownloadError(
                        f"{source} holds {entry.name!r}, which is neither a file nor a directory; refused"
                    )
                target = _safe_join(into, entry.name, source)
                if entry.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                data = tar.extractfile(entry)
                assert data is not None  # a regular file
                with data:
                    _write(data, target)
    except tarfile.TarError as exc:
        raise DownloadError(f"{source} is neither a tar nor a zip archive: {exc}") from None


def _write(src: Any, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def _safe_join(root: Path, name: str, source: str) -> Path:
    base = root.resolve()
    target = (base / name).resolve()
    if target != base and not target.is_relative_to(base):
        raise DownloadError(f"{source} holds a path outside the model directory: {name!r}")
    return target


# -------------------------------------------------------------------------------------------------- main

SCHEMES = {"s3": download_s3, "http": download_http, "https": download_http}


def fetch(uri: str, dest: Path) -> bool:
    """Download ``uri`` into the model base path ``dest``; False when it was there already."""
    if already_installed(dest, uri):
        log.info("%s is already in %s", uri, dest)
        return False
    scheme = uri.partition("://")[0].lower()
    download = SCHEMES.get(scheme)
    if download is None:
        raise DownloadError(f"{uri}: unsupported scheme {scheme!r} (use s3://, http:// or https://)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # The scratch directory lies next to dest (same volume): the final moves are renames.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as scratch:
        tree = Path(scratch) / "tree"
        tree.mkdir()
        size = download(uri, tree)
        install(tree, dest, uri)
    log.info(
        "model from %s ready in %s (%.1f MiB in %.1fs)", uri, dest, size / 2**20, time.monotonic() - started
    )
    return True


def _report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    try:
        with open(TERMINATION_LOG, "w") as handle:
            handle.write(message[:4000])  # the kubelet keeps 4096 bytes of it
    except OSError:
        pass  # not in a pod: stderr is enough


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modelservice-storage-initializer",
        description="Download a model (s3://, http(s)://) into a TF Serving model base path.",
    )
    parser.add_argument("uri", help="s3://bucket/prefix, or http(s)://host/archive.tar.gz|.zip")
    parser.add_argument("dest", help="the model base path to fill (numbered version directories)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    shown = _redact(args.uri)
    log.info("downloading model from %s into %s", shown, args.dest)
    try:
        fetch(args.uri, Path(args.dest))
    except DownloadError as exc:
        _report(f"downloading model: {_redact(str(exc))}")
        return 1
    except OSError as exc:  # the volume: full, read-only ...
        _report(f"downloading model: cannot write {args.dest}: {exc}")
        return 1
    return 0


def _redact(text: str) -> str:
    """No credentials in logs or the status: ``https://user:secret@host`` and signed query strings."""
    text = re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)
    return re.sub(
        r"([?&](?:X-Amz-Signature|X-Amz-Credential|sig|signature|token)=)[^&\s]+", r"\1***", text, flags=re.I
    )


if __name__ == "__main__":
    sys.exit(main())
