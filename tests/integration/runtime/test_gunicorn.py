"""The runtime as users run it: ``modelservice-runtime`` under real Gunicorn, over HTTP on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.runtime.server import Server, descendants, start_server, stop, tcp_sockets

pytestmark = [pytest.mark.integration, pytest.mark.gunicorn]


@pytest.fixture(scope="module")
def served(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    # A private copy of the linear model, so that the test can add a version while serving it.
    tmp_path = tmp_path_factory.mktemp("gunicorn")
    base = tmp_path / "linear"
    shutil.copytree(model_root / "linear" / "1", base / "1")
    # The worker timeout (2 s) is shorter than importing TensorFlow and loading the model, which happen
    # in the model process: no worker waits on them.
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={base}", "--workers=2", "--threads=12",
        "--worker_timeout_seconds=2", "--file_system_poll_wait_seconds=0.5",
    )  # fmt: skip
    try:
        server.wait_ready()
        yield server, base
    finally:
        stop(server)


def test_a_load_longer_than_the_worker_timeout_does_not_kill_the_worker(served: tuple[Server, Path]) -> None:
    server, _ = served
    assert "WORKER TIMEOUT" not in server.log()


def test_predict_over_real_http_matches_the_tf_serving_body(served: tuple[Server, Path]) -> None:
    server, _ = served
    response = requests.post(
        server.url + "/v1/models/linear/versions/1:predict", json={"instances": [[1, 2, 3, 4]]}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.text == '{\n    "predictions": [[1.0, 2.0, 3.0, 4.0]\n    ]\n}'


def test_concurrent_clients_each_get_their_own_rows_back(served: tuple[Server, Path]) -> None:
    server, _ = served
    errors: list[str] = []

    def client(seed: int) -> None:
        with requests.Session() as session:  # keep-alive connection, reused across requests
            for i in range(15):
                value = float(seed * 100 + i)
                r = session.post(server.url + "/v1/models/linear/versions/1:predict",
                                 json={"instances": [[value, 0, 0, 1]]})  # fmt: skip
                if r.status_code != 200 or r.json()["predictions"] != [[value, 0.0, 0.0, 1.0]]:
                    errors.append(f"{seed}/{i}: {r.status_code} {r.text}")

    threads = [threading.Thread(target=client, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_big_requests_decoded_and_encoded_off_the_event_loop_get_their_rows_back(
    served: tuple[Server, Path],
) -> None:
    # 8,000 rows: a 336 KB body and 128 KB of outputs, both over offload.py's thresholds.
    server, _ = served
    rows = [[100000.5 + 4 * i + j for j in range(4)] for i in range(8000)]
    v1 = requests.post(server.url + "/v1/models/linear:predict", json={"instances": rows}, timeout=60)
    assert len(v1.request.body or b"") > 256 * 1024
    assert v1.status_code == 200, v1.text
    assert v1.json()["predictions"] == rows
    name = requests.get(server.url + "/v2/models/linear", timeout=10).json()["inputs"][0]["name"]
    flat = [value for row in rows for value in row]
    v2 = requests.post(
        server.url + "/v2/models/linear/infer",
        json={"inputs": [{"name": name, "shape": [8000, 4], "datatype": "FP32", "data": flat}]},
        timeout=60,
    )
    assert v2.status_code == 200, v2.text
    [output] = v2.json()["outputs"]
    assert output["shape"] == [8000, 4] and output["data"] == flat


def test_a_chunked_body_is_served_and_held_to_the_size_limit(served: tuple[Server, Path]) -> None:
    server, _ = served
    url = server.url + "/v1/models/linear/versions/1:predict"

    def chunks(body: bytes, size: int) -> Iterator[bytes]:  # a generator: requests sends it chunked
        yield from (body[i : i + size] for i in range(0, len(body), size))

    r = requests.post(url, data=chunks(json.dumps({"instances": [[1, 2, 3, 4]]}).encode(), 7))
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [[1.0, 2.0, 3.0, 4.0]]}
    r = requests.post(url, data=chunks(b"x" * (65 * 1024 * 1024), 1024 * 1024))
    assert r.status_code == 413, r.text
    assert "--max_request_bytes" in r.json()["error"]


@pytest.mark.parametrize(
    "framing, body",
    [
        ("Content-Length: 1000", b'{"instances": '),
        ("Transfer-Encoding: chunked", b'3e8\r\n{"instances": '),
        ("Transfer-Encoding: chunked", b'zz\r\n{"instances": '),
    ],
    ids=["content-length", "chunked", "malformed chunk size"],
)
def test_a_body_that_ends_early_or_has_bad_chunks_gets_400_not_500(
    served: tuple[Server, Path], framing: str, body: bytes
) -> None:
    server, _ = served
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n"
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the body ends long before the 1,000 bytes announced (or is garbled)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:300]
    assert b'"error"' in reply  # a JSON error, as every other bad request gets


def answer(stream: Any, head_only: bool = False) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 answer read off a raw connection: status line, headers, and a Content-Length body."""
    status = stream.readline().decode().strip()
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    length = 0 if head_only else int(headers.get("content-length", 0))
    return status, headers, stream.read(length)


