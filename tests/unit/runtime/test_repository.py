"""The model repository driven by poll_once() with a fake loader: no TensorFlow, no threads."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from modelservice_runtime.config import ModelConfig, VersionPolicy
from modelservice_runtime.errors import InvalidArgument, NotFound
from modelservice_runtime.repository import ModelRepository, State, discover_versions


class FakeModel:
    def __init__(self, name: str, version: int) -> None:
        self.name, self.version = name, version


class FakeLoader:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.failing: set[int | str] = set()  # versions, or model names, whose load fails

    def __call__(self, name: str, version: int, path: str) -> FakeModel:
        self.calls.append((name, version))
        if version in self.failing or name in self.failing:
            raise ValueError(f"corrupt SavedModel at {path}")
        return FakeModel(name, version)


def add_version(base: Path, version: int) -> None:
    (base / str(version)).mkdir(parents=True, exist_ok=True)
    (base / str(version) / "saved_model.pb").write_bytes(b"pb")


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    return tmp_path / "iris"


def test_discovery_ignores_non_numeric_and_incomplete_version_dirs(base: Path) -> None:
    add_version(base, 1)
    add_version(base, 10)
    (base / "tmp").mkdir()
    (base / "\u00b2").mkdir()  # "²": a digit to str.isdigit(), not a number to int()
    (base / "\u00b2" / "saved_model.pb").write_bytes(b"pb")
    (base / "3").mkdir()  # still being copied: no saved_model.pb yet
    assert discover_versions(str(base)) == [1, 10]
    assert discover_versions(str(base / "missing")) == []


def test_new_version_is_loaded_before_the_old_one_is_retired(base: Path) -> None:
    add_version(base, 1)
    loader = FakeLoader()
    repo = ModelRepository([ModelConfig("iris", str(base))], loader)
    repo.poll_once()
    assert repo.resolve("iris").version == 1
    held = repo.resolve("iris")  # an in-flight request keeps its version object
    add_version(base, 2)
    repo.poll_once()
    assert repo.resolve("iris").version == 2
    assert held.version == 1
    states = {s.version: s.state for s in repo.statuses("iris")}
    assert states == {2: State.AVAILABLE, 1: State.END}
    assert [s.version for s in repo.statuses("iris")] == [2, 1]


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(base: Path) -> None:
    add_version(base, 1)
    loader = FakeLoader()
    repo = ModelRepository([ModelConfig("iris", str(base))], loader)
    repo.poll_once()
    add_version(base, 2)
    loader.failing.add(2)
    repo.poll_once()
    assert repo.resolve("iris").version == 1
    failed = repo.statuses("iris", version=2)[0]
    assert failed.state == State.END and "corrupt SavedModel" in failed.error_message
    assert failed.error_code != "OK"
    repo.poll_once()
    assert loader.calls.count(("iris", 2)) == 1  # unchanged on disk: not retried in a loop


def test_a_failed_version_is_retried_once_its_files_change(base: Path) -> None:
    add_version(base, 1)
    loader = FakeLoader()
    loader.failing.add(1)
    repo = ModelRepository([ModelConfig("iris", str(base))], loader)
    repo.poll_once()
    assert not repo.is_ready()
    loader.failing.clear()
    time.sleep(0.01)
    (base / "1" / "saved_model.pb").write_bytes(b"fixed")
    repo.poll_once()
    assert repo.is_ready() and repo.resolve("iris").version == 1


def test_one_broken_model_does_not_stop_the_others(tmp_path: Path) -> None:
    add_version(tmp_path / "good", 1)
    add_version(tmp_path / "bad", 1)
    loader = FakeLoader()
    repo = ModelRepository(
        [ModelConfig("bad", str(tmp_path / "bad")), ModelConfig("good", str(tmp_path / "good"))], loader
    )
    loader.failing.add("bad")
    repo.poll_once()
    assert repo.not_ready_models() == ["bad"]
    assert repo.resolve("good").version == 1
    assert repo.statuses("bad")[0].state == State.END


def test_specific_policy_and_labels_resolve_to_their_versions(base: Path) -> None:
    for v in (1, 2, 3):
        add_version(base, v)
    config = ModelConfig(
        "iris", str(base), VersionPolicy(kind="specific", versions=(1, 2)), labels={"stable": 1, "canary": 2}
    )
    repo = ModelRepository([config], FakeLoader())
    repo.poll_once()
    assert repo.available() == {"iris": [1, 2]}
    assert repo.resolve("iris", label="stable").version == 1
    assert repo.resolve("iris").version == 2
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: beta"):
        repo.resolve("iris", label="beta")
    with pytest.raises(NotFound, match=r"Specific\(iris, 3\)"):
        repo.resolve("iris", version=3)


def test_model_with_no_versions_yet_is_not_found_and_not_ready(base: Path) -> None:
    repo = ModelRepository([ModelConfig("iris", str(base))], FakeLoader())
    repo.poll_once()
    with pytest.raises(NotFound, match=r"Latest\(iris\)"):
        repo.resolve("iris")
    with pytest.raises(NotFound, match="Could not find any versions of model iris"):
        repo.statuses("iris")
    assert not repo.is_ready()


def test_reloaded_config_adds_and_removes_models(tmp_path: Path) -> None:
    add_version(tmp_path / "a", 1)
    add_version(tmp_path / "b", 1)
    repo = ModelRepository([ModelConfig("a", str(tmp_path / "a"))], FakeLoader())
    repo.poll_once()
    repo.apply_config([ModelConfig("b", str(tmp_path / "b"))])
    repo.poll_once()
    assert repo.model_names() == ["b"]
    with pytest.raises(NotFound):
        repo.resolve("a")


def test_background_polling_picks_up_a_new_version(base: Path) -> None:
    add_version(base, 1)
    repo = ModelRepository([ModelConfig("iris", str(base))], FakeLoader(), poll_seconds=0.02)
    repo.start()
    try:
        assert repo.wait_until_polled(5)
        add_version(base, 2)
        deadline = time.monotonic() + 5
        while repo.resolve("iris").version != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert repo.resolve("iris").version == 2
    finally:
        repo.stop()


def test_every_version_to_load_is_tracked_from_the_start_not_only_once_its_load_begins(base: Path) -> None:
    add_version(base, 1)
    add_version(base, 2)
    release = threading.Event()

    def slow_load(name: str, version: int, path: str) -> FakeModel:
        assert release.wait(10), "the test never let the load finish"
        return FakeModel(name, version)

    repo = ModelRepository([ModelConfig("iris", str(base), VersionPolicy(kind="all"))], slow_load)
    repo.start()
    try:
        # Version 2 loads first (newest first) and waits; version 1 has not begun, and a status request
        # made now must still see it, as TF Serving's manager reports START for what it will load.
        states = {s.version: s.state for s in repo.statuses("iris")}
        assert states.keys() == {1, 2} and states[1] is State.START, states
        release.set()
        assert repo.wait_until_polled(10)
        assert [s.state for s in repo.statuses("iris")] == [State.AVAILABLE, State.AVAILABLE]
    finally:
        release.set()
        repo.stop()


def test_a_version_tracked_at_start_that_leaves_the_disk_before_its_load_is_forgotten(base: Path) -> None:
    add_version(base, 1)
    add_version(base, 2)
    repo = ModelRepository([ModelConfig("iris", str(base), VersionPolicy(kind="all"))], FakeLoader())
    repo._track_aspired_versions()  # what start() does before its thread's first pass
    shutil.rmtree(base / "1")
    repo.poll_once()
    assert [(s.version, s.state) for s in repo.statuses("iris")] == [(2, State.AVAILABLE)]
