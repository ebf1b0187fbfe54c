"""CPU per request of the HTTP worker's own code: our Flask app against the Flask "hello" app, in-process.

    .venv/bin/python -m bench.request_cost            (about a minute)

``make bench`` measures whole servers, whose throughput on a small VM drifts by tens of percent from one
minute to the next. This isolates what one request costs the code of an HTTP worker, with no Gunicorn,
no socket and no model process: one thread calls each WSGI app directly with the bench's single-row
``:predict`` body, the model's answer canned after the first call (what the worker receives from the
model process), our access log written to /dev/null as JSON as in a pod. The two apps alternate
``--rounds`` times and the median CPU time per request of each is printed, with the ratio: what our
decoding, encoding, hooks, log and metrics cost above bare Flask.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.serving_bench import body, build_model

PATH = "/v1/models/small:predict"


def environ(payload: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": PATH, "RAW_URI": PATH, "SERVER_NAME": "bench",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(payload), "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(payload)), "CONTENT_TYPE": "application/json",
    }  # fmt: skip


class CannedPredict:
    """The pod's transport with the model's answer canned: every other operation goes to the engine."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.answer: tuple[int, Any] | None = None

    def index(self) -> int:
        return 0

    def __call__(self, op: str, args: Sequence[Any]) -> tuple[int, Any]:
        if op != "predict":
            result: tuple[int, Any] = self.real(op, args)
            return result
        if self.answer is None:
            self.answer = self.real(op, args)
        return self.answer

    def each(self, op: str, args: Sequence[Any]) -> list[Any]:
        return [self(op, args)[1]]

    def first(self, op: str, args: Sequence[Any]) -> Any:
        return self(op, args)[1]

    def close(self) -> None:
        self.real.close()


def our_app(model_base: Path) -> Any:
    from modelservice_runtime.app import create_app
    from modelservice_runtime.config import config_from_args
    from modelservice_runtime.logs import configure_logging

    configure_logging("json", "info")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - open for the life of the process
    app = create_app(config_from_args([f"--model_name={model_base.name}", f"--model_base_path={model_base}"]))
    deadline = time.monotonic() + 120
    while app.test_client().get("/v2/health/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit("the model did not load in 120 s")
        time.sleep(0.1)
    plane = app.extensions["modelservice.dataplane"]
    plane.transport = CannedPredict(plane.transport)
    return app


def cost(app: Any, payload: bytes, requests: int) -> float:
    """CPU seconds per request of this thread, over ``requests`` calls of the app."""

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        if not status.startswith("200"):
            raise SystemExit(f"the app answered {status}")

    started = time.thread_time()
    for _ in range(requests):
        b"".join(app(environ(payload), start_response))
    return (time.thread_time() - started) / requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two apps")
    parser.add_argument("--requests", type=int, default=3000, help="requests per app and round")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    model = build_model(Path(tempfile.mkdtemp(prefix="modelservice-cost-")), 32, 256, 2, name="small")
    from bench.hello_server import app as hello

    apps: dict[str, Callable[..., Any]] = {"hello": hello, "ours": our_app(model.parent)}
    payload = body(1, 32)
    for app in apps.values():
        cost(app, payload, 300)  # warm up: caches, the first model call
    costs: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            costs[name].append(cost(app, payload, args.requests))
    medians = {name: statistics.median(values) for name, values in costs.items()}
    print(f"CPU per single-row :predict request in the worker's code, in-process (median of {args.rounds})")
    for name, values in costs.items():
        runs = "/".join(f"{v * 1e6:.0f}" for v in values)
        print(f"  {name:<6} {medians[name] * 1e6:6.0f} us  (runs {runs})")
    print(f"  ours/hello {medians['ours'] / medians['hello']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