def test_answers_without_a_body_and_after_a_100_continue_keep_one_connection_in_step(
    served: tuple[Server, Path],
) -> None:
    # The worker sends a response's head with its body in one write (FairSocket): a head with no body
    # must still leave at the end of its request, and the interim 100 Continue before the real head.
    server, _ = served
    body = json.dumps({"instances": [[1, 2, 3, 4]]}).encode()

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        stream = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = answer(stream, head_only=True)
            assert status == "HTTP/1.1 200 OK" and int(headers["content-length"]) > 0
        head = "POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
        assert answer(stream)[0] == "HTTP/1.1 100 Continue"
        sock.sendall(body)
        status, _, reply = answer(stream)
        assert status == "HTTP/1.1 200 OK" and json.loads(reply) == {"predictions": [[1.0, 2.0, 3.0, 4.0]]}
        sock.sendall(b"GET /v1/models/linear HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, reply = answer(stream)
        assert (
            status == "HTTP/1.1 200 OK"
            and json.loads(reply)["model_version_status"][0]["state"] == "AVAILABLE"
        )


def test_after_a_413_the_upload_is_drained_and_the_connection_serves_on_with_the_same_workers(
    served: tuple[Server, Path],
) -> None:
    # Gunicorn discards an unread body 1 KiB at a time with a copy of its whole buffer on each read:
    # 2.4 s of CPU for 65 MiB, long enough under load for the arbiter to kill the worker (2 s timeout
    # here). The worker drains it in large reads first (gunicorn_conf.finish_body).
    server, _ = served
    workers = set(server.processes()["workers"])
    host, port = server.url.removeprefix("http://").split(":")
    size = 65 * 1024 * 1024
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        stream = sock.makefile("rb")
        sock.sendall(
            f"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        sock.sendall(b"x" * size)
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, reply = answer(stream)
        assert status.startswith("HTTP/1.1 413 ") and "--max_request_bytes" in json.loads(reply)["error"]
        status, _, reply = answer(stream)
        assert status == "HTTP/1.1 200 OK" and json.loads(reply) == {"ready": True}
    assert set(server.processes()["workers"]) == workers


def test_a_request_larger_than_the_batch_queue_holds_gets_400_not_a_503_to_retry(
    served: tuple[Server, Path],
) -> None:
    server, _ = served  # batching on, as by default: 1000 x 10 rows at most in the queue
    url = server.url + "/v1/models/linear:predict"
    too_large = requests.post(url, json={"instances": [[1, 2, 3, 4]] * 10_001}, timeout=60)
    assert too_large.status_code == 400 and "Retry-After" not in too_large.headers
    assert too_large.json()["error"].startswith(
        "Task size 10001 is larger than maximum input batch size 10000"
    )
    at_the_limit = requests.post(url, json={"instances": [[1, 2, 3, 4]] * 10_000}, timeout=60)
    assert at_the_limit.status_code == 200 and len(at_the_limit.json()["predictions"]) == 10_000


def test_bad_requests_over_http_are_4xx_json(served: tuple[Server, Path]) -> None:
    server, _ = served
    r = requests.post(
        server.url + "/v1/models/linear:predict", data=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "JSON Parse error" in r.json()["error"]
    r = requests.post(server.url + "/v1/models/linear:predict", data=b"x" * (65 * 1024 * 1024))
    assert r.status_code == 413 and "--max_request_bytes" in r.json()["error"]
    r = requests.post(server.url + "/v2/models/linear/infer", data=b"x" * (65 * 1024 * 1024))
    assert r.status_code == 413 and "--max_request_bytes" in r.json()["error"]


@pytest.mark.parametrize(
    ("head", "status", "words"),
    [
        (b"POST /v1/models/linear:predict HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
         "400 Bad Request", "Invalid HTTP Header: 'CONTENT-LENGTH'"),
        (b"GET /v1/models/linear HTTP/1.1\r\nBad Header: 1\r\n\r\n", "400 Bad Request",
         "Invalid HTTP header name: 'Bad Header'"),
        (b"G@T /v1/models/linear HTTP/1.1\r\n\r\n", "400 Bad Request", "Invalid HTTP method: 'G@T'"),
        (b"GET /v1/models/linear HTTP/9.9\r\n\r\n", "400 Bad Request", "Invalid HTTP Version"),
        (b"GET /v1/models/" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", "414 URI Too Long",
         "Request Line is too large"),
        (b"GET /v1/models/linear HTTP/1.1\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
         "431 Request Header Fields Too Large", "limit request headers fields size"),
        (b"POST /v1/models/linear:predict HTTP/1.1\r\nExpect: 42\r\nContent-Length: 2\r\n\r\n{}",
         "417 Expectation Failed", "Unable to comply with expectation: '42'"),
    ],
)  # fmt: skip
def test_a_request_gunicorn_cannot_parse_gets_its_4xx_as_json_not_an_html_page(
    served: tuple[Server, Path], head: bytes, status: str, words: str
) -> None:
    server, _ = served
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        reply = b""
        while chunk := sock.recv(65536):  # the answer ends with the connection ("Connection: close")
            reply += chunk
    lines, _, body = reply.partition(b"\r\n\r\n")
    first, *fields = lines.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (f.partition(": ") for f in fields)}
    assert first == f"HTTP/1.1 {status}" and headers["content-type"] == "application/json", reply
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error.startswith(status.split(" ", 1)[1] + ": ") and words in error, error


def test_uploads_that_stall_hold_no_request_slot_and_finish_when_their_bytes_come(
    model_root: Path, tmp_path: Path
) -> None:
    # One worker with two request slots, and three clients that send a head and a little of the body.
    server = start_server(
        tmp_path,
        "--model_name=linear",
        f"--model_base_path={model_root / 'linear'}",
        "--workers=1",
        "--threads=2",
    )
    server.wait_ready()
    host, port = server.url.removeprefix("http://").split(":")
    body = b'{"instances": [[1, 2, 3, 4]]}'.ljust(100)
    head = (
        b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    stalled = [socket.create_connection((host, int(port)), timeout=30) for _ in range(3)]
    try:
        for sock in stalled:
            sock.sendall(head + body[:10])
        time.sleep(0.5)
        # Before, the stalled uploads held both slots and this request waited with no end.
        fine = requests.post(
            server.url + "/v1/models/linear:predict", json={"instances": [[1, 2, 3, 4]]}, timeout=10
        )
        assert fine.status_code == 200, fine.text
        for sock in stalled:
            sock.sendall(body[10:])
            status, _, reply = answer(sock.makefile("rb"))
            assert status == "HTTP/1.1 200 OK" and json.loads(reply) == fine.json(), reply
    finally:
        for sock in stalled:
            sock.close()
        stop(server)


def test_a_body_that_stops_arriving_gets_408_after_the_client_timeout_and_its_slot_goes_to_the_next(
    model_root: Path, tmp_path: Path
) -> None:
    # One worker with one request slot and a client timeout of one second. Two clients send a head and
    # part of the body, then nothing: a small body (read ahead of the slot) and one over 256 KiB, whose
    # rest is read in the slot, so it holds the worker's only slot while it stalls.
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--workers=1",
        "--threads=1", "--client_timeout_seconds=1",
    )  # fmt: skip
    server.wait_ready()
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        "POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: {}\r\n\r\n"
    )
    small, large = (socket.create_connection((host, int(port)), timeout=30) for _ in range(2))
    try:
        started = time.monotonic()
        small.sendall(head.format(100).encode() + b'{"instances": ')
        large.sendall(head.format(400 * 1024).encode() + b"[" * (300 * 1024))
        time.sleep(0.3)
        # Waits for the slot that the large upload holds, until that upload times out.
        fine = requests.post(
            server.url + "/v1/models/linear:predict", json={"instances": [[1, 2, 3, 4]]}, timeout=10
        )
        assert fine.status_code == 200, fine.text
        for sock in (small, large):
            stream = sock.makefile("rb")
            status, headers, reply = answer(stream)
            assert status.split()[1] == "408", (status, reply)
            assert json.loads(reply) == {
                "error": "Request body stopped arriving: no byte of it for 1s (--client_timeout_seconds)"
            }
            assert headers["connection"] == "close", sock is small
            assert stream.read() == b""  # and the connection is closed
        assert 0.9 < time.monotonic() - started < 10
    finally:
        small.close()
        large.close()
        stop(server)


def test_an_answer_the_client_does_not_read_is_dropped_after_the_client_timeout(
    model_root: Path, tmp_path: Path
) -> None:
    # 400,000 rows answer about 9 MB, more than the kernel buffers between the two ends hold while the
    # client reads nothing: the worker's write waits, for one second, then it closes the connection.
    # (Batching off: its queue takes at most 10,000 rows by default.)
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--workers=1",
        "--client_timeout_seconds=1", "--enable_batching=false",
    )  # fmt: skip
    server.wait_ready()
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"instances": [[1, 2, 3, 4]] * 400_000}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    try:
        sock.connect((host, int(port)))
        sock.sendall(
            b"POST /v1/models/linear:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        server.wait_for_log_entries(
            lambda entries: any(
                "its answer waited 1s for the client" in e.get("message", "") for e in entries
            ),
            timeout=30,
        )
        # Meanwhile the worker serves others, and what reaches the client ends short of the answer.
        fine = requests.post(
            server.url + "/v1/models/linear:predict", json={"instances": [[1, 2, 3, 4]]}, timeout=10
        )
        assert fine.status_code == 200, fine.text
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        assert 0 < received < 8_800_000
    finally:
        sock.close()
        stop(server)


