"""With no Prefect server (no PREFECT_API_URL), commands share PREFECT_HOME's local API:
overlapping commands all succeed quietly, their runs stay in the local history, and the
API stops by itself once idle (deployments/local_api.py)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.commands import SLIPWAY, run
from tests.harness.postgres import PostgresInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

REPO = Path(__file__).resolve().parent.parent
SERVER_MODULE = b"deployments.local_api_server"
NOISE = ("Traceback", "telemetry", "temporary server", "database is locked", "uvicorn")
# The runs in the local history, as [flow name, state type], read through the shared API.
HISTORY = """
import json
from deployments.local_api import use_local_api
from prefect.client.orchestration import get_client

use_local_api(False)
with get_client(sync_client=True) as client:
    flows = {f.id: f.name for f in client.read_flows()}
    runs = client.read_flow_runs()
print(json.dumps([[flows.get(r.flow_id), r.state_type.value if r.state_type else None] for r in runs]))
"""

# Uses the shared API, sleeps, then says which server answers now.
HOLD = """
import json, os, sys, time, urllib.request
from pathlib import Path
from deployments.local_api import LocalApiFiles, read_state, use_local_api

url = use_local_api(False)
time.sleep(float(sys.argv[1]))
with urllib.request.urlopen(url + "/health", timeout=10) as answer:
    status = answer.status
state = read_state(LocalApiFiles(Path(os.environ["PREFECT_HOME"]).resolve())) or {}
print(json.dumps({"url": url, "status": status, "pid": state.get("pid")}))
"""


def _servers(home: Path) -> list[int]:
    """The pids of the local API servers serving `home` (found by their command and cwd)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (
                SERVER_MODULE in (proc / "cmdline").read_bytes()
                and Path(os.readlink(proc / "cwd")) == home.resolve()
            ):
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or a zombie
    return found


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh PREFECT_HOME; whatever still serves it afterwards is killed."""
    home = tmp_path / "prefect-home"
    yield home
    for pid in _servers(home):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def env(postgres: PostgresInfo, s3: S3Info, home: Path) -> dict[str, str]:
    bucket = f"backups-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    database = create_database(postgres)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PG", "DATABASE_URL", "SLIPWAY_", "PREFECT_"))
    }
    return {
        **base,
        **s3.env(),
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "DATABASE_URL": postgres.url_without_password(database),
        "PGPASSWORD": postgres.password,
        "SLIPWAY_BACKUP_URL": f"s3://{bucket}/nightly",
        "PREFECT_HOME": str(home),
        "SLIPWAY_LOCAL_API_IDLE_SECONDS": "8",
    }


def _history(env: dict[str, str]) -> list[list[str | None]]:
    proc = run([sys.executable, "-c", HISTORY], env)
    assert proc.returncode == 0, proc.stderr
    runs: list[list[str | None]] = json.loads(proc.stdout.splitlines()[-1])
    return runs


def _wait_stopped(home: Path) -> None:
    """Until no server serves `home` (bounded only so that a failure ends)."""
    deadline = time.monotonic() + 180
    while _servers(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _servers(home), (home / "slipway-api.log").read_text()
    assert not (home / "slipway-api.json").exists()


def test_four_backups_at_once_share_one_quiet_local_api(env: dict[str, str], home: Path) -> None:
    procs = [
        subprocess.Popen(
            [*SLIPWAY, "backup", "--json", *flags],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for flags in ([], [], [], ["-v"])
    ]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    for proc, out, err in results:
        assert proc.returncode == 0, err
        assert json.loads(out)["dump"]["size"] > 0
    for _, _, err in results[:3]:  # plain runs
        assert not [line for line in err.splitlines() if any(n in line for n in NOISE)], err
    verbose = results[3][2]  # says where the API, the history and its log are
    assert re.search(r"local Prefect API (started|shared) at http://127\.0\.0\.1:", verbose)
    assert str(home / "slipway-api.log") in verbose
    log = (home / "slipway-api.log").read_text()
    assert log.count(" serving ") == 1, log  # one server for the four
    assert (home / "prefect.db").exists()  # Prefect's own history file, as before

    runs = _history(env)
    assert [r for r in runs if r[0] == "backup-database"] == [["backup-database", "COMPLETED"]] * 4

    _wait_stopped(home)
    log = (home / "slipway-api.log").read_text()
    assert "Traceback" not in log, log

    # Started again on demand, on the same history.
    again = _history(env)
    assert [r for r in again if r[0] == "backup-database"] == [["backup-database", "COMPLETED"]] * 4
    _wait_stopped(home)


def _hold(env: dict[str, str], seconds: float) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", HOLD, str(seconds)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    answer: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return answer


def test_the_api_outlives_idle_periods_while_used_is_replaced_when_killed_and_private(
    env: dict[str, str], home: Path
) -> None:
    held = _hold(env | {"SLIPWAY_LOCAL_API_IDLE_SECONDS": "1"}, 6)
    assert held["status"] == 200  # six idle periods: only the command's lock kept it up
    _wait_stopped(home)

    first = _hold(env, 0)
    assert isinstance(first["pid"], int)
    os.kill(first["pid"], signal.SIGKILL)  # its URL file stays behind, stale
    second = _hold(env, 0)
    assert second["status"] == 200
    assert isinstance(second["pid"], int)
    assert second["pid"] != first["pid"]
    # Only this user's commands get in: the password is in a file only they can read.
    assert httpx.post(f"{second['url']}/flows/filter", json={}).status_code == 401
    assert (home / "slipway-api.json").stat().st_mode & 0o077 == 0
    os.kill(second["pid"], signal.SIGTERM)  # an operator's stop: it withdraws its URL
    _wait_stopped(home)
