"""A real ``EngineServer`` on a Unix socket, on its own thread, for the tests of what talks to it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from modelservice_runtime.ipc import EngineServer


@contextlib.contextmanager
def running(engine: Any, path: str) -> Iterator[EngineServer]:
    server = EngineServer(engine, path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)
