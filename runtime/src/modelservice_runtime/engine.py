"""The model process: every model, the batcher and TensorFlow, once per pod.

A pod runs one model process and N Gunicorn workers (``supervisor.py`` starts both). The workers speak
HTTP and JSON and hold no TensorFlow; everything that touches a model is an *operation* on this process,
sent over a Unix socket (``ipc.py``). So a pod holds one copy of each model and one TensorFlow runtime
(one CUDA context on a GPU) whatever its worker count, loads, polls and warms up once, and its batches
are formed from the requests of every worker.

``Engine`` is the operation table, the same object in both deployments: in the model process behind
``ipc.EngineServer``, and in-process behind ``client.LocalTransport`` (tests, ``flask run``). Operations
take and return plain values (strings, numbers, numpy arrays, dicts of them) and raise ``ServingError``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .config import RuntimeConfig, load_model_config_file
from .dataplane import DataPlane
from .errors import Internal, ServingError, StaleVersion, Unavailable
from .ipc import SocketTransport
from .kube_auth import UNAUTHENTICATED, KubernetesReviewer, Verdict, build_reviewer
from .protocols.tensors import TensorSpec, signature_key
from .ratelimit import Decision, Limiter, RateLimiter, build_rate_limiter
from .repository import ModelRepository
from .response_cache import ResponseCache, build_response_cache, make_key
from .security import build_authenticator

log = logging.getLogger(__name__)

SOCKET_ENV = "MODELSERVICE_ENGINE_SOCKET"
# With several model processes (one per GPU), the first one's socket: it keeps the pod's rate limits.
FIRST_SOCKET_ENV = "MODELSERVICE_FIRST_ENGINE_SOCKET"
ADMIT_TIMEOUT_S = 5.0
RATE_LIMITS_DOWN = (
    "The model process that keeps the pod's rate limits is not running (it is restarting); retry"
)

Reply = Callable[[Any], None]  # called with an operation's value, or with the ServingError that ended it


INLINE_OPS = frozenset({"admit", "cache_get", "cache_put"})


class Engine:
    """Operations on the repository and the data plane, by name (what the IPC carries)."""

    def __init__(
        self,
        repository: ModelRepository,
        plane: DataPlane,
        threads: int = 16,
        limiter: RateLimiter | None = None,
        cache: ResponseCache | None = None,
        reviewer: KubernetesReviewer | None = None,
    ) -> None:
        self.repository = repository
        self.plane = plane
        self.limiter = limiter  # the pod's rate limits: every worker asks here ("admit")
        self.cache = cache  # the pod's response cache ("cache_get", "cache_put")
        self.reviewer = reviewer  # Kubernetes authentication: token and access reviews ("review")
        # Operations that block (an unbatched model call, classify, metadata) run here, never on the
        # thread that reads requests.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="op")
        self._ops: dict[str, Callable[..., Any]] = {
            "resolve": self.resolve,
            "specs": self.specs,
            "predict": self.predict,
            "classify": self.classify,
            "regress": self.regress,
            "tfs_status": self.tfs_status,
            "tfs_metadata": self.tfs_metadata,
            "available": repository.available,
            "readiness": lambda: (repository.model_names(), repository.not_ready_models()),
            "model_ready": self.model_ready,
            "admit": self.admit,
            "cache_get": self.cache_get,
            "cache_put": self.cache_put,
            "review": self.review,
        }

    @property
    def generation(self) -> int:
        return self.repository.generation

    def call(self, op: str, args: Sequence[Any]) -> Any:
        handler = self._ops.get(op)
        if handler is None:
            raise ServingError(f"Unknown model process operation: {op}")
        return handler(*args)

    def submit(self, op: str, args: Sequence[Any], reply: Reply) -> None:
        """Start an operation and return at once; ``reply`` gets its value or its ``ServingError``, once,
        from whichever thread finishes it. A batchable predict goes straight into the batcher (no thread
        waits for it); everything else runs on the operation pool."""
        if op in INLINE_OPS:  # a bucket or a cache lookup: answered at once, never behind model calls
            self._run_and_reply(op, reply, lambda: self.call(op, args))
            return
        if op == "predict":
            try:
                name, version, label, resolved, signature, decoded_as, inputs = args
                model = self._model_for(name, version, label, resolved, signature, decoded_as)
                served = int(model.version)

                def done(result: dict[str, np.ndarray] | ServingError) -> None:
                    reply(result if isinstance(result, ServingError) else (served, result))

                if not self.plane.predict_async(model, signature, inputs, done):
                    # Resolved and checked: only the model call is left, on the pool.
                    run = self.plane.run_alone
                    self._pool.submit(
                        self._run_and_reply, op, reply, lambda: (served, run(model, signature, inputs))
                    )
            except ServingError as exc:
                reply(exc)
            except Exception as exc:
                reply(_internal(op, exc))
            return
        self._pool.submit(self._run_and_reply, op, reply, lambda: self.call(op, args))

    def review(self, token: str, verb: str) -> Verdict:
        """A token's verdict (on the pool: it may wait on the API server)."""
        if self.reviewer is None:
            return Verdict(UNAUTHENTICATED, message="Kubernetes authentication is not enabled")
        return self.reviewer.review(token, verb)

    def admit(self, client: str, model: str) -> Decision | None:
        return self.limiter.take(client, model) if self.limiter is not None else None

    def cache_get(
        self, api: str, name: str, version: int | None, label: str | None, signature: Any, digest: bytes
    ) -> tuple[int, bytes | None]:
        """(the version the request resolves to here and now, the body cached for it or None). Resolved
        here, not by the worker: a worker whose requests all hit would never hear of a new version."""
        resolved = int(self.repository.resolve(name, version, label).version)
        if self.cache is None:
            return resolved, None
        return resolved, self.cache.get(make_key(api, name, resolved, signature, digest))

    def cache_put(self, api: str, name: str, served: int, signature: Any, digest: bytes, body: bytes) -> bool:
        """Store a body under the version that computed it."""
        if self.cache is None:
            return False
        return self.cache.put(make_key(api, name, served, signature, digest), body)

    @staticmethod
    def _run_and_reply(op: str, reply: Reply, work: Callable[[], Any]) -> None:
        try:
            value = work()
        except ServingError as exc:
            reply(exc)
            return
        except Exception as exc:
            reply(_internal(op, exc))
            return
        reply(value)

    # -- models

    def resolve(self, name: str, version: int | None, label: str | None) -> int:
        """The version a request for (name, version, label) is served by, or TF Serving's error."""
        return int(self.repository.resolve(name, version, label).version)

    def specs(
        self, name: str, version: int, signature: str
    ) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
        """Input and output specs of one signature of one loaded version (TF Serving's 400 if unknown)."""
        model = self.repository.resolve(name, version, None)
        return model.input_specs(signature), model.output_specs(signature)

    def _model_for(
        self,
        name: str,
        version: int | None,
        label: str | None,
        resolved: int,
        signature: str,
        decoded_as: str,
    ) -> Any:
        model = self.repository.resolve(name, version, label)
        # A newer version may have become the latest after the worker resolved: serve it when the
        # signature the request was decoded against is the same, otherwise the worker must decode again.
        if model.version != resolved and signature_key(model.input_specs(signature)) != decoded_as:
            raise StaleVersion(f"Model {name} changed its signature while the request was decoded; retry")
        return model

    def predict(
        self,
        name: str,
        version: int | None,
        label: str | None,
        resolved: int,
        signature: str,
        decoded_as: str,
        inputs: Mapping[str, np.ndarray],
    ) -> tuple[int, dict[str, np.ndarray]]:
        model = self._model_for(name, version, label, resolved, signature, decoded_as)
        return int(model.version), self.plane.predict(model, signature, inputs)

    def classify(
        self, name: str, version: int | None, label: str | None, doc: dict[str, Any]
    ) -> tuple[int, Any]:
        return self._classify_or_regress(name, version, label, doc, "classify")

    def regress(
        self, name: str, version: int | None, label: str | None, doc: dict[str, Any]
    ) -> tuple[int, Any]:
        return self._classify_or_regress(name, version, label, doc, "regress")

    def _classify_or_regress(
        self, name: str, version: int | None, label: str | None, doc: dict[str, Any], method: str
    ) -> tuple[int, Any]:
        from .protocols import tensors

        import_tensorflow()
        from .protocols.tfserving_engine import serialized_examples

        signature = tensors.signature_name_of(doc)
        # TF Serving checks the body before it looks for the model, and says "classify" for both.
        examples = serialized_examples(doc, "classify")
        model = self.repository.resolve(name, version, label)
        run = self.plane.classify if method == "classify" else self.plane.regress
        return int(model.version), run(model, signature, examples)

    def tfs_status(self, name: str, version: int | None, label: str | None) -> str:
        import_tensorflow()
        from .protocols.tfserving_engine import status_json

        return status_json(self.repository.statuses(name, version, label))

    def tfs_metadata(self, name: str, version: int | None, label: str | None) -> tuple[int, str]:
        import_tensorflow()
        from .protocols.tfserving_engine import metadata_json

        model = self.repository.resolve(name, version, label)
        return int(model.version), metadata_json(model)

    def model_ready(self, name: str, version: int | None) -> bool:
        """V2's per-model readiness: True when it serves, False while it loads; NotFound when unknown."""
        from .errors import NotFound

        if name not in self.repository.model_names():
            raise NotFound(f"Model '{name}' is not served here")
        try:
            self.repository.resolve(name, version, None)
        except Unavailable:
            return False
        except NotFound:
            if version is not None:
                raise
            return False
        return True

    def close(self) -> None:
        self.repository.stop()
        self.plane.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _internal(op: str, exc: Exception) -> ServingError:
    """A bug answers 500 with its type, and is logged with its traceback; it never leaves a worker waiting."""
    log.error("Model process operation %s failed", op, exc_info=exc)
    return Internal.of_bug(exc)


