"""``bench.model_call`` on the bench's small model: a timed line per thread setting and batch size."""

from __future__ import annotations

import re

import pytest

from bench import model_call

pytestmark = pytest.mark.integration

LINE = re.compile(r"intra-op +(.+?)  batch +(\d+): wall +(\d+) us  CPU +(\d+) us")


def test_each_thread_setting_and_batch_size_gets_a_line_with_its_wall_and_cpu_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_call.main(["--batch", "1,4", "--threads", "0,1", "--calls", "5", "--runs", "1"])
    found = [LINE.search(line) for line in capsys.readouterr().out.splitlines()]
    rows = [m.groups() for m in found if m is not None]
    assert [(label, int(batch)) for label, batch, _, _ in rows] == [
        ("default (every core)", 1), ("default (every core)", 4), ("1 thread(s)", 1), ("1 thread(s)", 4),
    ]  # fmt: skip
    assert all(int(wall) > 0 and int(cpu) > 0 for _, _, wall, cpu in rows)
