"""Batching, overload and shutdown through real Gunicorn: many clients at once, each checking its own rows."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.integration.runtime.server import Server, start_server, stop

pytestmark = [pytest.mark.integration, pytest.mark.gunicorn]

BATCHING = """
max_batch_size { value: 16 }
batch_timeout_micros { value: 20000 }
max_enqueued_batches { value: 64 }
num_batch_threads { value: 1 }
"""


@pytest.fixture(scope="module")
def batched(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("batching")
    params = tmp_path / "batching.config"
    params.write_text(BATCHING)
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}",
        "--enable_batching", f"--batching_parameters_file={params}", "--threads=40", "--drain_seconds=0.5",
        "--workers=2",
    )  # fmt: skip
    try:
        server.wait_ready()
        yield server
    finally:
        stop(server)


def v1(session: requests.Session, url: str, rows: list[list[float]]) -> list[list[float]]:
    response = session.post(url + "/v1/models/linear:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    predictions: list[list[float]] = response.json()["predictions"]
    return predictions


def v2_binary(session: requests.Session, url: str, rows: list[list[float]]) -> list[list[float]]:
    data = np.asarray(rows, dtype="<f4")
    header = json.dumps({
        "inputs": [{"name": "x", "shape": list(data.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": data.nbytes}}],
        "outputs": [{"name": "output_0", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    response = session.post(
        url + "/v2/models/linear/infer",
        data=header + data.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    values = np.frombuffer(response.content[length:], dtype="<f4")
    result: list[list[float]] = values.reshape(data.shape).tolist()
    return result


def test_concurrent_v1_and_v2_clients_share_batches_and_each_gets_its_own_rows(batched: Server) -> None:
    errors: list[str] = []

    def client(seed: int) -> None:
        call = v1 if seed % 2 else v2_binary
        with requests.Session() as session:
            for i in range(20):
                size = 1 + (seed + i) % 3
                rows = [
                    [float(seed * 1000 + i * 10 + r), float(seed), float(i), float(r)] for r in range(size)
                ]
                try:
                    got = call(session, batched.url, rows)
                except AssertionError as exc:
                    errors.append(str(exc))
                    continue
                expected = [[2 * v for v in row] for row in rows]  # version 2 doubles
                if got != expected:
                    errors.append(f"client {seed} request {i}: sent {rows}, got {got}")

    threads = [threading.Thread(target=client, args=(s,)) for s in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    metrics = requests.get(batched.url + "/metrics").text
    count = float(re.search(r'^modelservice_batch_size_count\{model="linear"\} (\S+)', metrics, re.M)[1])  # type: ignore[index]
    rows = float(re.search(r'^modelservice_batch_size_sum\{model="linear"\} (\S+)', metrics, re.M)[1])  # type: ignore[index]
    assert rows >= 24 * 20  # every row went through the batcher
    assert rows / count > 1.5  # ... several requests per model call
    assert "modelservice_batch_queue_duration_seconds_bucket" in metrics
    assert re.search(r'^modelservice_batch_queue_depth\{model="linear"\} 0\.0$', metrics, re.M)


def test_a_request_larger_than_max_batch_size_is_split_and_answered_whole(batched: Server) -> None:
    rows = [[float(i), 0.0, 0.0, 1.0] for i in range(40)]  # 16 + 16 + 8
    with requests.Session() as session:
        assert v1(session, batched.url, rows) == [[2 * v for v in row] for row in rows]


# ------------------------------------------------------------------------------------------ overload


def four_row_batches(model_root: Path, tmp_path: Path, workers: int) -> Server:
    """A server whose batch runs when 4 rows are in (or after 5 s): 4 requests at once make one batch."""
    return start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", f"--workers={workers}",
        "--enable_batching", "--max_batch_size=4", "--batch_timeout_micros=5000000", "--drain_seconds=0",
    )  # fmt: skip


def test_batches_join_rows_from_requests_that_arrived_on_different_workers(
    model_root: Path, tmp_path: Path
) -> None:
    server = four_row_batches(model_root, tmp_path, workers=2)
    url = server.url + "/v1/models/linear:predict"

    def batches() -> tuple[float, float]:
        text = requests.get(server.url + "/metrics", timeout=5).text
        count = re.search(r'^modelservice_batch_size_count\{model="linear"\} (\S+)', text, re.M)
        total = re.search(r'^modelservice_batch_size_sum\{model="linear"\} (\S+)', text, re.M)
        return (float(count[1]), float(total[1])) if count and total else (0.0, 0.0)

    try:
        server.wait_ready()
        workers = set(server.processes()["workers"])
        for round_ in range(20):
            before = batches()
            answers: dict[str, float] = {}

            def send(i: int, round_: int = round_, answers: dict[str, float] = answers) -> None:
                value = float(round_ * 10 + i)
                r = requests.post(url, json={"instances": [[value, 0, 0, 0]]}, timeout=30,
                                  headers={"Connection": "close", "X-Request-ID": f"r{round_}-{i}"})  # fmt: skip
                assert r.json() == {"predictions": [[2 * value, 0.0, 0.0, 0.0]]}, r.text
                answers[f"r{round_}-{i}"] = value

            started = time.monotonic()
            threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert len(answers) == 4 and time.monotonic() - started < 4.0  # a full batch, not a timeout
            after = batches()
            assert (after[0] - before[0], after[1] - before[1]) == (1.0, 4.0)  # one batch of 4 rows

            def served_lines(entries: list[dict[str, Any]], round_: int = round_) -> list[dict[str, Any]]:
                return [
                    entry for entry in entries if entry.get("request_id", "").startswith(f"r{round_}-")
                    and entry.get("message", "").startswith("Served POST /v1/models/linear:predict")
                ]  # fmt: skip

            lines = served_lines(server.wait_for_log_entries(lambda entries: len(served_lines(entries)) == 4))
            served_by = {entry["pid"] for entry in lines}
            if served_by == workers:
                return
        raise AssertionError("the 4 connections never landed on both workers in 20 rounds")
    finally:
        stop(server)


def writes(pid: int) -> int:
    """The write(2) calls a process has made: its log lines' (sockets are written with sendto)."""
    return int(re.search(r"^syscw: (\d+)$", Path(f"/proc/{pid}/io").read_text(), re.M)[1])  # type: ignore[index]


