"""A model process that runs no model: it answers every operation with a fixed output at once.

python -m bench.echo_engine /path/to/socket

Behind ``bench/hello_server.py`` (with ``MODELSERVICE_BENCH_ECHO_SOCKET``) it measures what one IPC round
trip per request costs a Flask server, whatever the model: the ceiling of any design with one model
process per pod, on the machine at hand.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelservice_runtime.ipc import EngineServer

OUTPUT = {"output_0": np.full((1, 10), 0.1, dtype=np.float32)}


class EchoEngine:
    generation = 1

    def submit(self, op: str, args: Sequence[Any], reply: Any) -> None:
        reply((1, OUTPUT))


if __name__ == "__main__":
    EngineServer(EchoEngine(), sys.argv[1]).serve_forever()
