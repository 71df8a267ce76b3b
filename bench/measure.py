"""Run a command and measure it: wall time and the peak summed RSS of its process tree.

Bench output is one JSON line per measurement (`emit`), e.g. {"bench": ..., "seconds": ...,
"peak_rss_mb": ..., "baseline": ..., "ratio": ...}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SAMPLE_INTERVAL = 0.05

Stdin = str | os.PathLike[str] | int | IO[Any] | None


@dataclass
class Measurement:
    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def peak_rss_mb(self) -> float:
        """Peak RSS in MiB, rounded to 0.1."""
        return round(self.peak_rss_bytes / 2**20, 1)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/*/stat."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name is in parentheses and may contain spaces and parentheses itself.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_bytes(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0  # a zombie or kernel thread has no VmRSS


def tree_rss_bytes(pid: int) -> int:
    """Summed VmRSS of `pid` and all its descendants."""
    children = _children()
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _rss_bytes(current)
        todo.extend(children.get(current, ()))
    return total


def run_measured(
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: Stdin = None,
    stdout_path: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Measurement:
    """Run `argv` to completion, sampling its process tree's RSS every 50 ms.

    `env` replaces the environment (as in subprocess). `stdin` is a path, a file or a
    descriptor; without it the command reads /dev/null. With `stdout_path` stdout goes to
    that file (e.g. /dev/null) and `Measurement.stdout` is empty.
    """
    # Captured output goes to temporary files, not pipes: nothing has to drain them while
    # the command runs, so a large output cannot block it.
    with contextlib.ExitStack() as stack:
        out_file = stack.enter_context(tempfile.TemporaryFile())
        err_file = stack.enter_context(tempfile.TemporaryFile())
        stdin_arg: int | IO[Any] = subprocess.DEVNULL
        if isinstance(stdin, str | os.PathLike):
            stdin_arg = stack.enter_context(open(stdin, "rb"))
        elif stdin is not None:
            stdin_arg = stdin
        stdout_arg: IO[bytes] = out_file
        if stdout_path is not None:
            stdout_arg = stack.enter_context(open(stdout_path, "wb"))
        started = time.perf_counter()
        # Its own process group, so an interrupted bench can kill the whole pipeline.
        proc = subprocess.Popen(
            argv,
            stdin=stdin_arg,
            stdout=stdout_arg,
            stderr=err_file,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        peak = 0
        try:
            while True:
                peak = max(peak, tree_rss_bytes(proc.pid))
                try:
                    proc.wait(timeout=SAMPLE_INTERVAL)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds = time.perf_counter() - started
        out_file.seek(0)
        err_file.seek(0)
        return Measurement(
            seconds=seconds,
            peak_rss_bytes=peak,
            returncode=proc.returncode,
            stdout=out_file.read().decode(errors="replace"),
            stderr=err_file.read().decode(errors="replace"),
        )


def run_shell_measured(
    script: str,
    *,
    env: Mapping[str, str] | None = None,
    stdin: Stdin = None,
    stdout_path: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Measurement:
    """`run_measured` for a bash script (pipelines), with pipefail so any stage's failure counts."""
    return run_measured(
        ["bash", "-c", "set -o pipefail\n" + script],
        env=env,
        stdin=stdin,
        stdout_path=stdout_path,
        cwd=cwd,
    )


def emit(record: Mapping[str, object]) -> None:
    """Print `record` as one JSON line, flushed at once."""
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def ratio_record(
    name: str,
    seconds: float,
    baseline_name: str,
    baseline_seconds: float,
    limit: float,
    **extra: object,
) -> dict[str, object]:
    """A bench record comparing `seconds` with a baseline's; ok when ratio <= limit.

    The ratio is rounded to 3 places and `ok` judges that rounded value, so the record agrees
    with itself.
    """
    if baseline_seconds <= 0:
        raise ValueError(f"baseline {baseline_name!r} took {baseline_seconds} s")
    ratio = round(seconds / baseline_seconds, 3)
    return {
        "bench": name,
        "seconds": round(seconds, 3),
        "baseline": baseline_name,
        "baseline_seconds": round(baseline_seconds, 3),
        "ratio": ratio,
        "limit": limit,
        "ok": ratio <= limit,
        **extra,
    }


def best(times: int, run: Callable[[], Measurement]) -> Measurement:
    """The fastest of `times` runs; a failed run stops the benchmark with its stderr."""
    runs = []
    for _ in range(times):
        m = run()
        if m.returncode != 0:
            raise SystemExit(f"bench command failed ({m.returncode}): {m.stderr[-2000:]}")
        runs.append(m)
    return min(runs, key=lambda m: m.seconds)


def best_interleaved(times: int, *runs: Callable[[], Measurement]) -> list[Measurement]:
    """The fastest run of each command, the commands taking turns (A B A B, not A A B B).

    On a shared VM a slow minute (another tenant, the kernel writing back) then slows both
    sides alike instead of whichever happened to run in it.
    """
    results: list[list[Measurement]] = [[] for _ in runs]
    for _ in range(times):
        for run, got in zip(runs, results, strict=True):
            got.append(best(1, run))
    return [min(got, key=lambda m: m.seconds) for got in results]