def test_metrics_are_merged_across_workers(served: tuple[Server, Path]) -> None:
    server, _ = served
    with requests.Session() as session:
        for _ in range(20):
            session.post(
                server.url + "/v1/models/linear/versions/1:predict", json={"instances": [[1, 1, 1, 1]]}
            )
    total = 0.0
    for _ in range(4):  # whichever worker answers, the sum over workers is the same
        text = requests.get(server.url + "/metrics").text
        lines = [
            line for line in text.splitlines()
            if line.startswith('modelservice_requests_total{api="predict",model="linear",status="200",version="1"}')
        ]  # fmt: skip
        assert len(lines) == 1
        value = float(lines[0].split()[-1])
        assert value >= 20 and (total == 0 or value == total)
        total = value
    assert "modelservice_model_version_state{" in text and 'state="AVAILABLE"' in text


def test_a_new_version_on_disk_is_served_without_a_restart(
    served: tuple[Server, Path], model_root: Path
) -> None:
    server, base = served
    staging = base.parent / "staging-2"
    shutil.copytree(model_root / "linear" / "2", staging)
    staging.rename(base / "2")  # atomic appearance, as a careful model publisher does it
    deadline = time.monotonic() + 90
    body = {"instances": [[1, 1, 1, 1]]}
    seen = set()
    while time.monotonic() < deadline:
        r = requests.post(server.url + "/v1/models/linear:predict", json=body)
        assert r.status_code == 200, r.text  # no failed request while the version changes
        seen.add(r.json()["predictions"][0][0])
        status = requests.get(server.url + "/v1/models/linear").json()["model_version_status"]
        if 2.0 in seen and {s["version"]: s["state"] for s in status} == {"2": "AVAILABLE", "1": "END"}:
            break
        time.sleep(0.1)
    assert 2.0 in seen


