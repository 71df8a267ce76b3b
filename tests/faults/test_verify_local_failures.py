"""Only damage to a backup marks it as not verified.

A failure on the verifying side (the scratch database dropped mid-drill, the PostgreSQL
server unreachable, a TMPDIR too small) fails the run with one line and leaves the
backup's verification.json as it was. A damaged backup (a flipped byte, row counts that
differ) still records ok=false.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zstandard

from tests.harness.procs import free_port
from tests.s3_fault_proxy import fault_proxy
from tests.test_backup_restore import Env, _keys, _one_line_error
from tests.test_backup_restore import env as env  # the fixture, reused

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]


def verified_backup(env: Env, *flags: str) -> tuple[str, bytes]:
    """A new backup that passed `verify` (with flags), and its verification.json as stored."""
    backup_id = json.loads(env.run("backup", "--json", check=True).stdout)["id"]
    assert json.loads(env.run("verify", backup_id, *flags, "--json", check=True).stdout)["ok"]
    return backup_id, verification(env, backup_id)


def verification(env: Env, backup_id: str) -> bytes:
    key = next(k for k in _keys(env) if k.endswith(f"/{backup_id}/verification.json"))
    return env.client().get_object(Bucket=env.bucket, Key=key)["Body"].read()


def local_failure(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    return _one_line_error(proc, "could not run here", "unchanged")


def dropping_pg_restore(env: Env, bin_dir: Path, stage: str, when: str) -> Path:
    """A pg_restore that drops the drill's scratch database before or after one stage."""
    bin_dir.mkdir()
    marker = bin_dir / "dropped"
    real = env.pg.bin_dir
    script = bin_dir / "pg_restore"
    script.write_text(
        f"""#!/bin/sh
case " $* " in
  *" --section=pre-data "*) stage=schema ;;
  *" --section=data "*) stage=data ;;
  *) stage=other ;;
esac
drop() {{
  case "$PGDATABASE" in
    slipway_drill_*) "{real}/psql" -X -q -d postgres \\
      -c "DROP DATABASE \\"$PGDATABASE\\" WITH (FORCE)" && touch "{marker}" ;;
  esac
}}
if [ "$stage" = "{stage}" ] && [ "{when}" = before ]; then drop; fi
if [ "$stage" = "{stage}" ] && [ "{when}" = after ]; then
  "{real}/pg_restore" "$@"; code=$?; drop; exit $code
fi
exec "{real}/pg_restore" "$@"
"""
    )
    script.chmod(0o755)
    return marker


@pytest.mark.parametrize(
    ("stage", "when"),
    [("schema", "before"), ("data", "before"), ("data", "after")],
    ids=["before-schema", "before-data", "before-row-counts"],
)
def test_scratch_database_dropped_during_drill_keeps_verdict(
    env: Env, tmp_path: Path, stage: str, when: str
) -> None:
    backup_id, before = verified_backup(env, "--drill")
    marker = dropping_pg_restore(env, tmp_path / "bin", stage, when)

    proc = env.run("verify", backup_id, "--drill", extra={"SLIPWAY_PG_BIN": str(tmp_path / "bin")})

    assert marker.exists(), "the scratch database was never dropped"
    assert verification(env, backup_id) == before
    local_failure(proc)


def test_scratch_database_dropped_by_another_session_keeps_verdict(env: Env) -> None:
    backup_id, before = verified_backup(env, "--drill")
    dropped: list[str] = []
    stop = threading.Event()

    def drop_drills() -> None:
        with psycopg.connect(env.pg.url(), autocommit=True) as conn:
            while not stop.wait(0.01):
                rows = conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'slipway\\_drill\\_%'"
                ).fetchall()
                for (name,) in rows:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    dropped.append(name)

    dropper = threading.Thread(target=drop_drills, daemon=True)
    dropper.start()
    try:
        proc = env.run("verify", backup_id, "--drill")
    finally:
        stop.set()
        dropper.join()

    assert dropped, "the drill's scratch database was never seen"
    assert verification(env, backup_id) == before
    local_failure(proc)


def test_unreachable_server_during_drill_keeps_verdict(env: Env) -> None:
    backup_id, before = verified_backup(env, "--drill")
    closed_port = free_port()
    url = env.vars["DATABASE_URL"].replace(f":{env.pg.port}/", f":{closed_port}/")

    proc = env.run("verify", backup_id, "--drill", extra={"DATABASE_URL": url})

    assert verification(env, backup_id) == before
    assert "cannot reach PostgreSQL" in local_failure(proc)


