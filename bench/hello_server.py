"""The HTTP ceiling: Flask under Gunicorn workers with no model at all.

gunicorn -k gthread -w <cores> --threads 8 --reuse-port bench.hello_server:app   (#15's ceiling)
gunicorn -k gevent -w <cores> --reuse-port bench.hello_server:app                 (ours' worker class)

It reads the body and answers a fixed prediction, so what it costs is Gunicorn, Flask and a body read:
the most any Flask-under-Gunicorn model server could serve on the machine. The bench reports each
server's served throughput as a fraction of it.

With ``MODELSERVICE_BENCH_ECHO_SOCKET`` set (under the gevent worker), each request also makes one round
trip to a model process that runs no model (``bench/echo_engine.py``) over our IPC as ours' workers make
it (``ipc.MuxTransport``), sending a one-row float tensor: what the one-model-process design costs before
any JSON or model work.
"""

from __future__ import annotations

import os

import numpy as np
from flask import Flask, Response, request

app = Flask(__name__)
ANSWER = b'{"predictions": [[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}'
ECHO = os.environ.get("MODELSERVICE_BENCH_ECHO_SOCKET")
ROW = {"x": np.zeros((1, 32), dtype=np.float32)}

if ECHO:
    from modelservice_runtime.ipc import MuxTransport

    transport = MuxTransport(ECHO, None)


@app.post("/v1/models/<name>:predict")
def predict(name: str) -> Response:
    request.get_data()
    if ECHO:
        transport("predict", (name, None, None, 1, "", "", ROW))
    return Response(ANSWER, mimetype="application/json")