def test_sigterm_stops_every_process(model_root: Path, tmp_path: Path) -> None:
    server = start_server(tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}")
    server.wait_ready()
    children = descendants(server.process.pid)
    assert stop(server) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)
    log = server.log()
    assert "Handling signal: term" in log or "Shutting down" in log
    assert json.loads(log.splitlines()[0])["level"] in ("info", "warning")  # JSON logs


# Loaded by every Python process of the server (PYTHONPATH): each TensorFlow module that a process imports
# is written down with the thread that imported it.
IMPORT_WATCH = """
import os, sys, threading

def _watch(event, args):
    if event == "import" and str(args[0]).split(".")[0] in ("tensorflow", "tensorflow_serving", "keras"):
        thread = "main" if threading.current_thread() is threading.main_thread() else "other"
        with open(os.environ["MODELSERVICE_TEST_IMPORTS"], "a") as out:
            out.write(f"{os.getpid()} {thread} {threading.current_thread().name} {args[0]}\\n")

sys.addaudithook(_watch)
"""


def test_the_model_process_imports_tensorflow_in_its_main_thread_so_a_status_poll_cannot_break_the_load(
    model_root: Path, tmp_path: Path
) -> None:
    # TensorFlow's import is not thread-safe: TF Serving's protos imported for a status request while the
    # first load imported TensorFlow failed that load for good, about one start in three.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(IMPORT_WATCH)
    imports = tmp_path / "imports.txt"
    path = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH", "")) if p)
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}",
        env={"PYTHONPATH": path, "MODELSERVICE_TEST_IMPORTS": str(imports)},
    )  # fmt: skip
    try:
        statuses: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "AVAILABLE" not in statuses[-1:]:
            assert server.process.poll() is None, server.log()
            try:
                reply = requests.get(server.url + "/v1/models/linear", timeout=60)
            except requests.ConnectionError:  # not listening yet
                time.sleep(0.02)
                continue
            assert reply.status_code == 200, reply.text  # never "Could not find any versions"
            statuses.append(reply.json()["model_version_status"][0]["state"])
        assert statuses[-1:] == ["AVAILABLE"], (statuses, server.log())
        assert set(statuses) <= {"START", "LOADING", "AVAILABLE"}, statuses
    finally:
        stop(server)
    lines = [line.split(" ", 3) for line in imports.read_text().splitlines()]
    assert any(module == "tensorflow" and thread == "main" for _, thread, _, module in lines), lines
    assert [line for line in lines if line[1] != "main"] == []


