"""The storage initializer's layout and archive rules, on files made here (no network, no TensorFlow)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from modelservice_runtime import storage


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _tar(path: Path, files: dict[str, str], extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return path


def test_a_bare_saved_model_becomes_version_1(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"saved_model.pb": "pb", "variables/variables.index": "i"})
    storage.install(tree, tmp_path / "model", "s3://b/m")
    assert _files(tmp_path / "model") == [
        ".modelservice-source",
        "1/saved_model.pb",
        "1/variables/variables.index",
    ]


def test_numbered_versions_inside_one_wrapping_directory_are_kept(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"iris/1/saved_model.pb": "a", "iris/7/saved_model.pbtxt": "b"})
    storage.install(tree, tmp_path / "model", "https://h/iris.tar.gz")
    assert _files(tmp_path / "model") == [".modelservice-source", "1/saved_model.pb", "7/saved_model.pbtxt"]
    assert storage.already_installed(tmp_path / "model", "https://h/iris.tar.gz")
    assert not storage.already_installed(tmp_path / "model", "https://h/other.tar.gz")


def test_a_directory_named_by_a_digit_that_int_cannot_read_is_no_version_directory(tmp_path: Path) -> None:
    # "²" is a digit to str.isdigit(), not a number to int(): here it is one wrapping directory.
    tree = _tree(tmp_path / "tree", {"\u00b2/saved_model.pb": "pb"})
    storage.install(tree, tmp_path / "model", "s3://b/m")
    assert _files(tmp_path / "model") == [".modelservice-source", "1/saved_model.pb"]


def test_a_new_source_replaces_what_an_old_one_left(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    storage.install(_tree(tmp_path / "a", {"3/saved_model.pb": "old"}), dest, "s3://b/old")
    storage.install(_tree(tmp_path / "b", {"saved_model.pb": "new"}), dest, "s3://b/new")
    assert _files(dest) == [".modelservice-source", "1/saved_model.pb"]


def test_a_tree_without_a_saved_model_names_what_it_found(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", {"model.h5": "x", "README": "y"})
    with pytest.raises(storage.DownloadError) as raised:
        storage.install(tree, tmp_path / "model", "s3://b/m")
    assert str(raised.value) == (
        "no SavedModel in s3://b/m: expected saved_model.pb at its root or numbered version directories "
        "(1/saved_model.pb ...); found README, model.h5"
    )
    assert not (tmp_path / "model").exists()


def test_tar_and_zip_archives_extract_the_same_model(tmp_path: Path) -> None:
    files = {"m/2/saved_model.pb": "pb", "m/2/variables/variables.data-00000-of-00001": "d"}
    _tar(tmp_path / "m.tar.gz", files)
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as zipped:
        for name, text in files.items():
            zipped.writestr(name, text)
    for archive in ("m.tar.gz", "m.zip"):
        into = tmp_path / f"x-{archive}"
        into.mkdir()
        storage.extract(tmp_path / archive, into, archive)
        assert _files(into) == sorted(files)


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil"])
def test_an_archive_path_outside_the_model_directory_is_refused(tmp_path: Path, name: str) -> None:
    into = tmp_path / "into"
    into.mkdir()
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zipped:
        zipped.writestr(name, "x")
    _tar(tmp_path / "bad.tar.gz", {name: "x"})
    for archive in ("bad.zip", "bad.tar.gz"):
        with pytest.raises(storage.DownloadError, match="path outside the model directory"):
            storage.extract(tmp_path / archive, into, archive)
    assert not (tmp_path / "evil").exists() and _files(into) == []


def test_links_and_devices_in_an_archive_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("1/saved_model.pb")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("1/dev")
    device.type = tarfile.CHRTYPE
    for info in (link, device):
        _tar(tmp_path / "bad.tar.gz", {}, [info])
        with pytest.raises(storage.DownloadError, match="neither a file nor a directory"):
            storage.extract(tmp_path / "bad.tar.gz", tmp_path, "bad.tar.gz")


def test_something_that_is_not_an_archive_says_so(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("<html>login</html>")
    with pytest.raises(storage.DownloadError, match="is neither a tar nor a zip archive"):
        storage.extract(tmp_path / "page.html", tmp_path, "https://h/page.html")


def test_an_unsupported_scheme_is_an_error_naming_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(
        storage.DownloadError, match=r"unsupported scheme 'gs' \(use s3://, http:// or https://\)"
    ):
        storage.fetch("gs://bucket/model", tmp_path / "model")


def test_credentials_never_reach_logs_or_the_status() -> None:
    assert (
        storage._redact("cannot fetch https://user:pw@host/m.tar.gz")
        == "cannot fetch https://***@host/m.tar.gz"
    )
    assert storage._redact("404 from https://h/m.zip?X-Amz-Signature=abc&x=1") == (
        "404 from https://h/m.zip?X-Amz-Signature=***&x=1"
    )


def test_an_s3_uri_needs_a_bucket() -> None:
    assert storage.parse_s3("s3://models/iris/v1") == ("models", "iris/v1")
    with pytest.raises(storage.DownloadError, match="names no bucket"):
        storage.parse_s3("s3:///iris")
