"""Verify a backup: re-read it, check size and checksum, list it; optionally a restore drill."""

from __future__ import annotations

import contextlib
import errno
import secrets
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pyrage import x25519

from blocks.errors import BackupDamaged, SlipwayError
from blocks.object_storage import ObjectStorage
from blocks.postgres import PostgresDatabase
from blocks.text import error_line
from tasks.crypto.keys import identities_for
from tasks.notify import HOOKS
from tasks.postgres import connection as pg
from tasks.postgres.catalog import (
    VERIFICATION,
    BackupEntry,
    Verification,
    backup_folder,
    find_backup,
    utcnow,
    write_json,
)
from tasks.postgres.restore import restore_from_store
from tasks.postgres.scratch import scratch_dir
from tasks.postgres.stored_dump import check_stored_bytes, list_archive
from tasks.storage.s3 import storage_error

DRILL_JOBS = 2


def _identities(store: ObjectStorage, entry: BackupEntry) -> list[x25519.Identity]:
    """The identities that decrypt `entry` (none needed when it is not encrypted)."""
    if not entry.manifest.encrypted:
        return []
    return identities_for(f"backup {entry.manifest.id}", entry.manifest.recipients, store)


@task(cache_policy=NO_CACHE, name="check-stored-dump")
def check_stored(store: ObjectStorage, entry: BackupEntry, decrypt: bool) -> str:
    """Size, sha256 and `pg_restore --list` (of an encrypted backup, only with `decrypt`)."""
    if entry.manifest.encrypted and not decrypt:
        check_stored_bytes(store.client(), store, entry)
        return "size and sha256 ok (encrypted: `verify --drill` decrypts and restores it)"
    listing = list_archive(store.client(), store, entry, _identities(store, entry))
    data_entries = sum(1 for line in listing if " TABLE DATA " in line)
    if data_entries != len(entry.manifest.tables):
        raise BackupDamaged(
            f"backup {entry.manifest.id} lists {data_entries} tables' data, manifest says "
            f"{len(entry.manifest.tables)}: use another backup"
        )
    return f"size, sha256 and archive listing ok ({data_entries} tables)"


@task(cache_policy=NO_CACHE, name="restore-drill")
def restore_drill(db: PostgresDatabase, store: ObjectStorage, entry: BackupEntry) -> str:
    """Restore into a scratch database, compare row counts with the dump's snapshot, drop it.

    Only damage to the backup raises `BackupDamaged`; a failure on this side (scratch space,
    the scratch database, the server) raises a plain `SlipwayError` that names it.
    """
    try:
        return _drill(db, store, entry)
    except BackupDamaged:
        raise
    except (SlipwayError, psycopg.Error, OSError) as exc:
        raise SlipwayError(
            f"the restore drill of backup {entry.manifest.id} could not run here "
            f"({_one_line(exc)}): its verification is unchanged; fix that and run "
            "`slipway verify --drill` again"
        ) from exc


def _drill(db: PostgresDatabase, store: ObjectStorage, entry: BackupEntry) -> str:
    scratch = f"slipway_drill_{secrets.token_hex(4)}"
    with pg.connect(pg.admin_database(db), autocommit=True) as admin:
        pg.create_database(admin, scratch)
        try:
            with scratch_dir(entry.manifest.raw_bytes) as tmp:
                restore_from_store(
                    store.client(),
                    store,
                    entry,
                    db.with_database(scratch),
                    Path(tmp),
                    DRILL_JOBS,
                    _identities(store, entry),
                )
            restored = {
                (t.schema_name, t.table): t.rows for t in pg.table_counts(db.with_database(scratch))
            }
        except BaseException:
            with contextlib.suppress(psycopg.Error):  # the failure that led here matters more
                pg.drop_database(admin, scratch)
            raise
        pg.drop_database(admin, scratch)
    expected = {(t.schema_name, t.table): t.rows for t in entry.manifest.tables}
    if restored != expected:
        diff = sorted(
            f"{s}.{t}: {expected.get((s, t))} expected, {restored.get((s, t))} restored"
            for s, t in set(expected) | set(restored)
            if expected.get((s, t)) != restored.get((s, t))
        )
        raise BackupDamaged(f"drill of {entry.manifest.id} differs: {'; '.join(diff[:5])}")
    return f"restored into {scratch}: {len(expected)} tables, {sum(expected.values()):,} rows match"


def _one_line(exc: BaseException) -> str:
    text = error_line(exc, None)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        text = f"{tempfile.gettempdir()} is full: {text}; set TMPDIR to a larger disk"
    return text


def _record(store: ObjectStorage, key: str, verdict: Verification) -> None:
    client = store.client()
    try:
        write_json(client, store, key, verdict)
    except Exception as exc:
        raise storage_error(exc, store) from exc


@flow(name="verify-backup", **HOOKS)
def verify_backup(
    backup: str = "latest",
    drill: bool = False,
    database_block: str | None = None,
    store_block: str | None = None,
) -> dict[str, Any]:
    """Check a backup (an id, or latest); with drill, also restore it into a scratch database.

    verification.json records a verdict on the backup only: damage writes ok=false; a
    failure on this side (disk, scratch database, server, S3) fails the run and leaves
    the previous verdict as it was.
    """
    db = PostgresDatabase.resolve(database_block)
    store = ObjectStorage.resolve(store_block)
    client = store.client()
    entry = find_backup(client, store, db.database, backup)
    key = f"{backup_folder(store, db.database, entry.manifest.id)}/{VERIFICATION}"
    if drill:
        _identities(store, entry)  # a missing or wrong key fails here, with nothing recorded
    try:
        detail = check_stored(store, entry, drill)
        if drill:
            detail += "; " + restore_drill(db, store, entry)
    except BackupDamaged as exc:
        _record(
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
    _record(store, key, result)
    get_run_logger().info("backup %s verified: %s", entry.manifest.id, detail)
    create_markdown_artifact(
        f"# Backup `{entry.manifest.id}` verified\n\n{detail}\n", key="backup-verification"
    )
    return result.model_dump(mode="json")