def test_at_stop_kept_alive_connections_get_their_next_answer_with_a_close_and_idle_ones_are_closed(
    model_root: Path, tmp_path: Path
) -> None:
    # A load balancer keeps connections open between requests. At stop (after the drain), a request that
    # arrives on one within two seconds is answered with "Connection: close", so its client reconnects
    # elsewhere instead of meeting a reset; a connection still idle then is closed, so it does not hold
    # the worker for the graceful timeout. Only requests in flight have that long.
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--drain_seconds=0",
        "--graceful_timeout_seconds=30", "--workers=1",
    )  # fmt: skip
    server.wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    busy, idle = (http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(2))
    for connection in (busy, idle):
        connection.request("GET", "/v2/health/live")
        response = connection.getresponse()
        assert response.read() == b'{"live": true}' and not response.will_close
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the worker is stopping now
    busy.request("POST", "/v1/models/linear:predict", body=b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}')
    response = busy.getresponse()
    assert response.status == 200 and response.will_close
    assert json.loads(response.read()) == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    assert server.process.wait(timeout=30) == 0, server.log()
    assert time.monotonic() - started < 10, "a stop waited for an idle connection"
    assert idle.sock is not None and idle.sock.recv(1) == b""  # kept open until the server closed it
    busy.close()
    idle.close()


def test_a_request_in_flight_when_the_worker_stops_is_answered_with_a_close_not_closed_after_a_keep_alive(
    model_root: Path, tmp_path: Path
) -> None:
    # A kept-alive connection whose request is still being served when the worker stops: its answer must
    # say "Connection: close". An answer that said keep-alive followed by a close sends the client's next
    # request into a closed socket (a broken pipe that a rollout under load through a Service showed).
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 3000000 }\n")
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--enable_batching",
        f"--batching_parameters_file={params}", "--drain_seconds=0", "--graceful_timeout_seconds=30",
        "--workers=1",
    )  # fmt: skip
    server.wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v2/health/live")
    response = connection.getresponse()
    assert response.read() == b'{"live": true}' and not response.will_close
    # The lone request waits for its batch to fill (up to 3 s); the worker stops meanwhile.
    connection.request("POST", "/v1/models/linear:predict", body=b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}')
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read()) == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    assert response.will_close, "answered keep-alive by a worker about to close the connection"
    assert server.process.wait(timeout=30) == 0, server.log()
    connection.close()


# ------------------------------------------------------------------------------- the process model


