"""Runtime throughput and latency, side by side with its peers and the HTTP ceiling, in one run.

    make bench            (or: .venv/bin/python -m bench.serving_bench --seconds 10)

On the same SavedModels and machine it starts
  - ``hello``: Flask under Gunicorn gthread with no model (bench/hello_server.py): the HTTP ceiling
    #15 names;
  - ``hello-gevent``: the same on Gunicorn's gevent worker, ours' worker class: its own HTTP ceiling;
  - ``hello+ipc``: that, plus one round trip per request to a model process that runs no model
    (bench/echo_engine.py): the ceiling of any one-model-process design on this machine;
  - ``naive``: the one-model-call-per-request Flask app of most tutorials (bench/naive_server.py),
    Gunicorn sync workers, 2 x cores + 1 of them;
  - ``kserve``: KServe's Python ModelServer with its defaults (bench/kserve_server.py, in .venv-kserve;
    skipped with a note when that venv is missing: scripts/bench-deps.sh builds it);
  - ``ours``: modelservice-runtime with its defaults;
and drives each with wrk (closed loop, keep-alive; only 2xx answers count as served), then prints
ratios. On the small model the servers run at once, side by side, and are measured in ``--rounds``
rounds of each in turn; each ratio is the median of the rounds' ratios, because this machine's speed
drifts by tens of percent over minutes (the guards are measured the same way). Two models: a small
dense one (32 -> 256 -> 256 -> 10, single-row requests, the case of most online tabular models) and a
large one (128 -> 4096 x 3 -> 10, where batching pays), with the in-process ceiling of the large one
(model calls per second, no HTTP), an open-loop overload run at twice each server's throughput, and the
RSS of every process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from bench import loadgen, wrk

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "bench-key-0123456789abcdef"
GUARDS = ("ours", "ours+key", "ours+tls", "ours+limit", "ours+cache", "ours+all")


def build_model(directory: Path, features: int, hidden: int, layers: int, name: str = "bench") -> Path:
    """A Keras MLP exported as a SavedModel version directory (deterministic weights)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((features,), name="x")]
        + [keras.layers.Dense(hidden, activation="relu") for _ in range(layers)]
        + [keras.layers.Dense(10, activation="softmax")]
    )
    model.predict(np.zeros((1, features), np.float32), verbose=0)
    path = directory / name / "1"
    model.export(str(path), verbose=False)
    return path


