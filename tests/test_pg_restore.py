"""The restore on its own: the schema while the archive downloads, then `pg_restore -j`."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings
from tasks.postgres.catalog import (
    BackupEntry,
    Manifest,
    new_backup_id,
    utcnow,
)
from tasks.postgres.dump import dump_to_store
from tasks.postgres.restore import restore_from_store
from tasks.postgres.scratch import scratch_dir
from tests.harness.postgres import PostgresInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database, snapshot

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

# Three tables whose sizes do not follow their dump order, with an expression index.
UNORDERED = """
CREATE TABLE a_docs (id int PRIMARY KEY, body text);
CREATE TABLE b_events (id int PRIMARY KEY, payload jsonb);
CREATE TABLE c_users (id int PRIMARY KEY, email text UNIQUE);
INSERT INTO a_docs SELECT g, repeat('d', g) FROM generate_series(1, 10) g;
INSERT INTO b_events SELECT g, jsonb_build_object('n', g) FROM generate_series(1, 3000) g;
INSERT INTO c_users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 300) g;
CREATE INDEX ON b_events ((payload->>'n'));
"""


def settings(pg: PostgresInfo, database: str) -> PostgresSettings:
    return PostgresSettings.from_url(pg.url(database))


def backup(pg: PostgresInfo, s3: S3Info, database: str) -> tuple[BackupEntry, S3Info, str]:
    bucket = f"restore-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    store = s3.storage(bucket)
    db = settings(pg, database)
    backup_id, started = new_backup_id(), utcnow()
    result = dump_to_store(db, store, store.client(), backup_id, level=1)
    manifest = Manifest(
        id=backup_id,
        database=database,
        server=f"{db.host}:{db.port}",
        server_version=result.server_version,
        pg_dump_version=result.pg_dump_version,
        started_at=started,
        finished_at=utcnow(),
        duration_seconds=result.seconds,
        dump_seconds=result.seconds,
        raw_bytes=result.raw_bytes,
        compression="zstd",
        compression_level=1,
        dump=result.dump,
        tables=result.tables,
    )
    return BackupEntry(manifest=manifest), s3, bucket


def new_database(pg: PostgresInfo) -> str:
    name = f"restored_{secrets.token_hex(4)}"
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_restore_equals_the_source_with_any_number_of_jobs(
    postgres: PostgresInfo, s3: S3Info, tmp_path: Path, jobs: int
) -> None:
    source = create_database(postgres, UNORDERED)
    entry, server, bucket = backup(postgres, s3, source)
    target = new_database(postgres)
    store = server.storage(bucket)
    restore_from_store(store.client(), store, entry, settings(postgres, target), tmp_path, jobs)
    assert snapshot(postgres, target) == snapshot(postgres, source)


def test_damaged_archive_names_the_damage_and_loads_no_row(
    postgres: PostgresInfo, s3: S3Info, tmp_path: Path
) -> None:
    source = create_database(postgres, UNORDERED)
    entry, server, bucket = backup(postgres, s3, source)
    client = server.client()
    key = entry.manifest.dump.key
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    store = server.storage(bucket)
    target = new_database(postgres)
    with pytest.raises(SlipwayError, match="is damaged"):
        restore_from_store(store.client(), store, entry, settings(postgres, target), tmp_path, 2)
    # The schema may have gone in from the archive's head (unless the damage was found
    # first); not one row did, since no row is loaded before the checksum matched.
    with psycopg.connect(postgres.url(target)) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT relname FROM pg_class"
                " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            )
        ]
        rows = [
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()
            for t in tables
        ]
    assert sorted(tables) in ([], ["a_docs", "b_events", "c_users"])
    assert rows == [(0,)] * len(tables)


def test_a_restore_in_its_scratch_directory_leaves_nothing(
    postgres: PostgresInfo, s3: S3Info, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = create_database(postgres, UNORDERED)
    entry, server, bucket = backup(postgres, s3, source)
    store = server.storage(bucket)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    target = new_database(postgres)
    with scratch_dir(entry.manifest.raw_bytes) as directory:
        restore_from_store(
            store.client(), store, entry, settings(postgres, target), Path(directory), 2
        )
    assert snapshot(postgres, target) == snapshot(postgres, source)
    assert list(scratch.iterdir()) == []