def metric(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_workers_share_one_model_process_that_loads_and_warms_up_once(served: tuple[Server, Path]) -> None:
    server, _ = served
    tree = server.processes()
    assert len(tree["engine"]) == 1 and len(tree["master"]) == 1 and len(tree["workers"]) == 2, tree
    # Each version that loaded (one, or two once the new-version test ran) loaded once, not once per worker.
    loads = [
        e["message"]
        for e in server.log_entries()
        if e.get("message", "").startswith("Loaded model linear version ")
    ]
    versions = {message.split()[4] for message in loads}
    assert len(loads) == len(versions) >= 1, loads
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert metric(text, 'modelservice_model_loads_total{model="linear",result="success"}') == len(versions)

    # One copy of TensorFlow in the pod: the model process maps it, no worker does.
    def maps_tensorflow(pid: int) -> bool:
        return "_pywrap_tensorflow" in Path(f"/proc/{pid}/maps").read_text()

    assert maps_tensorflow(tree["engine"][0])
    assert not any(maps_tensorflow(pid) for pid in tree["workers"] + tree["master"])


def test_requests_on_every_worker_reach_the_model_process(served: tuple[Server, Path]) -> None:
    server, _ = served
    workers = set(server.processes()["workers"])
    pids: set[int] = set()
    for _ in range(100):
        # A fresh connection each time: the workers take turns accepting them.
        r = requests.post(server.url + "/v1/models/linear:predict", json={"instances": [[1, 2, 3, 4]]},
                          headers={"Connection": "close"})  # fmt: skip
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 4
        pids = served_by(server.log_entries())
        if pids == workers:
            return
    server.wait_for_log_entries(lambda entries: served_by(entries) == workers)  # the last lines may lag


def served_by(entries: list[dict[str, Any]]) -> set[int]:
    return {
        entry["pid"]
        for entry in entries
        if entry.get("message") == "Served POST /v1/models/linear:predict with 200"
    }


def test_connections_opened_at_once_are_spread_over_the_workers(served: tuple[Server, Path]) -> None:
    """Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads connections over
    them. On one shared socket the workers race to accept, and a pool's connections opened at once can
    all land on one worker, which then serves the pool alone."""
    server, _ = served
    tree = server.processes()
    port = int(server.url.rsplit(":", 1)[1])
    listening = {pid: set(tcp_sockets(pid, port, "0A")) for pid in tree["master"] + tree["workers"]}
    assert all(len(listening[pid]) == 1 for pid in tree["workers"]), listening
    assert len(set().union(*(listening[pid] for pid in tree["workers"]))) == len(tree["workers"])
    assert not listening[tree["master"][0]]

    pool = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(24)]
    try:
        for conn in pool:
            conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: modelservice\r\n\r\n")
        for conn in pool:
            assert conn.recv(65536).startswith(b"HTTP/1.1 200 ")
        ours = {conn.getsockname()[1] for conn in pool}
        taken = {pid: sum(remote in ours for remote in tcp_sockets(pid, port, "01").values())
                 for pid in tree["workers"]}  # fmt: skip
    finally:
        for conn in pool:
            conn.close()
    # Every connection is on a worker, and each worker has some: all 24 on one has a chance of 2^-23.
    assert sum(taken.values()) == len(pool) and min(taken.values()) >= 1, taken


def test_a_rest_port_already_taken_even_by_another_runtime_is_one_clear_error(
    model_root: Path, tmp_path: Path
) -> None:
    # The workers bind the port themselves with SO_REUSEPORT, which would share it silently with
    # another process that set it too (another runtime): checked before anything starts.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "modelservice_runtime.cli", "--rest_api_host=127.0.0.1", "--port=0",
             f"--rest_api_port={port}", "--model_name=linear", f"--model_base_path={model_root / 'linear'}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"--rest_api_port={port} (REST) is already in use" in done.stderr