def ceiling(model_dir: Path, features: int, batch_sizes: list[int], seconds: float) -> dict[int, float]:
    """Model calls per second at each batch size, in a fresh process, as the runtime calls the model."""
    code = f"""
import json, sys, time
import numpy as np, tensorflow as tf
fn = tf.saved_model.load({str(model_dir)!r}).signatures["serving_default"]
out = {{}}
for size in {batch_sizes!r}:
    x = np.random.default_rng(0).random((size, {features}), dtype=np.float32)
    for _ in range(20):
        fn(x=tf.constant(x)).popitem()[1].numpy()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < {seconds}:
        fn(x=tf.constant(x)).popitem()[1].numpy()
        calls += 1
    out[size] = calls / (time.perf_counter() - start)
print(json.dumps(out))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    helper: subprocess.Popen[bytes] | None = None  # hello+ipc's model process
    scheme: str = "http"  # https for the TLS guard
    authorization: str = ""  # the API key guard's header

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def wait_ready(self, probe: tuple[str, bytes], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}")
            try:
                headers = {"Content-Type": "application/json"}
                if self.authorization:
                    headers["Authorization"] = self.authorization
                url = f"{self.base}{probe[0]}"
                if requests.post(url, data=probe[1], headers=headers, timeout=5, verify=False).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} did not become ready in {timeout}s")

    def processes(self) -> list[tuple[int, str]]:
        """Every process of the server (its process tree, and hello+ipc's model process) with its role."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        tree, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            current = frontier.pop()
            children = [pid for pid, parent in parents.items() if parent == current]
            tree += children
            frontier += children
        if self.helper is not None:
            tree.append(self.helper.pid)
        found = []
        for pid in tree:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found.append((pid, role(command, pid == self.process.pid, parents.get(pid) == self.process.pid)))
        return found

    def rss_mib(self) -> list[tuple[str, float]]:
        """Peak RSS (VmHWM) of every process of the server, with its role."""
        peaks = []
        for pid, role_name in self.processes():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
            peaks.append((role_name, kib / 1024))
        return peaks

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by the server's processes, summed by role."""
        tick = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for pid, role_name in self.processes():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[role_name] = used.get(role_name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return used

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.helper is not None and self.helper.poll() is None:
            self.helper.kill()
            self.helper.wait()


def role(command: str, root: bool, child_of_root: bool) -> str:
    if "modelservice_runtime.engine" in command or "echo_engine" in command:
        return "model process"
    if "modelservice-runtime" in command or "modelservice_runtime.cli" in command:
        return "supervisor"
    if "modelservice_runtime.web" in command:
        return "gunicorn master" if child_of_root else "http worker"
    if "gunicorn" in command:
        return "gunicorn master" if root else "http worker"
    return "server"


def start(name: str, command: list[str], port: int, env: dict[str, str], log: Path) -> Server:
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return Server(name, process, port)


def body(rows: int, features: int) -> bytes:
    import numpy as np

    values = np.random.default_rng(rows).random((rows, features)).round(4)
    return json.dumps({"instances": values.tolist()}).encode()


@dataclass
class Peers:
    """How each server is started, for one model (``model_dir`` is its version directory)."""

    work: Path
    env: dict[str, str]
    args: argparse.Namespace

    def command(self, name: str, model_dir: Path, port: int) -> list[str] | None:
        bin_dir = Path(sys.executable).parent
        cores = os.cpu_count() or 1
        if name in ("hello", "hello-gevent", "hello+ipc"):
            # --reuse-port as ours (gunicorn_conf.py): each worker its own socket, so that the ceiling
            # is not measured on a run whose connections all landed on one worker. `hello` is #15's
            # ceiling (gthread, 8 threads); `hello-gevent` and `hello+ipc` run on ours' worker class.
            worker = ["-k", "gthread", "--threads=8"] if name == "hello" else ["-k", "gevent"]
            return [str(bin_dir / "gunicorn"), *worker, f"-w{cores}", "--reuse-port",
                    f"--bind=127.0.0.1:{port}", "bench.hello_server:app"]  # fmt: skip
        if name == "naive":
            return [str(bin_dir / "gunicorn"), "--worker-class=sync", f"--workers={2 * cores + 1}",
                    f"--bind=127.0.0.1:{port}", "bench.naive_server:app"]  # fmt: skip
        if name == "kserve":
            python = ROOT / ".venv-kserve" / "bin" / "python"
            if not python.exists():
                return None
            return [str(python), "-m", "bench.kserve_server", f"--http_port={port}", "--grpc_port=0"]
        if name == "ours" or name.startswith("ours+"):
            return [str(bin_dir / "modelservice-runtime"), f"--model_name={model_dir.parent.name}",
                    f"--model_base_path={model_dir.parent}", f"--rest_api_port={port}",
                    "--rest_api_host=127.0.0.1", "--drain_seconds=0", f"--port={loadgen.free_port()}",
                    *self.args.ours_flag,
                    *self.guard_flags(name)]  # fmt: skip
        raise ValueError(name)

    def guard_flags(self, name: str) -> list[str]:
        """Each guard of #16 on its own (and all but the cache together), as a user would turn it on."""
        flags: list[str] = []
        guards = name.removeprefix("ours").split("+")
        if "key" in guards or "all" in guards:
            keys = self.work / "api-keys"
            keys.mkdir(exist_ok=True)
            (keys / "bench").write_text(BENCH_KEY)
            flags.append(f"--api_keys_dir={keys}")
        if "tls" in guards or "all" in guards:
            cert, key = self.work / "tls.crt", self.work / "tls.key"
            if not cert.exists():
                from tests.tlsutil import CertificateAuthority

                CertificateAuthority(self.work, "bench CA").issue(cert, key)
            flags += [f"--tls_cert_file={cert}", f"--tls_key_file={key}"]
        if "limit" in guards or "all" in guards:
            flags.append(
                "--rate_limit_requests_per_second=1000000"
            )  # never refuses: its cost, not its effect
        if "cache" in guards:
            flags.append("--response_cache_bytes=67108864")
        return flags

    def start(self, name: str, model_dir: Path) -> Server | None:
        port = loadgen.free_port()
        command = self.command(name, model_dir, port)
        if command is None:
            return None
        env = dict(self.env, MODEL_DIR=str(model_dir))
        helper = None
        if name == "hello+ipc":
            socket_path = str(self.work / "echo.sock")
            helper = subprocess.Popen(
                [sys.executable, "-m", "bench.echo_engine", socket_path], env=env, cwd=ROOT
            )
            env["MODELSERVICE_BENCH_ECHO_SOCKET"] = socket_path
            deadline = time.monotonic() + 30
            while not Path(socket_path).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        server = start(name, command, port, env, self.work / f"{name}-{model_dir.parent.name}.log")
        server.helper = helper
        guards = name.removeprefix("ours").split("+")
        if "tls" in guards or "all" in guards:
            server.scheme = "https"
        if "key" in guards or "all" in guards:
            server.authorization = f"Bearer {BENCH_KEY}"
        return server


def probe(model_dir: Path, features: int) -> tuple[str, bytes]:
    return (f"/v1/models/{model_dir.parent.name}:predict", body(1, features))


def closed(server: Server, model_dir: Path, rows: int, features: int, connections: int,
           args: argparse.Namespace) -> wrk.Run:  # fmt: skip
    url = f"{server.base}/v1/models/{model_dir.parent.name}:predict"
    payload = body(rows, features)
    wrk.run(url, payload, connections, args.warmup, authorization=server.authorization)
    before, stolen = server.cpu_seconds(), steal()
    result = wrk.run(url, payload, connections, args.seconds, authorization=server.authorization)
    after, result.steal = server.cpu_seconds(), steal() - stolen
    if result.ok:
        result.cpu_per_request = {
            name: (used - before.get(name, 0.0)) / result.ok for name, used in after.items() if used > 0
        }
    return result


def steal() -> float:
    """CPU seconds this VM's cores have waited for the host so far (``steal`` in /proc/stat): when it
    grows during a run, the host was busy and that run is slower for it."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def run_line(label: str, result: wrk.Run, rows: int, ceiling_rps: float | None = None) -> str:
    rps = result.served_per_second
    text = (
        f"  {label:<12} {rps:9.1f} req/s {rps * rows:9.0f} rows/s  p50 {result.p50 * 1000:7.2f} ms"
        f"  p99 {result.p99 * 1000:7.2f} ms  non-2xx {result.not_ok}"
    )
    if result.socket_errors:
        text += f"  socket errors {result.socket_errors}"
    if ceiling_rps:
        text += f"  ({rps / ceiling_rps:.0%} of hello)"
    return text


def ratio(ours: float, other: float) -> str:
    return f"{ours / other:.2f}x" if other > 0 else "n/a"


def rss_lines(name: str, server: Server) -> list[str]:
    by_role: dict[str, list[float]] = {}
    for role_name, mib in server.rss_mib():
        by_role.setdefault(role_name, []).append(mib)
    parts = [
        f"{r} {len(v)} x " + "/".join(f"{m:.0f}" for m in v) + " MiB" for r, v in sorted(by_role.items())
    ]
    total = sum(sum(v) for v in by_role.values())
    return [f"  {name:<10} total {total:6.0f} MiB: " + "; ".join(parts)]


def overload_line(name: str, rate: float, result: loadgen.Result) -> str:
    sent = result.ok + result.shed + result.errors
    text = (
        f"  {name:<6} offered {rate:6.0f} req/s: served {result.ok / result.seconds:6.1f} req/s, "
        f"p50 {loadgen.percentile(result.latencies, 50) * 1000:8.1f} ms, "
        f"p99 {loadgen.percentile(result.latencies, 99) * 1000:8.1f} ms; "
    )
    if result.shed:
        codes = ", ".join(
            f"{code}: {result.statuses[code]}" for code in (429, 503) if code in result.statuses
        )
        text += (
            f"refused {result.shed} of {sent} ({codes}) in p50 "
            f"{loadgen.percentile(result.rejected_latencies, 50) * 1000:.1f} ms, p99 "
            f"{loadgen.percentile(result.rejected_latencies, 99) * 1000:.1f} ms; "
        )
    else:
        text += f"refused none of {sent}; "
    return text + f"errors {result.errors}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before each run")
    parser.add_argument("--connections", type=int, default=32, help="connections of the single-row runs")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the side-by-side runs: the small model's peers, the guards (each server once a round)")  # fmt: skip
    parser.add_argument("--many-connections", type=int, default=128, help="the many-clients run")
    parser.add_argument("--batch-rows", type=int, default=64, help="rows per request in the batch runs")
    parser.add_argument("--batch-connections", type=int, default=8, help="connections of the batch runs")
    parser.add_argument("--overload-connections", type=int, default=256,
                        help="connections of the open-loop overload run")  # fmt: skip
    parser.add_argument("--ours-flag", action="append", default=[],
                        help="a flag for our runtime (repeatable; default: none, its defaults)")  # fmt: skip
    parser.add_argument("--skip-large", action="store_true", help="only the small model")
    parser.add_argument("--skip-guards", action="store_true", help="no runs with authentication, TLS, ...")
    args = parser.parse_args(argv)
    if not wrk.available():
        raise SystemExit("wrk is not installed: run scripts/bench-deps.sh (or apt-get install wrk)")
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # readiness probes of the TLS guard

    work = Path(tempfile.mkdtemp(prefix="modelservice-bench-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")  # fmt: skip
    print(
        f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.serving_bench', *(argv or sys.argv[1:])])}"
    )
    small = build_model(work, 32, 256, 2, name="small")
    large = None if args.skip_large else build_model(work, 128, 4096, 3, name="large")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    peers = Peers(work, env, args)
    report = run_small(peers, small, args)
    if not args.skip_guards:
        run_guards(peers, small, args)
    if large is not None:
        run_large(peers, large, args, work)
    print()
    print("peak RSS (VmHWM) per process")
    for line_ in report:
        print(line_)
    return 0


def serving(peers: Peers, name: str, model_dir: Path, features: int) -> Server | None:
    server = peers.start(name, model_dir)
    if server is None:
        return None
    try:
        server.wait_ready(probe(model_dir, features))
    except BaseException:
        server.stop()
        raise
    return server


SMALL_PEERS = ("hello", "hello-gevent", "hello+ipc", "naive", "kserve", "ours")


@contextlib.contextmanager
def all_serving(peers: Peers, names: Sequence[str], model_dir: Path) -> Iterator[dict[str, Server]]:
    """The servers, all started at once and side by side (idle ones cost no CPU), stopped at the end."""
    servers: dict[str, Server] = {}
    try:
        for name in names:
            server = serving(peers, name, model_dir, 32)
            if server is None:
                print(f"  {name:<12} skipped: .venv-kserve is missing (scripts/bench-deps.sh builds it)")
                continue
            servers[name] = server
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def in_rounds(
    servers: dict[str, Server], model_dir: Path, args: argparse.Namespace
) -> dict[str, list[wrk.Run]]:
    """``--rounds`` rounds, each running every server once in turn. This machine's speed drifts by tens
    of percent from one minute to the next, so ratios are taken within a round (see ``per_round``)."""
    runs: dict[str, list[wrk.Run]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, server in servers.items():
            runs[name].append(closed(server, model_dir, 1, 32, args.connections, args))
    return runs


def median_run(runs: list[wrk.Run]) -> wrk.Run:
    return sorted(runs, key=lambda run: run.served_per_second)[len(runs) // 2]


def per_round(runs: list[wrk.Run], others: list[wrk.Run] | None, p99: bool = False) -> str:
    """The median over the rounds of runs / others (served throughput, or p99), each within one round."""
    if not others:
        return "n/a"
    values = sorted(
        (a.p99 / b.p99) if p99 else (a.served_per_second / b.served_per_second)
        for a, b in zip(runs, others, strict=True)
        if (b.p99 if p99 else b.served_per_second) > 0
    )
    return f"{values[len(values) // 2]:.2f}x" if values else "n/a"


def rounds_line(name: str, runs: list[wrk.Run], ceiling_rps: float | None = None) -> str:
    return (
        run_line(name, median_run(runs), 1, ceiling_rps)
        + "  runs "
        + "/".join(f"{run.served_per_second:.0f}" for run in runs)
        + "  steal "
        + "/".join(f"{run.steal / (run.seconds * (os.cpu_count() or 1)):.0%}" for run in runs)
    )


CPU_ROLES = ("http worker", "server", "model process")


def cpu_line(name: str, runs: list[wrk.Run]) -> str:
    """The CPU each served request cost the server's processes in its median run, by role (the gunicorn
    master and our supervisor use next to none)."""
    cpu = median_run(runs).cpu_per_request
    parts = [f"{r} {cpu[r] * 1e6:4.0f} us" for r in CPU_ROLES if cpu.get(r, 0.0) * 1e6 >= 0.5]
    return f"  {name:<12} {sum(cpu.values()) * 1e6:5.0f} us: " + ", ".join(parts)


def run_small(peers: Peers, model_dir: Path, args: argparse.Namespace) -> list[str]:
    print("model:   small, MLP 32->256->256->10")
    print()
    print(
        f"small model, single-row requests, {args.connections} connections, {args.seconds:.0f} s each, "
        f"{args.rounds} rounds of every server in turn (wrk); each server's median run"
    )
    rss: list[str] = []
    with all_serving(peers, SMALL_PEERS, model_dir) as servers:
        runs = in_rounds(servers, model_dir, args)
        hello_rps = median_run(runs["hello"]).served_per_second
        for name in servers:
            print(rounds_line(name, runs[name], hello_rps))
        print("  CPU per served request, by process role (median runs; /proc/<pid>/stat)")
        for name in servers:
            print(cpu_line(name, runs[name]))
        many = closed(servers["ours"], model_dir, 1, 32, args.many_connections, args)
        print(run_line(f"ours c{args.many_connections}", many, 1, hello_rps), flush=True)
        for name in ("naive", "kserve", "ours"):
            if name in servers:
                rss += rss_lines(f"{name} (small)", servers[name])
    ours = runs["ours"]
    print(
        f"  ours/hello {per_round(ours, runs['hello'])}, ours/hello-gevent {per_round(ours, runs['hello-gevent'])}, "
        f"ours/hello+ipc {per_round(ours, runs['hello+ipc'])}, "
        f"ours/naive {per_round(ours, runs['naive'])}, ours/kserve {per_round(ours, runs.get('kserve'))}; "
        f"p99 ours/naive {per_round(ours, runs['naive'], p99=True)} (lower is better); "
        "each ratio the median of the rounds' ratios"
    )
    return rss


def run_guards(peers: Peers, model_dir: Path, args: argparse.Namespace) -> None:
    """What each guard costs when on: the small model's single-row run, ours alone and with each guard,
    side by side in rounds as above. The cache run repeats one body, so every request after the first is
    a hit (its best case)."""
    print()
    print(
        f"guards (#16): small model, single-row requests, {args.connections} connections, {args.seconds:.0f} s "
        f"each, {args.rounds} rounds; each server's median run"
    )
    with all_serving(peers, GUARDS, model_dir) as servers:
        runs = in_rounds(servers, model_dir, args)
    for name in GUARDS:
        print(rounds_line(name, runs[name]), flush=True)
    print("  CPU per served request, by process role (median runs)")
    for name in GUARDS:
        print(cpu_line(name, runs[name]))
    print("  " + ", ".join(f"{name.removeprefix('ours+')} {per_round(runs[name], runs['ours'])}"
                           for name in GUARDS[1:]) + " of ours without guards")  # fmt: skip


def run_large(peers: Peers, model_dir: Path, args: argparse.Namespace, work: Path) -> None:
    print()
    print("model:   large, MLP 128->4096->4096->4096->10")
    rows = args.batch_rows
    single: dict[str, wrk.Run] = {}
    batched: dict[str, wrk.Run] = {}
    overload: dict[str, tuple[float, loadgen.Result]] = {}
    for name in ("naive", "ours"):
        server = serving(peers, name, model_dir, 128)
        assert server is not None
        try:
            single[name] = closed(server, model_dir, 1, 128, args.connections, args)
            batched[name] = closed(server, model_dir, rows, 128, args.batch_connections, args)
            rate = 2 * single[name].served_per_second
            result = loadgen.open_loop("127.0.0.1", server.port, f"/v1/models/{model_dir.parent.name}:predict",
                                       body(1, 128), rate, args.seconds, args.overload_connections)  # fmt: skip
            overload[name] = (rate, result)
        finally:
            server.stop()
    print()
    print(f"large model, single-row requests, {args.connections} connections (wrk)")
    for name, run in single.items():
        print(run_line(name, run, 1))
    print(f"  ours/naive {ratio(single['ours'].served_per_second, single['naive'].served_per_second)}")
    print()
    print(f"large model, {rows}-row requests, {args.batch_connections} connections (wrk)")
    for name, run in batched.items():
        print(run_line(name, run, rows))
    sizes = [1, rows]
    calls = ceiling(model_dir, 128, sizes, seconds=max(2.0, args.seconds / 3))
    print("  in-process ceiling (model calls, no HTTP; separate process): "
          + ", ".join(f"batch {n}: {calls[n]:.1f} calls/s = {calls[n] * n:.0f} rows/s" for n in sizes))  # fmt: skip
    ours_rows = batched["ours"].served_per_second * rows
    print(f"  ours at {rows}-row requests: {ours_rows / (calls[rows] * rows):.0%} of the ceiling's rows/s")
    print()
    print(f"overload: open loop at 2x each server's single-row throughput, {args.overload_connections} "
          f"connections, {args.seconds:.0f} s; latency counts from each request's due time")  # fmt: skip
    for name, (rate, result) in overload.items():
        print(overload_line(name, rate, result))


if __name__ == "__main__":
    sys.exit(main())
