"""Libpq tools get only what they need, never the S3 secret.

pg_dump, pg_dumpall and pg_restore are replaced (through SLIPWAY_PG_BIN) by scripts that
record the environment they were given and then run the real tool, so the backup, the
drill and the restore still have to work.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.pg_fixtures import snapshot
from tests.test_backup_restore import Env
from tests.test_backup_restore import env as env  # the fixture, reused

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

TOOLS = ("pg_dump", "pg_dumpall", "pg_restore")
# The operator's libpq settings that reach the tools (the target itself comes from Slipway).
OPERATOR_LIBPQ = {"PGSSLROOTCERT": "/nonexistent/root.crt", "PGPASSFILE": "/nonexistent/pgpass"}


def shim_tools(real_bin: Path, bin_dir: Path, log_dir: Path) -> None:
    """Scripts named like the tools: each writes its environment to log_dir, then execs."""
    bin_dir.mkdir()
    log_dir.mkdir()
    for tool in TOOLS:
        script = bin_dir / tool
        script.write_text(
            f'#!/bin/sh\n/usr/bin/env -0 > "{log_dir}/{tool}.$$"\nexec "{real_bin / tool}" "$@"\n'
        )
        script.chmod(0o755)


def recorded(log_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Per tool, the environments its runs were given."""
    runs: dict[str, list[dict[str, str]]] = {tool: [] for tool in TOOLS}
    for path in sorted(log_dir.iterdir()):
        pairs = [item.split("=", 1) for item in path.read_text().split("\0") if item]
        runs[path.name.split(".")[0]].append(dict(pairs))
    return runs


def test_pg_tools_get_no_s3_secret_and_backups_still_work(env: Env, tmp_path: Path) -> None:
    log_dir = tmp_path / "envs"
    shim_tools(env.pg.bin_dir, tmp_path / "bin", log_dir)
    secret = env.vars["AWS_SECRET_ACCESS_KEY"]
    extra = {
        "SLIPWAY_PG_BIN": str(tmp_path / "bin"),
        "APP_API_TOKEN": "not-for-pg-tools",  # anything else the operator has set
        **OPERATOR_LIBPQ,
    }

    backup = json.loads(env.run("backup", "--globals", "--json", extra=extra, check=True).stdout)
    verified = json.loads(
        env.run("verify", backup["id"], "--drill", "--json", extra=extra, check=True).stdout
    )
    assert verified["ok"] is True
    target = f"restored_{secrets.token_hex(3)}"
    env.restore(backup["id"], target, extra=extra, check=True)
    assert snapshot(env.pg, target) == snapshot(env.pg, env.database)

    runs = recorded(log_dir)
    # Each tool really ran through its recording script (--version runs included).
    assert all(runs[tool] for tool in TOOLS), {t: len(r) for t, r in runs.items()}
    connected = 0
    for tool, envs in runs.items():
        for child in envs:
            leaked = [k for k, v in child.items() if secret in v]
            assert not leaked, f"{tool} got the S3 secret in {leaked}"
            assert not [k for k in child if k.startswith(("AWS_", "SLIPWAY_", "PREFECT_"))], (
                tool,
                sorted(child),
            )
            assert "APP_API_TOKEN" not in child
            assert "PATH" in child
            for key, value in OPERATOR_LIBPQ.items():
                assert child.get(key) == value, (tool, key)
            if "PGHOST" in child:
                connected += 1
                assert child["PGPORT"] == str(env.pg.port)
                assert child["PGPASSWORD"] == env.pg.password
    assert connected >= 4  # pg_dump, pg_dumpall, and the drill's and the restore's pg_restore
