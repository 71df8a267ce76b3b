"""The harness never leaves services behind: Ctrl-C, SIGTERM, and even SIGKILL of pytest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness.procs import reap_stale_sessions

REPO = Path(__file__).resolve().parent.parent


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"]
)
def test_interrupted_session_leaves_no_service_running(tmp_path: Path, sig: signal.Signals) -> None:
    marker = tmp_path / "marker.json"
    # Not under tmp_path: PostgreSQL runs as `postgres`, who cannot enter pytest's 0700 dirs.
    base = Path(tempfile.mkdtemp(prefix="slipway-interrupt-", dir="/tmp"))
    base.chmod(0o755)
    env = {**os.environ, "SLIPWAY_TEST_TMP": str(base), "SLIPWAY_INTERRUPT_MARKER": str(marker)}
    env.pop("PREFECT_API_URL", None)
    # Its own process group, like pytest in a terminal: Ctrl-C reaches the whole group.
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/interrupt_case.py"],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), child.communicate(timeout=30)[0].decode()[-3000:]
        state = json.loads(marker.read_text())
        assert len(state["pids"]) >= 2
        assert all(_group_alive(p) for p in state["pids"])

        os.killpg(child.pid, sig)
        child.wait(timeout=90)
        if sig is signal.SIGKILL:
            # Nothing could clean up; the next session's start reaps the leftovers.
            reaped = reap_stale_sessions(base)
            assert sorted(reaped) == ["postgres", "s3"]
        deadline = time.monotonic() + 10
        while any(_group_alive(p) for p in state["pids"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in state["pids"] if _group_alive(p)]
        assert not Path(state["session_dir"]).exists()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        reap_stale_sessions(base)
        shutil.rmtree(base, ignore_errors=True)