_importing_tensorflow = threading.Lock()


def import_tensorflow() -> None:
    """TensorFlow and this process's modules that use it (``loader``, ``protocols.tfserving_engine``),
    imported once, by one thread at a time.

    TensorFlow's import is not thread-safe. A status request that imported TF Serving's protos on an
    operation thread while the first load imported TensorFlow on the repository's thread failed that
    load for good ("deadlock detected by _ModuleLock('tensorflow.compiler.xla.tsl.protobuf')", or
    "partially initialized module 'tensorflow.core.protobuf.error_codes_pb2'"): about one start in three
    with gRPC off and the model's status polled. The model process calls this in its main thread before
    it serves; the loader and the operations that need TensorFlow's protos call it as well, for the
    in-process engine (tests, ``flask run``), where no main thread did.
    """
    with _importing_tensorflow:
        from . import loader  # noqa: F401
        from .protocols import tfserving_engine  # noqa: F401


def load_in_model_process(config: RuntimeConfig) -> Any:
    """The repository's loader: imports TensorFlow on first use, in the model process, and sizes its threads."""

    def load(name: str, version: int, path: str) -> Any:
        import_tensorflow()
        from . import loader

        loader.configure_runtime(
            config.intra_op_threads(), config.inter_op_threads(),
            config.per_process_gpu_memory_fraction, config.tensorflow_gpu_device,
        )  # fmt: skip
        return loader.load_model(
            name, version, path, warmup=config.enable_model_warmup,
            method_name_check=config.enable_signature_method_name_check,
        )  # fmt: skip

    return load