def test_the_access_lines_of_requests_answered_in_one_batch_leave_in_one_write(
    model_root: Path, tmp_path: Path
) -> None:
    # One worker, and 4 requests make one batch: the model process answers them in one write, the worker
    # reads them at once and finishes all 4 in one turn of its event loop.
    server = four_row_batches(model_root, tmp_path, workers=1)
    url = server.url + "/v1/models/linear:predict"

    def send(i: int) -> None:
        r = requests.post(url, json={"instances": [[float(i), 0, 0, 0]]}, timeout=30,
                          headers={"Connection": "close", "X-Request-ID": f"burst-{i}"})  # fmt: skip
        assert r.json() == {"predictions": [[2.0 * i, 0.0, 0.0, 0.0]]}, r.text

    def burst_lines(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in entries if e.get("request_id", "").startswith("burst-") and e.get("status") == 200]

    try:
        server.wait_ready()
        [worker] = server.processes()["workers"]
        # The probes' lines leave at the end of their turns, maybe after their answers: once the last
        # probe's line is in the log, so are the others', and the count starts from there.
        requests.get(server.url + "/v2/health/live", headers={"X-Request-ID": "settled"}, timeout=10)
        server.wait_for_log_entries(lambda entries: any(e.get("request_id") == "settled" for e in entries))
        before = writes(worker)
        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        lines = burst_lines(server.wait_for_log_entries(lambda entries: len(burst_lines(entries)) == 4))
        assert sorted(line["request_id"] for line in lines) == [f"burst-{i}" for i in range(4)]
        assert writes(worker) - before == 1  # a write a line would be 4
    finally:
        stop(server)


