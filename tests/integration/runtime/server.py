"""Start ``modelservice-runtime`` under real Gunicorn on a free loopback port, and stop it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.loadgen import free_port


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def log_entries(self) -> list[dict[str, Any]]:
        """The server's JSON log lines, parsed (lines that are not JSON objects are left out)."""
        entries = []
        for line in self.log().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def wait_for_log_entries(
        self, wanted: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        """The log's entries once ``wanted`` holds for them. A worker writes the access-log lines of a turn
        of its event loop at the end of that turn, which may come just after a response has left."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.log_entries()
            if wanted(entries):
                return entries
            assert time.monotonic() < deadline, (
                f"the log never had the lines wanted in {timeout}s:\n{self.log()}"
            )
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 120) -> None:
        """Ready: the model process has loaded every model (the workers ask it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log()}"
            try:
                if requests.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or slow on a busy machine
                pass
            time.sleep(0.25)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log()}")

    def processes(self) -> dict[str, list[int]]:
        """The supervisor's process tree: its model process, Gunicorn's master and the workers."""
        children = descendants(self.process.pid)
        tree: dict[str, list[int]] = {"engine": [], "master": [], "workers": []}
        for pid, command in children.items():
            if parent_of(pid) != self.process.pid:
                continue
            if "modelservice_runtime.engine" in command:
                tree["engine"].append(pid)
            elif "modelservice_runtime.web" in command:
                tree["master"].append(pid)
        tree["workers"] = [pid for pid in children if parent_of(pid) in tree["master"]]
        return tree


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> command line."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parents[int(entry.name)] = parent_of(int(entry.name))
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        current = frontier.pop()
        for pid, parent in parents.items():
            if parent == current and pid not in found:
                try:
                    found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                frontier.append(pid)
    return found


def start_server(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    # Not the gRPC port a test picked a moment ago (free_port may hand it out again): both sockets set
    # SO_REUSEPORT, so both would bind it, and the kernel would split the connections between them.
    taken = {a.removeprefix("--port=") for a in args if a.startswith("--port=")}
    port = free_port()
    while str(port) in taken:
        port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if not any(a.startswith("--port=") for a in args):
        args = (*args, "--port=0")  # no gRPC unless a test asks for it: servers run side by side here
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelservice_runtime.cli", f"--rest_api_port={port}",
             "--rest_api_host=127.0.0.1", *args],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
    return Server(process, f"http://127.0.0.1:{port}", log_path)


@contextmanager
def served(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``start_server``, ready to serve, and stopped when the block ends."""
    server = start_server(tmp_path, *args, env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        stop(server)


def stop(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            return server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            return server.process.wait()
    return server.process.returncode


def tcp_sockets(pid: int, port: int, state: str) -> dict[int, int]:
    """The pid's TCP sockets on local ``port`` in ``state`` (/proc/net/tcp's hex code: 0A listening,
    01 established): inode -> the remote port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, st, inode = fields[1], fields[2], fields[3], int(fields[9])
            if st == state and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                found[inode] = int(remote.rsplit(":", 1)[1], 16)
    return found
