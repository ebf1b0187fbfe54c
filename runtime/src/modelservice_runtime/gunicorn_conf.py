"""Gunicorn settings for the runtime, in sections; each says why it is set.

``modelservice-runtime`` (cli.py) applies ``settings(config)``; the hooks below are plain functions so
that Gunicorn calls them in the right process (the master for ``on_starting`` and ``child_exit``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from . import admission
from .config import RuntimeConfig
from .tls import gunicorn_ssl_context


class RuntimeLogger(Logger):  # type: ignore[misc]
    """Gunicorn's logger without its access log: the app writes one JSON line per request itself.

    With ``logconfig_dict`` set, Gunicorn would otherwise build its access-log atoms for every request
    (measurable CPU on a hot path) to log a second, differently formatted line."""

    @property
    def access_log_enabled(self) -> bool:
        return False


class DrainingThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, with a drain phase on SIGTERM: readiness turns 503 first, then the worker stops.

    Kubernetes sends SIGTERM and removes the pod from the Service's endpoints at the same time; the
    endpoint update takes a moment to reach every proxy, which keeps sending requests meanwhile. So for
    ``--drain_seconds`` the worker keeps serving and answers ``/v2/health/ready`` with 503; then it stops
    accepting, lets in-flight requests finish (up to ``--graceful_timeout_seconds``) and exits.
    """

    _draining = False

    # -- queueing delay: a connection is stamped when it is queued for a thread (accepted, or readable
    # again while kept alive), and the thread that picks it up publishes the stamp (admission.py)

    def enqueue_req(self, conn: Any) -> None:
        conn.modelservice_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        admission.set_queued_at(getattr(conn, "modelservice_queued_at", None))
        try:
            return super().handle(conn)
        finally:
            admission.set_queued_at(None)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._draining or not self.alive:
            return
        self._draining = True
        drain_seconds = getattr(getattr(self.app, "runtime_config", None), "drain_seconds", 0.0)
        wsgi = getattr(self, "wsgi", None)
        if wsgi is not None and hasattr(wsgi, "extensions"):
            wsgi.extensions["modelservice.draining"] = True
        self.log.info("Draining worker %s: not ready, stopping in %.1fs", self.pid, drain_seconds)
        timer = threading.Timer(drain_seconds, self._stop_after_drain, args=(sig, frame))
        timer.daemon = True
        timer.start()

    def _stop_after_drain(self, sig: int, frame: Any) -> None:
        # ThreadWorker.handle_exit only flips `alive` and wakes the poller: safe from this thread.
        super().handle_exit(sig, frame)


def settings(config: RuntimeConfig) -> dict[str, Any]:
    return {
        # -- Binding ----------------------------------------------------------------------------------
        "bind": [f"{config.rest_api_host}:{config.rest_api_port}"],
        # -- Workers ----------------------------------------------------------------------------------
        # gthread: HTTP and JSON on every core (one worker per core by default), each worker with
        # `threads` threads that mostly wait on the model process, which holds the one copy of the
        # models (engine.py). A connection waits for a thread in the worker's queue; its wait is the
        # queueing delay that overload control watches (admission.py).
        "worker_class": DrainingThreadWorker,
        "workers": config.workers,
        "threads": config.threads,
        # Each worker listens on its own SO_REUSEPORT socket (Gunicorn 27 opens them after the fork),
        # so the kernel spreads new connections over the workers by their addresses. On one shared
        # socket the workers race to accept, and kept-alive connections opened at once (a client's
        # pool, a proxy) can all land on one worker, whose GIL then caps the pod while the other
        # cores idle: `make bench` caught splits of 32 connections as 32/0, 31/1 and 28/4, at 40-60%
        # of the throughput of an even split. The cost: connections still in the backlog of a worker
        # that exits (a crash, a timeout) are reset instead of going to another worker.
        "reuse_port": True,
        # The app is created in each worker after the fork; no worker imports TensorFlow.
        "preload_app": False,
        # -- Timeouts ---------------------------------------------------------------------------------
        # The worker timeout is a heartbeat of the gthread main loop; models load in the model
        # process, so a long load never holds a worker up.
        "timeout": config.worker_timeout_seconds,
        # On SIGTERM a worker first drains (--drain_seconds, not ready but serving), then stops accepting
        # and lets in-flight requests finish for this long.
        "graceful_timeout": config.graceful_timeout_seconds,
        # Keep connections open between requests of a client (load balancers and SDKs reuse them).
        "keepalive": 75,
        # -- Housekeeping -----------------------------------------------------------------------------
        # Heartbeat files on tmpfs: a slow or read-only root filesystem must not stall the heartbeat.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        # Gunicorn 27's control socket would go under $HOME, read-only in the pod; nothing uses it.
        "control_socket_disable": True,
        # -- TLS (tls.py): one context per worker, rebuilt when the certificate files change -----------
        **(
            {
                "certfile": config.tls_cert_file,
                "keyfile": config.tls_key_file,
                "ssl_context": gunicorn_ssl_context,
            }
            if config.tls_cert_file
            else {}
        ),
        # We log each request ourselves, as JSON with its request id.
        "accesslog": None,
        "logger_class": RuntimeLogger,
        "errorlog": "-",
        "loglevel": config.log_level,
        "logconfig_dict": logging_dict(config),
        "proc_name": "modelservice-runtime",
        # -- Hooks ------------------------------------------------------------------------------------
        "on_starting": on_starting,
        "post_fork": post_fork,
        "child_exit": child_exit,
    }


def logging_dict(config: RuntimeConfig) -> dict[str, Any]:
    formatter = "json" if config.log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "modelservice_runtime.logs.JsonFormatter"},
            "text": {"()": "modelservice_runtime.logs.TextFormatter"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": formatter, "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": config.log_level.upper()},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": config.log_level.upper(), "propagate": False},
            "tensorflow": {"level": "WARNING"},
            "absl": {"level": "WARNING"},
        },
    }


def prepare_multiprocess_metrics() -> str:
    """Give the workers a fresh PROMETHEUS_MULTIPROC_DIR; call before any import of prometheus_client."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)  # stale files from a previous run count double
        os.makedirs(directory, exist_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix="modelservice-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def on_starting(server: Any) -> None:
    server.log.info("Started the master; metrics directory %s", os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def post_fork(server: Any, worker: Any) -> None:
    # Models load in the model process, not here: a worker starts in well under a second.
    server.log.info("Forked worker %s", worker.pid)


def child_exit(server: Any, worker: Any) -> None:
    # Drop the live gauges of a dead worker so that /metrics stops reporting its models' states.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