def build_repository(config: RuntimeConfig) -> ModelRepository:
    reader = None
    if config.model_config_file:
        path = config.model_config_file

        def reader() -> Any:
            return load_model_config_file(path)

    return ModelRepository(
        config.models,
        load=load_in_model_process(config),
        poll_seconds=config.file_system_poll_wait_seconds,
        config_reader=reader,
        config_poll_seconds=config.model_config_file_poll_wait_seconds,
    )


class SharedLimiter:
    """The pod's rate limits from a model process other than the first: its gRPC requests take their
    tokens from the first process's buckets ("admit"), as the HTTP workers' requests do, so a limit
    holds for the pod whichever process's gRPC listener a connection reaches."""

    def __init__(self, first_socket: str) -> None:
        self.transport = SocketTransport(first_socket, ADMIT_TIMEOUT_S)

    def take(self, client: str, model: str) -> Decision:
        try:
            decision: Decision = self.transport("admit", (client, model))[1]
        except Unavailable:  # the transport's words are about a request this process would have served
            raise Unavailable(RATE_LIMITS_DOWN) from None
        return decision


def grpc_limiter(engine: Engine, own_socket: str) -> Limiter | None:
    first = os.environ.get(FIRST_SOCKET_ENV, "")
    if engine.limiter is None or not first or first == own_socket:
        return engine.limiter
    return SharedLimiter(first)


