"""The model repository: which versions exist, which are served, and their TF Serving states.

Layout on disk is TF Serving's: ``<base_path>/<numeric version>/saved_model.pb``. A poller (one thread per
worker) looks for versions, applies the version policy, loads new versions, and only then retires old
ones, so a request always finds a version to run (TF Serving's availability-preserving policy). In-flight
requests hold a reference to the version they resolved, so retiring never fails them.

**For testability,** the loader is injected (``load(name, version, path) -> model``) and ``poll_once()`` is
public: unit tests drive the repository with fake models and no threads.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from . import metrics
from .config import ModelConfig
from .errors import InvalidArgument, NotFound, ServingError, Unavailable, code_of_tf_error

log = logging.getLogger(__name__)

Loader = Callable[[str, int, str], Any]


class State(enum.Enum):
    """``ModelVersionStatus.State`` with TF Serving's numbers."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class VersionStatus:
    version: int
    state: State = State.START
    error_code: str = "OK"
    error_message: str = ""


@dataclass
class _Model:
    config: ModelConfig
    statuses: dict[int, VersionStatus]
    loaded: dict[int, Any]
    failed_stamp: dict[int, float]  # mtime of a version dir whose load failed: retry only when it changes


def discover_versions(base_path: str) -> list[int]:
    """Numeric subdirectories of ``base_path`` that hold a SavedModel, ascending."""
    try:
        entries = os.listdir(base_path)
    except OSError:
        return []
    versions = []
    for entry in entries:
        if not (entry.isascii() and entry.isdigit()):  # '²' is a digit to isdigit(), not to int()
            continue
        path = os.path.join(base_path, entry)
        if os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(
            os.path.join(path, "saved_model.pbtxt")
        ):
            versions.append(int(entry))
    return sorted(versions)


def _version_stamp(path: str) -> float:
    try:
        return max(os.stat(path).st_mtime, os.stat(os.path.join(path, "saved_model.pb")).st_mtime)
    except OSError:
        return 0.0


