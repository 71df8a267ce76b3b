"""Backups of one database that overlap all succeed, and a clean-up
removes only what is provably abandoned (its owner's lock is gone), never a running backup.
A manifest is written only once the dump (and globals) read back as sent."""

from __future__ import annotations

import contextvars
import io
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from blocks.settings import PostgresSettings
from tasks.postgres.catalog import backup_folder, find_backup, list_backups
from tasks.postgres.lease import OWNER, backup_lease
from tasks.postgres.stored_dump import list_archive
from tests.pg_fixtures import snapshot
from tests.s3_fault_proxy import fault_proxy
from tests.test_backup_restore import REPO, SLIPWAY, Env, _one_line_error
from tests.test_backup_restore import env as env  # the fixture, reused

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from blocks.settings import StorageSettings

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

ROUNDS = 20


def _add_table(env: Env, name: str, rows: int) -> None:
    """Rows of hex text (compresses about 2:1): `rows` x 2 KiB raw."""
    with psycopg.connect(env.pg.url(env.database), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} AS SELECT g AS id, array_to_string(ARRAY(SELECT "
                "md5(random()::text || i) FROM generate_series(1, 64) s(i) WHERE g > 0), '') "
                "AS b FROM generate_series(1, {}) g"
            ).format(sql.Identifier(name), sql.Literal(rows))
        )


def _start(env: Env, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SLIPWAY, *args],
        env=env.vars,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _race(env: Env, count: int, gap: float, *args: str) -> list[tuple[int, str, str]]:
    """`count` `slipway backup --json ARGS` started `gap` seconds apart: (code, out, err)."""
    procs = []
    for _ in range(count):
        procs.append(_start(env, "backup", "--json", *args))
        time.sleep(gap)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out, err))
    return results


def _store(env: Env) -> StorageSettings:
    return env.s3.storage(env.bucket, "nightly")


def _db(env: Env) -> PostgresSettings:
    return PostgresSettings.from_url(env.pg.url(env.database))