@pytest.fixture
def tiny_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: far too small for the drill's archive."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_tmpdir_during_drill_keeps_verdict(env: Env, tiny_tmpdir: Path) -> None:
    backup_id, before = verified_backup(env, "--drill")

    proc = env.run("verify", backup_id, "--drill", extra={"TMPDIR": str(tiny_tmpdir)})

    assert verification(env, backup_id) == before
    assert "TMPDIR" in local_failure(proc)


def test_flipped_byte_still_records_not_verified(env: Env) -> None:
    backup_id, _ = verified_backup(env)
    client = env.client()
    key = next(k for k in _keys(env) if k.endswith(".zst") and f"/{backup_id}/" in k)
    body = bytearray(client.get_object(Bucket=env.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=env.bucket, Key=key, Body=bytes(body))

    _one_line_error(env.run("verify", backup_id), "damaged", "checksum")

    recorded = json.loads(verification(env, backup_id))
    assert recorded["ok"] is False
    assert "checksum" in recorded["detail"]
    listed = json.loads(env.run("backups", "list", "--json", check=True).stdout)
    assert listed[0]["verified"] is False


def test_row_counts_that_differ_still_record_not_verified(env: Env) -> None:
    backup_id, _ = verified_backup(env)
    client = env.client()
    key = next(k for k in _keys(env) if k.endswith(f"/{backup_id}/manifest.json"))
    manifest = json.loads(client.get_object(Bucket=env.bucket, Key=key)["Body"].read())
    users = next(t for t in manifest["tables"] if t["table"] == "users")
    users["rows"] += 1  # the manifest no longer matches what the dump holds
    client.put_object(Bucket=env.bucket, Key=key, Body=json.dumps(manifest).encode())

    _one_line_error(env.run("verify", backup_id, "--drill"), "differs", "app.users")

    recorded = json.loads(verification(env, backup_id))
    assert recorded["ok"] is False
    assert recorded["drill"] is True


def edit_manifest(env: Env, backup_id: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the stored manifest of `backup_id` with `change` applied."""
    client = env.client()
    key = next(k for k in _keys(env) if k.endswith(f"/{backup_id}/manifest.json"))
    manifest = json.loads(client.get_object(Bucket=env.bucket, Key=key)["Body"].read())
    change(manifest)
    client.put_object(Bucket=env.bucket, Key=key, Body=json.dumps(manifest).encode())


def test_unreadable_archive_still_records_not_verified(env: Env) -> None:
    """Stored bytes that match their checksum but are no archive: damage, not a local fault."""
    backup_id, _ = verified_backup(env)
    body = zstandard.ZstdCompressor().compress(b"PGDMP but not really a dump" * 100)

    def replace_dump(manifest: dict[str, Any]) -> None:
        env.client().put_object(Bucket=env.bucket, Key=manifest["dump"]["key"], Body=body)
        manifest["dump"].update(size=len(body), sha256=hashlib.sha256(body).hexdigest())

    edit_manifest(env, backup_id, replace_dump)

    _one_line_error(env.run("verify", backup_id), "damaged", "pg_restore cannot read")

    recorded = json.loads(verification(env, backup_id))
    assert recorded["ok"] is False


def test_pg_restore_older_than_the_backup_keeps_verdict(env: Env) -> None:
    """An old local client cannot judge a newer archive: a local failure, not damage."""
    backup_id, before = verified_backup(env)
    # As if made by a pg_dump newer than any here.
    edit_manifest(env, backup_id, lambda manifest: manifest.update(pg_dump_version="99.1"))

    proc = env.run("verify", backup_id)

    assert verification(env, backup_id) == before
    assert "Traceback" not in proc.stderr, proc.stderr
    _one_line_error(proc, "older than the backup's pg_dump (99)", "install")


def test_s3_read_failure_keeps_verdict(env: Env) -> None:
    """The store failing to serve the dump says nothing about the dump."""
    backup_id, before = verified_backup(env)

    with fault_proxy(
        env.s3.endpoint_url, lambda method, path: method == "GET" and ".pgc." in path
    ) as proxy:
        proc = env.run("verify", backup_id, extra={"AWS_ENDPOINT_URL_S3": proxy})

    assert verification(env, backup_id) == before
    assert "Traceback" not in proc.stderr, proc.stderr
    _one_line_error(proc)