class ModelRepository:
    def __init__(
        self,
        models: Sequence[ModelConfig],
        load: Loader,
        poll_seconds: float = 1.0,
        config_reader: Callable[[], Sequence[ModelConfig]] | None = None,
        config_poll_seconds: float = 0.0,
    ) -> None:
        self._load = load
        self._poll_seconds = poll_seconds
        self._config_reader = config_reader
        self._config_poll_seconds = config_poll_seconds
        self._lock = threading.RLock()
        self._models: dict[str, _Model] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polled_once = threading.Event()
        # Bumped whenever what a request resolves to may change (a version loaded or unloaded, the
        # config or its labels replaced): HTTP workers cache resolutions until it moves (client.py).
        self.generation = 0
        self.apply_config(models)

    # -- configuration

    def apply_config(self, models: Iterable[ModelConfig]) -> None:
        """Adopt a new model list: new models are added, removed ones retired, labels updated."""
        wanted = {m.name: m for m in models}
        with self._lock:
            self.generation += 1
            for name in list(self._models):
                if name not in wanted:
                    self._retire_all(name)
            for name, config in wanted.items():
                if name in self._models:
                    self._models[name].config = config
                else:
                    self._models[name] = _Model(config, {}, {}, {})

    def _retire_all(self, name: str) -> None:
        model = self._models.pop(name)
        for version in list(model.loaded):
            model.statuses[version].state = State.END
            metrics.set_version_state(name, version, State.END.name)
        log.info("Removed model %s from the configuration", name)

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    # -- polling

    def poll_once(self) -> None:
        """One pass: discover versions of every model, load what the policy wants, retire the rest."""
        with self._lock:
            configs = [m.config for m in self._models.values()]
        for config in configs:
            self._reconcile(config)
        self._polled_once.set()

    def _reconcile(self, config: ModelConfig) -> None:
        on_disk = discover_versions(config.base_path)
        if not on_disk:
            log.warning("No versions of model %s found under base path %s", config.name, config.base_path)
        aspired = config.policy.select(on_disk)
        with self._lock:  # tracked at start (START) but gone from disk before its load began: forget it
            model = self._models.get(config.name)
            if model is not None:
                for version in [v for v, s in model.statuses.items() if s.state is State.START]:
                    if version not in aspired:
                        del model.statuses[version]
        if config.policy.kind == "specific":
            for missing in sorted(set(config.policy.versions) - set(on_disk)):
                log.warning("Version %d of model %s is not on disk yet", missing, config.name)
        for version in sorted(aspired, reverse=True):  # newest first: it is what latest requests want
            self._ensure_loaded(config, version)
        with self._lock:
            model = self._models.get(config.name)
            if model is None:
                return
            # Availability first: retire old versions only once an aspired one serves, so a new
            # version that fails to load leaves the old one serving.
            if not aspired & set(model.loaded):
                return
            for version in sorted(set(model.loaded) - aspired):
                model.statuses[version].state = State.UNLOADING
                metrics.set_version_state(config.name, version, State.UNLOADING.name)
                del model.loaded[version]
                self.generation += 1
                model.statuses[version].state = State.END
                metrics.set_version_state(config.name, version, State.END.name)
                log.info("Unloaded model %s version %d", config.name, version)

    def _ensure_loaded(self, config: ModelConfig, version: int) -> None:
        path = os.path.join(config.base_path, str(version))
        with self._lock:
            model = self._models.get(config.name)
            if model is None or version in model.loaded:
                return
            stamp = _version_stamp(path)
            if model.failed_stamp.get(version) == stamp:
                return  # failed before and unchanged on disk: do not spin on it
            status = model.statuses.setdefault(version, VersionStatus(version))
            status.state, status.error_code, status.error_message = State.LOADING, "OK", ""
        metrics.set_version_state(config.name, version, State.LOADING.name)
        log.info("Loading model %s version %d from %s", config.name, version, path)
        started = time.monotonic()
        try:
            loaded = self._load(config.name, version, path)
        except Exception as exc:  # a bad model must never take the other models down
            code = exc.code if isinstance(exc, ServingError) else code_of_tf_error(exc)
            if code == "INTERNAL" and not isinstance(exc, ServingError):
                code = "UNKNOWN"
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.error("Failed to load model %s version %d: %s", config.name, version, message)
            metrics.observe_load(config.name, time.monotonic() - started, ok=False)
            with self._lock:
                status.state, status.error_code, status.error_message = State.END, code, message
                model.failed_stamp[version] = stamp
            metrics.set_version_state(config.name, version, State.END.name)
            return
        metrics.observe_load(config.name, time.monotonic() - started, ok=True)
        with self._lock:
            if self._models.get(config.name) is not model:
                return  # removed from the config while loading
            model.loaded[version] = loaded
            self.generation += 1
            model.failed_stamp.pop(version, None)
            status.state = State.AVAILABLE
        metrics.set_version_state(config.name, version, State.AVAILABLE.name)

    def start(self) -> None:
        """Poll in a background thread: first pass at once, then every ``poll_seconds``. Before it starts,
        the versions each model will load are tracked (START, as TF Serving's manager does), so that
        a status request that comes before the first pass does not hear that the model has none."""
        if self._thread is not None:
            return
        self._track_aspired_versions()
        self._thread = threading.Thread(target=self._run, name="model-repository", daemon=True)
        self._thread.start()

    def _track_aspired_versions(self) -> None:
        with self._lock:
            configs = [m.config for m in self._models.values()]
        for config in configs:
            aspired = config.policy.select(discover_versions(config.base_path))
            with self._lock:
                model = self._models.get(config.name)
                if model is not None:
                    for version in aspired:
                        model.statuses.setdefault(version, VersionStatus(version))

    def _run(self) -> None:
        next_config_read = time.monotonic() + self._config_poll_seconds
        while not self._stop.is_set():
            try:
                if (
                    self._config_reader is not None
                    and self._config_poll_seconds > 0
                    and time.monotonic() >= next_config_read
                ):
                    next_config_read = time.monotonic() + self._config_poll_seconds
                    self.apply_config(self._config_reader())
                self.poll_once()
            except Exception:  # keep polling: one bad pass must not stop future ones
                log.exception("Model repository poll failed")
            if self._poll_seconds <= 0 and self._config_poll_seconds <= 0:
                return
            interval = min(s for s in (self._poll_seconds, self._config_poll_seconds) if s > 0)
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_until_polled(self, timeout: float) -> bool:
        return self._polled_once.wait(timeout)

    # -- queries

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"Servable not found for request: Latest({name})")
        return model

    def _label_version(self, model: _Model, label: str) -> int:
        if label not in model.config.labels:
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        return model.config.labels[label]

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Any:
        """The loaded model that serves a request, or TF Serving's NOT_FOUND / INVALID_ARGUMENT."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                request = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
                raise NotFound(f"Servable not found for request: {request}")
            if label is not None:
                version = self._label_version(model, label)
            if version is None:
                if not model.loaded:
                    self._raise_missing(model, f"Latest({name})", None)
                return model.loaded[max(model.loaded)]
            if version not in model.loaded:
                self._raise_missing(model, f"Specific({name}, {version})", version)
            return model.loaded[version]

    @staticmethod
    def _raise_missing(model: _Model, request: str, version: int | None) -> NoReturn:
        """NOT_FOUND as TF Serving says it, but 503 while the wanted version is still loading: the
        client should retry, not give up (TF Serving's words are kept as the message prefix)."""
        loading = sorted(
            v
            for v, s in model.statuses.items()
            if s.state in (State.START, State.LOADING) and (version is None or v == version)
        )
        if loading:
            raise Unavailable(
                f"Servable not found for request: {request}; version {loading[-1]} is still loading"
            )
        raise NotFound(f"Servable not found for request: {request}")

    def statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """``GetModelStatus``: one version, or every version ever seen, newest first."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                if model is None:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")
                version = self._label_version(model, label)
            if version is not None:
                status = model.statuses.get(version) if model else None
                if status is None:
                    raise NotFound(f"Could not find version {version} of model {name}")
                return [VersionStatus(**vars(status))]
            if model is None or not model.statuses:
                raise NotFound(f"Could not find any versions of model {name}")
            return [VersionStatus(**vars(s)) for _, s in sorted(model.statuses.items(), reverse=True)]

    def is_ready(self) -> bool:
        """Ready when every configured model has at least one AVAILABLE version."""
        with self._lock:
            return bool(self._models) and all(m.loaded for m in self._models.values())

    def not_ready_models(self) -> list[str]:
        with self._lock:
            return sorted(name for name, m in self._models.items() if not m.loaded)

    def available(self) -> dict[str, list[int]]:
        with self._lock:
            return {name: sorted(m.loaded) for name, m in self._models.items()}
