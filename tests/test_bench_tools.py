"""The bench's measuring tools (no services needed)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.datagen import vocabulary
from bench.measure import (
    Measurement,
    best_interleaved,
    emit,
    ratio_record,
    run_measured,
    run_shell_measured,
)

# A grandchild that touches ~100 MB (bytearray() alone maps zero pages without using them).
GRANDCHILD = (
    "import time\n"
    "b = bytearray(100_000_000)\n"
    "for i in range(0, len(b), 4096):\n"
    "    b[i] = 1\n"
    "time.sleep(2)\n"  # long enough for the 50 ms sampler on a busy machine
)
CHILD = (
    f"import subprocess, sys; subprocess.run([sys.executable, '-c', {GRANDCHILD!r}], check=True)"
)


def test_peak_rss_counts_grandchildren() -> None:
    m = run_measured([sys.executable, "-c", CHILD])
    assert m.returncode == 0, m.stderr
    assert m.peak_rss_bytes >= 90_000_000
    assert m.peak_rss_mb >= 85


def test_wall_time_and_output() -> None:
    m = run_measured(["sleep", "0.3"])
    assert m.returncode == 0
    assert 0.3 <= m.seconds < 3
    m = run_measured(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (m.returncode, m.stdout, m.stderr) == (3, "out\n", "err\n")


def test_shell_pipeline_stdin_and_stdout_path(tmp_path: Path) -> None:
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("b\na\n")
    m = run_shell_measured("sort | tr a-z A-Z", stdin=source, stdout_path=target)
    assert m.returncode == 0, m.stderr
    assert (target.read_text(), m.stdout) == ("A\nB\n", "")
    assert run_shell_measured("false | cat").returncode != 0  # pipefail


def test_ratio_record_and_emit(capsys: pytest.CaptureFixture[str]) -> None:
    rec = ratio_record("backup", 7.0, "pg_dump", 5.0, 1.5, peak_rss_mb=12.5)
    assert rec == {
        "bench": "backup",
        "seconds": 7.0,
        "baseline": "pg_dump",
        "baseline_seconds": 5.0,
        "ratio": 1.4,
        "limit": 1.5,
        "ok": True,
        "peak_rss_mb": 12.5,
    }
    slow = ratio_record("backup", 2.0, "pg_dump", 3.0, 0.5)
    assert (slow["ratio"], slow["ok"]) == (0.667, False)
    with pytest.raises(ValueError, match="baseline"):
        ratio_record("backup", 1.0, "pg_dump", 0.0, 1.0)
    emit(rec)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == rec


def test_interleaved_runs_take_turns_and_keep_each_best() -> None:
    calls: list[str] = []

    def side(name: str, times: list[float]) -> Callable[[], Measurement]:
        def run() -> Measurement:
            calls.append(name)
            return Measurement(times.pop(0), 0, 0, "", "")

        return run

    a, b = best_interleaved(3, side("a", [3.0, 1.0, 2.0]), side("b", [5.0, 6.0, 4.0]))
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert (a.seconds, b.seconds) == (1.0, 4.0)


def test_vocabulary_is_fixed_and_zipf_ordered() -> None:
    words = vocabulary()
    assert words == vocabulary()
    assert len(words) == len(set(words)) > 5000
    assert words[0] == "the"


def test_ssh_runbook_phases_and_break_even_build() -> None:
    from bench.ssh_release_bench import break_even_build, runbook_phases

    out = "backup 100.0 100.5\nhost 10.200.1.2 100.5 116.0\nnoise\nhost 10.200.2.2 116.0 131.25\n"
    assert runbook_phases(out) == {"backup": 0.5, "10.200.1.2": 15.5, "10.200.2.2": 15.25}
    # runbook = 1 + 3 (B + 0.5), slipway = 6 + B + 2: 2x from B = 2 * 8 - 2.5 = 13.5.
    assert break_even_build(1 + 3 * 15.5, 8 + 15, 15, 3) == 13.5
    assert break_even_build(30.0, 1.0, 5, 3) == 0.0  # met whatever the build
    assert break_even_build(30.0, 10.0, 5, 2) is None  # two hosts: never 2x
