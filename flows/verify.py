"""Verify a backup: re-read it, check size and checksum, list it; optionally a restore drill."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from blocks.errors import SlipwayError
from blocks.object_storage import ObjectStorage
from blocks.postgres import PostgresDatabase
from tasks import postgres as pg
from tasks.backup_catalog import (
    VERIFICATION,
    BackupEntry,
    Verification,
    backup_folder,
    find_backup,
    utcnow,
    write_json,
)
from tasks.notify import HOOKS
from tasks.pg_backup import list_archive, scratch_dir
from tasks.pg_restore import restore_from_store

DRILL_JOBS = 2


@task(cache_policy=NO_CACHE, name="check-stored-dump")
def check_stored(store: ObjectStorage, entry: BackupEntry) -> int:
    """Size, sha256 and `pg_restore --list`; returns the number of table-data entries."""
    listing = list_archive(store.client(), store, entry)
    data_entries = sum(1 for line in listing if " TABLE DATA " in line)
    if data_entries != len(entry.manifest.tables):
        raise SlipwayError(
            f"backup {entry.manifest.id} lists {data_entries} tables' data, manifest says "
            f"{len(entry.manifest.tables)}: use another backup"
        )
    return data_entries


@task(cache_policy=NO_CACHE, name="restore-drill")
def restore_drill(db: PostgresDatabase, store: ObjectStorage, entry: BackupEntry) -> str:
    """Restore into a scratch database, compare row counts with the dump's snapshot, drop it."""
    scratch = f"slipway_drill_{secrets.token_hex(4)}"
    admin = pg.connect(pg.admin_database(db), autocommit=True)
    try:
        pg.create_database(admin, scratch)
        with scratch_dir(entry.manifest.raw_bytes) as tmp:
            restore_from_store(
                store.client(), store, entry, db.with_database(scratch), Path(tmp), DRILL_JOBS
            )
        restored = {
            (t.schema_name, t.table): t.rows for t in pg.table_counts(db.with_database(scratch))
        }
        expected = {(t.schema_name, t.table): t.rows for t in entry.manifest.tables}
        if restored != expected:
            diff = sorted(
                f"{s}.{t}: {expected.get((s, t))} expected, {restored.get((s, t))} restored"
                for s, t in set(expected) | set(restored)
                if expected.get((s, t)) != restored.get((s, t))
            )
            raise SlipwayError(f"drill of {entry.manifest.id} differs: {'; '.join(diff[:5])}")
        return f"restored into {scratch}: {len(expected)} tables, {sum(expected.values()):,} rows match"
    finally:
        pg.drop_database(admin, scratch)
        admin.close()


@flow(name="verify-backup", **HOOKS)
def verify_backup(
    backup: str = "latest",
    drill: bool = False,
    database_block: str | None = None,
    store_block: str | None = None,
) -> dict[str, Any]:
    """Check a backup (an id, or latest); with drill, also restore it into a scratch database."""
    db = PostgresDatabase.resolve(database_block)
    store = ObjectStorage.resolve(store_block)
    client = store.client()
    entry = find_backup(client, store, db.database, backup)
    key = f"{backup_folder(store, db.database, entry.manifest.id)}/{VERIFICATION}"
    try:
        entries = check_stored(store, entry)
        detail = f"size, sha256 and archive listing ok ({entries} tables)"
        if drill:
            detail += "; " + restore_drill(db, store, entry)
    except SlipwayError as exc:
        write_json(
            client,
            store,
            key,
            Verification(
                backup_id=entry.manifest.id,
                verified_at=utcnow(),
                ok=False,
                drill=drill,
                detail=str(exc),
            ),
        )
        raise
    result = Verification(
        backup_id=entry.manifest.id, verified_at=utcnow(), ok=True, drill=drill, detail=detail
    )
    write_json(client, store, key, result)
    get_run_logger().info("backup %s verified: %s", entry.manifest.id, detail)
    create_markdown_artifact(
        f"# Backup `{entry.manifest.id}` verified\n\n{detail}\n", key="backup-verification"
    )
    return result.model_dump(mode="json")