def _keys(client: S3Client, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _uploads(client: S3Client, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _race_in_process(count: int, gap: float) -> list[dict[str, Any]]:
    """`count` backup flows (with globals) in threads of this process, `gap` seconds apart.

    The same flow the command line runs, without a Python and Prefect start-up per backup,
    so the race can be repeated often at little cost.
    """
    from flows.backup import backup_database

    with ThreadPoolExecutor(count) as pool:
        futures = []
        for _ in range(count):
            # This thread's Prefect settings (the test server's API URL) go with each run.
            run = contextvars.copy_context().run
            futures.append(pool.submit(run, backup_database, include_globals=True))
            time.sleep(gap)
        return [future.result() for future in futures]  # raises if one failed


def _outputs(results: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """What each run printed; each must have exited 0."""
    manifests = []
    for code, out, err in results:
        assert code == 0, err
        manifests.append(json.loads(out))
    return manifests


def _check_stored(env: Env, manifests: list[dict[str, Any]]) -> None:
    """Each backup lists, reads back whole and matches its checksum, with its globals."""
    store, client = _store(env), _store(env).client()
    listed = {e.manifest.id for e in list_backups(client, store, env.database)}
    for manifest in manifests:
        assert manifest["id"] in listed
        entry = find_backup(client, store, env.database, manifest["id"])
        assert list_archive(client, store, entry)  # size, sha256 and pg_restore's TOC
        if manifest["globals"]:
            head = client.head_object(Bucket=env.bucket, Key=manifest["globals"]["key"])
            assert head["ContentLength"] == manifest["globals"]["size"]


def _check_clean(env: Env, ids: list[str]) -> None:
    """Exactly these backups' folders, and no upload, are left in the store."""
    client = env.client()
    assert _uploads(client, env.bucket) == []
    assert {k.rsplit("/", 2)[1] for k in _keys(client, env.bucket)} == set(ids)


def _restores(env: Env, backup_id: str, expected: dict[str, Any]) -> None:
    target = f"r{backup_id[-4:]}_{backup_id[9:15]}"
    env.restore(backup_id, target, check=True)
    assert snapshot(env.pg, target) == expected


def test_overlapping_backups_all_succeed_verify_and_restore(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.vars.items():
        if name.startswith(("AWS_", "PG", "DATABASE_URL", "SLIPWAY_")):
            monkeypatch.setenv(name, value)
    _add_table(env, "filler", 2000)  # about 2 MiB stored: the dump takes a moment
    manifests: list[dict[str, Any]] = []
    for _ in range(ROUNDS):
        manifests += _race_in_process(3, 0.35)
    _check_stored(env, manifests)
    ids = [m["id"] for m in manifests]
    assert len(set(ids)) == len(ids) == 3 * ROUNDS
    _check_clean(env, ids)
    for backup_id in (ids[0], ids[-1]):
        verified = json.loads(env.run("verify", backup_id, "--json", check=True).stdout)
        assert verified["ok"] is True
    _restores(env, ids[-2], snapshot(env.pg, env.database))


def test_overlapping_commands_small_and_multi_part(env: Env) -> None:
    _add_table(env, "filler", 2000)
    small = _outputs(_race(env, 4, 0.35, "--globals"))
    expected_small = snapshot(env.pg, env.database)
    # Larger, multi-part dumps overlapping, like a nightly and a pre-release backup.
    _add_table(env, "big", 24000)
    big = _outputs(_race(env, 2, 1.5))
    assert all(m["dump"]["size"] > 16 * 1048576 for m in big)
    _check_stored(env, small + big)
    _check_clean(env, [m["id"] for m in small + big])
    for manifest in (small[0], big[0]):
        verified = json.loads(env.run("verify", manifest["id"], "--json", check=True).stdout)
        assert verified["ok"] is True
    _restores(env, small[-1]["id"], expected_small)
    _restores(env, big[-1]["id"], snapshot(env.pg, env.database))


def test_killed_backup_is_cleaned_but_a_running_one_is_not(env: Env) -> None:
    _add_table(env, "big", 20000)
    client, store = env.client(), _store(env)
    # A folder from before owners were recorded, never locked: abandoned.
    old = backup_folder(store, env.database, "20200101T000000Z-0bad")
    client.put_object(Bucket=env.bucket, Key=f"{old}/dump.pgc.zst", Body=b"half a dump")

    killed = _start(env, "backup")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _uploads(client, env.bucket):
        assert killed.poll() is None, killed.communicate()
        time.sleep(0.05)
    assert _uploads(client, env.bucket), "the backup never started a multi-part upload"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    killed_folder = _uploads(client, env.bucket)[0].rsplit("/", 1)[0]

    with backup_lease(_db(env), store, store.client()) as running:
        # A backup mid-upload, held by this process: an object and an open multi-part upload.
        folder = backup_folder(store, env.database, running.backup_id)
        upload = client.create_multipart_upload(Bucket=env.bucket, Key=f"{folder}/dump.pgc.zst")
        client.upload_part(
            Bucket=env.bucket,
            Key=f"{folder}/dump.pgc.zst",
            UploadId=upload["UploadId"],
            PartNumber=1,
            Body=b"x" * 5 * 1048576,
        )
        out = env.run("backup", "--json", "--verbose", check=True)
        log = out.stdout + out.stderr
        assert "removed leftovers of abandoned backups" in log
        assert killed_folder.rsplit("/", 1)[1] in log
        keys = _keys(client, env.bucket)
        assert not [k for k in keys if k.startswith((killed_folder + "/", old + "/"))]
        assert f"{folder}/{OWNER}" in keys
        assert _uploads(client, env.bucket) == [f"{folder}/dump.pgc.zst"]  # still running
        assert running.backup_id not in log
        running.confirm()
    # Its process let go without a manifest, as if it had died now: the next one cleans it.
    env.run("backup", "--json", check=True)
    assert _uploads(client, env.bucket) == []
    assert not [k for k in _keys(client, env.bucket) if k.startswith(folder + "/")]
    assert len(list_backups(client, store, env.database)) == 2


def test_backup_whose_lock_is_taken_away_records_nothing(env: Env) -> None:
    _add_table(env, "big", 20000)
    client = env.client()
    proc = _start(env, "backup")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _uploads(client, env.bucket):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    with psycopg.connect(env.pg.url(), autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'slipway-backup 2%'"
        ).fetchall()
    assert ended == [(True,)]
    _, err = proc.communicate(timeout=300)
    _one_line_error(
        subprocess.CompletedProcess(proc.args, proc.returncode, "", err), "lost its lock"
    )
    # It removed what it had written, still holding nothing anyone else could take.
    assert _keys(client, env.bucket) == []
    assert _uploads(client, env.bucket) == []


@pytest.mark.parametrize("lost", ["dump.pgc.zst", "globals.sql.zst"])
def test_upload_the_store_did_not_keep_gets_no_manifest(env: Env, lost: str) -> None:
    # The store accepted the upload but, asked right after, does not have it.
    with fault_proxy(
        env.s3.endpoint_url,
        lambda method, path: method == "HEAD" and lost in path,
        (404, "NoSuchKey", "The specified key does not exist."),
    ) as proxy:
        proc = env.run("backup", "--globals", extra={"AWS_ENDPOINT_URL_S3": proxy})
    _one_line_error(proc, "cannot be read back", lost)
    assert not [k for k in _keys(env.client(), env.bucket) if k.endswith("manifest.json")]


def test_read_back_checks_the_etag_else_the_bytes(env: Env) -> None:
    from blocks.errors import SlipwayError
    from tasks.storage.s3 import PART_SIZE, HashingReader, confirm_stored, upload_stream

    store, client = _store(env), _store(env).client()
    for size in (0, 100, PART_SIZE, PART_SIZE + 5, 3 * PART_SIZE + 123):
        data = os.urandom(size)
        reader = HashingReader(io.BytesIO(data), part_md5s=True)
        key = f"probe/{size}"
        upload_stream(client, store, key, reader, "application/octet-stream")
        etag = client.head_object(Bucket=env.bucket, Key=key)["ETag"]
        assert reader.etag_matches(etag), size  # a HEAD settles it: no second read
        sha256 = reader.sha256.hexdigest()
        # An ETag of another kind (KMS): the bytes are read back and compared instead.
        confirm_stored(client, store, key, size, sha256, lambda etag: False)
        if size:
            with pytest.raises(SlipwayError, match="differs from what was sent"):
                confirm_stored(client, store, key, size, "0" * 64, lambda etag: False)
            with pytest.raises(SlipwayError, match="incomplete"):
                confirm_stored(client, store, key, size + 1, sha256, reader.etag_matches)