def test_a_model_process_crash_fails_requests_in_flight_with_503_and_it_is_restarted(
    model_root: Path, tmp_path: Path
) -> None:
    # Batches wait 5 s to fill: the requests are certainly in the model process when it is killed.
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--workers=2",
        "--drain_seconds=0", "--enable_batching", "--batch_timeout_micros=5000000", "--max_batch_size=64",
    )  # fmt: skip
    url = server.url + "/v1/models/linear:predict"
    body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
    try:
        server.wait_ready()
        engine = server.processes()["engine"][0]
        answers: list[requests.Response] = []
        threads = [threading.Thread(target=lambda: answers.append(requests.post(url, json=body, timeout=30)))
                   for _ in range(6)]  # fmt: skip
        for t in threads:
            t.start()
        time.sleep(0.3)  # the requests are in the model process now
        os.kill(engine, signal.SIGKILL)
        for t in threads:
            t.join(timeout=30)
        assert len(answers) == 6  # none hangs
        failed = [r for r in answers if r.status_code != 200]
        assert len(failed) == 6
        for r in failed:
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert "model process" in r.json()["error"]
        # Not ready until the model process is back, then serving again without a restart of the pod.
        assert requests.get(server.url + "/v2/health/ready", timeout=5).status_code == 503
        server.wait_ready(timeout=60)
        assert requests.post(url, json=body, timeout=30).json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
        new_engine = server.processes()["engine"]
        assert new_engine and new_engine[0] != engine
        assert "exited (signal SIGKILL); restarting it" in server.log()
    finally:
        assert stop(server) == 0
    assert not descendants(server.process.pid)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_supervisor_killed_outright_takes_the_model_process_and_gunicorn_with_it(
    model_root: Path, tmp_path: Path
) -> None:
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--workers=2",
        "--drain_seconds=0",
    )  # fmt: skip
    try:
        server.wait_ready()
        tree = server.processes()
        children = [*tree["engine"], *tree["master"], *tree["workers"]]
        assert len(children) == 4
    finally:
        server.process.kill()
        server.process.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if alive(pid)] == []


def test_one_model_process_per_listed_gpu_each_pinned_to_its_gpu_and_restarted_alone(
    model_root: Path, tmp_path: Path
) -> None:
    # Two GPUs as the device plugin lists them (none exists here: TensorFlow runs on the CPU in both).
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--workers=2",
        "--threads=4", "--drain_seconds=0", env={"NVIDIA_VISIBLE_DEVICES": "GPU-aaaa,GPU-bbbb"},
    )  # fmt: skip
    url = server.url + "/v1/models/linear:predict"
    try:
        server.wait_ready()
        engines = server.processes()["engine"]
        assert len(engines) == 2
        pinned = sorted(
            dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v).get(
                "CUDA_VISIBLE_DEVICES", ""
            )
            for pid in engines
        )  # fmt: skip
        assert pinned == ["0", "1"]
        # The threads of the workers spread over both: each model process answers some requests.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: requests.post(url, json={"instances": [[1, 1, 1, 1]]}, timeout=30),
                                    range(64)))  # fmt: skip
        assert all(r.status_code == 200 for r in answers)
        text = requests.get(server.url + "/metrics", timeout=5).text
        served_by = {
            line.split('pid="')[1].split('"')[0] for line in text.splitlines()
            if line.startswith("modelservice_model_version_state{") and 'state="AVAILABLE"' in line and line.endswith(" 1.0")
        }  # fmt: skip
        assert len(served_by) == 2  # each model process loaded the model once
        # One model process dies: readiness turns 503 until it is back; the other is left alone.
        os.kill(engines[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while requests.get(server.url + "/v2/health/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "readiness never noticed the dead model process"
            time.sleep(0.05)
        server.wait_ready(timeout=60)
        after = server.processes()["engine"]
        assert engines[1] in after and engines[0] not in after and len(after) == 2
    finally:
        assert stop(server) == 0


def test_with_batching_off_the_model_process_runs_each_request_alone(
    model_root: Path, tmp_path: Path
) -> None:
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--enable_batching=false",
        "--drain_seconds=0",
    )  # fmt: skip
    url = server.url + "/v1/models/linear:predict"  # version 2: doubles
    try:
        server.wait_ready()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda v: requests.post(url, json={"instances": [[v, 0, 0, 0]]}, timeout=30),
                                    range(8)))  # fmt: skip
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert [a.json()["predictions"] for a in answers] == [[[2.0 * v, 0.0, 0.0, 0.0]] for v in range(8)]
        bad = requests.post(url, json={"instances": [[1, 2, 3]]}, timeout=30)
        assert (
            bad.status_code == 400
            and "Matrix size-incompatible: In[0]: [1,3], In[1]: [4,4]" in bad.json()["error"]
        )
        assert "modelservice_batch_size_count" not in requests.get(server.url + "/metrics", timeout=5).text
    finally:
        assert stop(server) == 0
