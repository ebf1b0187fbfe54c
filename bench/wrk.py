"""Closed-loop runs with wrk (C, event-driven: it leaves the cores to the servers), counting by status.

wrk's own summary counts every response as a request; a Lua script counts statuses per thread so that
only 2xx answers count as served. Latency percentiles are wrk's over every response (when a run answers
anything but 2xx, the line says how many).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("WRK_AUTHORIZATION") then wrk.headers["Authorization"] = os.getenv("WRK_AUTHORIZATION") end
wrk.body = io.open(os.getenv("WRK_BODY"), "rb"):read()
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do merged[status] = (merged[status] or 0) + n end
  end
  local parts = {}
  for status, n in pairs(merged) do table.insert(parts, string.format('"%d": %d', status, n)) end
  io.write(string.format(
    'WRK_RESULT {"seconds": %f, "statuses": {%s}, "socket_errors": %d, "p50": %f, "p99": %f}\n',
    summary.duration / 1e6, table.concat(parts, ", "),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6))
end
"""


@dataclass
class Run:
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0
    p50: float = 0.0
    p99: float = 0.0
    # CPU seconds the server's processes spent per served request, by role (serving_bench fills it in)
    cpu_per_request: dict[str, float] = field(default_factory=dict)
    steal: float = 0.0  # CPU seconds the VM waited for its host during the run (serving_bench)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def not_ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)

    @property
    def served_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str, body: bytes, connections: int, seconds: float, threads: int = 2, authorization: str = ""
) -> Run:
    with tempfile.TemporaryDirectory(prefix="modelservice-wrk-") as work:
        script = Path(work) / "post.lua"
        script.write_text(SCRIPT)
        payload = Path(work) / "body"
        payload.write_bytes(body)
        done = subprocess.run(
            ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s",
             "-s", str(script), url],
            capture_output=True, text=True, check=True,
            env={"WRK_BODY": str(payload), "PATH": "/usr/bin:/bin",
                 **({"WRK_AUTHORIZATION": authorization} if authorization else {})},
        )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            data = json.loads(line.removeprefix("WRK_RESULT "))
            return Run(
                seconds=data["seconds"],
                statuses={int(k): v for k, v in data["statuses"].items()},
                socket_errors=data["socket_errors"],
                p50=data["p50"],
                p99=data["p99"],
            )
    raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