def build_engine(config: RuntimeConfig) -> Engine:
    """The repository and data plane a config describes (TensorFlow is imported by ``import_tensorflow``)."""
    repository = build_repository(config)
    plane = DataPlane(
        repository,
        timeout_ms=config.rest_api_timeout_in_ms,
        threads=config.threads,
        batching=config.batching,
        enforce_deadline=False,
    )
    limiter = build_rate_limiter(config.rate_limit_requests_per_second, config.rate_limit_burst)
    cache = build_response_cache(config.response_cache_bytes, config.response_cache_ttl_seconds)
    reviewer = build_reviewer(config.kubernetes_auth)
    return Engine(repository, plane, threads=config.threads, limiter=limiter, cache=cache, reviewer=reviewer)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelservice_runtime.engine <runtime flags>``, started by the supervisor."""
    from .config import config_from_args
    from .ipc import EngineServer
    from .logs import configure_logging

    config = config_from_args(argv)
    configure_logging(config.log_format, config.log_level)
    path = os.environ.get(SOCKET_ENV)
    if not path:
        print(f"modelservice engine: {SOCKET_ENV} is not set", file=sys.stderr)
        return 2
    engine = build_engine(config)
    server = EngineServer(engine, path)
    stopping = threading.Event()

    def stop(signum: int, _: Any) -> None:
        log.info("Model process stopping (signal %d)", signum)
        stopping.set()
        server.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    import_tensorflow()  # here, before any thread that could import it runs or any request is taken
    grpc_server = None
    if config.grpc_port:
        from .grpc_api import GrpcServer
        from .tls import grpc_credentials

        reviewer = engine.reviewer.review if engine.reviewer is not None else None
        credentials = grpc_credentials(config.ssl_config, config.tls_cert_file, config.tls_key_file)
        grpc_server = GrpcServer(
            engine, config.rest_api_host, config.grpc_port, config.threads,
            build_authenticator(config.api_keys_dir, reviewer), grpc_limiter(engine, path), credentials,
        )  # fmt: skip
        grpc_server.start()
        threading.Thread(target=_follow_health, args=(grpc_server, stopping), daemon=True).start()
    engine.repository.start()
    log.info("Model process %d serving on %s", os.getpid(), path)
    server.serve_forever()
    if grpc_server is not None:
        grpc_server.stop(grace=min(5.0, config.graceful_timeout_seconds))
    engine.close()
    return 0


def _follow_health(grpc_server: Any, stopping: threading.Event) -> None:
    """The gRPC health status follows the repository's readiness, checked every half second."""
    while not stopping.is_set():
        grpc_server.update_health()
        stopping.wait(0.5)


if __name__ == "__main__":
    sys.exit(main())
