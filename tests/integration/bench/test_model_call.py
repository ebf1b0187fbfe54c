"""``bench.model_call`` on the bench's small model: a timed line per thread setting, kernels and batch size."""

from __future__ import annotations

import re

import pytest

from bench import model_call

pytestmark = pytest.mark.integration

LINE = re.compile(r"intra-op +(.+?)  oneDNN (on|off) +batch +(\d+): wall +(\d+) us  CPU +(\d+) us")


def test_each_thread_setting_kernels_and_batch_size_get_a_line_with_their_wall_and_cpu_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_call.main(
        ["--batch", "1,4", "--threads", "0,1", "--onednn", "on,off", "--calls", "5", "--runs", "1"]
    )
    found = [LINE.search(line) for line in capsys.readouterr().out.splitlines()]
    rows = [m.groups() for m in found if m is not None]
    assert [(label, kernels, int(batch)) for label, kernels, batch, _, _ in rows] == [
        (label, kernels, batch)
        for label in ("default (every core)", "1 thread(s)") for kernels in ("on", "off") for batch in (1, 4)
    ]  # fmt: skip
    assert all(int(wall) > 0 and int(cpu) > 0 for _, _, _, wall, cpu in rows)


def test_kernels_other_than_on_or_off_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        model_call.main(["--onednn", "maybe"])
    assert "--onednn: on, off or on,off, not maybe" in capsys.readouterr().err