def test_overload_sheds_by_queueing_delay_with_503_and_every_answer_is_json(
    model_root: Path, tmp_path: Path
) -> None:
    params = tmp_path / "batching.config"
    # One row per call on a model that computes for tens of milliseconds, two request threads: 30
    # clients keep a queue of about a second in front of the threads, far above the 50 ms target.
    params.write_text("max_batch_size { value: 1 }\nmax_enqueued_batches { value: 2 }\n"
                      "num_batch_threads { value: 1 }\n")  # fmt: skip
    server = start_server(
        tmp_path, "--model_name=slow", f"--model_base_path={model_root / 'slow'}", "--enable_batching",
        f"--batching_parameters_file={params}", "--workers=1", "--threads=2", "--max_queue_delay_ms=50",
        "--drain_seconds=0",
    )  # fmt: skip
    statuses: list[int] = []
    bodies: list[tuple[int, str]] = []
    served_latencies: list[float] = []
    url = server.url + "/v1/models/slow:predict"
    try:
        server.wait_ready()
        until = time.monotonic() + 4.0

        def client() -> None:
            with requests.Session() as session:
                while time.monotonic() < until:
                    sent = time.monotonic()
                    r = session.post(url, json={"instances": [[1, 2, 3, 4]]}, timeout=30)
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        served_latencies.append(time.monotonic() - sent)
                    else:
                        assert r.headers["Retry-After"] == "1"
                        bodies.append((r.status_code, r.json()["error"]))

        threads = [threading.Thread(target=client) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # A request that needs more batches than even an empty queue holds is refused whole, at once,
        # as bad input: no retry could get it served.
        too_big = requests.post(url, json={"instances": [[1, 2, 3, 4]] * 5}, timeout=30)
        assert requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200
        metrics = requests.get(server.url + "/metrics", timeout=5).text
    finally:
        stop(server)
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 10 and 503 in statuses
    # Refusals say why: the queue for threads stood above target, or the batch queue was full.
    assert all("Server overloaded" in b or "batch scheduling queue" in b for _, b in bodies)
    assert any("Server overloaded" in b for _, b in bodies)
    assert too_big.status_code == 400 and "Retry-After" not in too_big.headers
    assert too_big.json()["error"].startswith("Task size 5 is larger than maximum input batch size 2")
    assert re.search(r'^modelservice_requests_shed_total\{api="v1"\} [1-9]', metrics, re.M)


# ------------------------------------------------------------------------------------------ shutdown


@dataclass
class LoadRecord:
    ok_after_term: int = 0
    failures: list[str] = field(default_factory=list)
    refused_at: list[float] = field(default_factory=list)


def test_sigterm_under_load_drains_first_and_fails_no_in_flight_request(
    model_root: Path, tmp_path: Path
) -> None:
    params = tmp_path / "batching.config"
    # Requests wait up to 100 ms for their batch, so many are in flight when the workers stop.
    params.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 100000 }\n")
    drain = 1.5
    server = start_server(
        tmp_path, "--model_name=linear", f"--model_base_path={model_root / 'linear'}", "--enable_batching",
        f"--batching_parameters_file={params}", "--threads=24", f"--drain_seconds={drain}",
        "--graceful_timeout_seconds=20",
    )  # fmt: skip
    server.wait_ready()
    record = LoadRecord()
    term_at: list[float] = []
    stop_load = threading.Event()

    def client(seed: int) -> None:
        with requests.Session() as session:
            i = 0
            while not stop_load.is_set():
                i += 1
                value = float(seed * 10_000 + i)
                sent = time.monotonic()
                try:
                    r = session.post(server.url + "/v1/models/linear:predict",
                                     json={"instances": [[value, 0, 0, 0]]}, timeout=30)  # fmt: skip
                except requests.ConnectionError:
                    # Refused or closed: only acceptable once the workers stopped accepting.
                    record.refused_at.append(sent)
                    return
                if r.status_code != 200 or r.json()["predictions"] != [[2 * value, 0.0, 0.0, 0.0]]:
                    record.failures.append(f"{r.status_code} {r.text[:200]}")
                elif term_at and sent > term_at[0]:
                    record.ok_after_term += 1

    threads = [threading.Thread(target=client, args=(s,)) for s in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    term_at.append(time.monotonic())
    server.process.send_signal(signal.SIGTERM)
    # Readiness turns 503 while predictions still succeed.
    ready_status = None
    while time.monotonic() < term_at[0] + drain - 0.3:
        try:
            ready_status = requests.get(server.url + "/v2/health/ready", timeout=2).status_code
        except requests.ConnectionError:
            break
        if ready_status == 503:
            break
        time.sleep(0.05)
    assert server.process.wait(timeout=30) == 0, server.log()
    stop_load.set()
    for t in threads:
        t.join(timeout=30)
    assert ready_status == 503
    assert record.failures == []
    assert record.ok_after_term > 0  # kept serving while draining
    assert all(sent >= term_at[0] + drain - 0.2 for sent in record.refused_at), (
        "a request was refused before the drain period ended"
    )
    assert "Draining worker" in server.log()
