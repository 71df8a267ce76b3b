"""Database backup flows: one backup, and the nightly backup -> verify -> prune."""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from blocks.errors import SlipwayError
from blocks.object_storage import ObjectStorage
from blocks.postgres import PostgresDatabase
from flows.progress import ProgressArtifact
from tasks.crypto.keys import backup_recipients, key_ids
from tasks.notify import HOOKS
from tasks.postgres.catalog import (
    MANIFEST,
    Compression,
    Manifest,
    backup_folder,
    database_url,
    utcnow,
    write_json,
)
from tasks.postgres.dump import dump_globals, dump_to_store
from tasks.postgres.lease import Lease, backup_lease, remove_abandoned
from tasks.storage.s3 import check_bucket, storage_error


def _mib(n: int) -> str:
    return f"{n / 1048576:,.1f} MiB"


@task(cache_policy=NO_CACHE, name="clean-incomplete-backups")
def clean_incomplete(db: PostgresDatabase, store: ObjectStorage, current_id: str) -> list[str]:
    """Remove what killed backups left: multi-part uploads and folders without a manifest.

    Only backups whose owner is gone (their lock is free): others may run meanwhile.
    """
    done = remove_abandoned(db, store, store.client(), current_id)
    logger = get_run_logger()
    if done.removed:
        logger.info(
            "removed leftovers of abandoned backups (their process is gone): %s",
            ", ".join(done.removed),
        )
    if done.other_server:
        logger.info(
            "kept unfinished backups owned by another server: %s", ", ".join(done.other_server)
        )
    return done.removed


@task(cache_policy=NO_CACHE, name="dump-to-store")
def dump_task(
    db: PostgresDatabase,
    store: ObjectStorage,
    backup_id: str,
    compression: Compression,
    level: int,
    threads: int,
    include_globals: bool,
    app_version: str | None,
    tags: dict[str, str],
) -> Manifest:
    logger = get_run_logger()
    client = store.client()
    recipients = backup_recipients(store)
    started_at, t0 = utcnow(), time.monotonic()
    logger.info("dumping %s to %s", db.display(), database_url(store, db.database, backup_id))
    with ProgressArtifact("backup-progress", f"pg_dump of {db.database}") as progress:
        result = dump_to_store(
            db,
            store,
            client,
            backup_id,
            compression=compression,
            level=level,
            threads=threads,
            recipients=recipients,
            on_progress=progress.record,
        )
    globals_obj = (
        dump_globals(db, store, client, backup_id, level, recipients) if include_globals else None
    )
    manifest = Manifest(
        id=backup_id,
        database=db.database,
        server=f"{db.host}:{db.port}",
        server_version=result.server_version,
        pg_dump_version=result.pg_dump_version,
        started_at=started_at,
        finished_at=utcnow(),
        duration_seconds=round(time.monotonic() - t0, 3),
        encrypted=bool(recipients),
        recipients=key_ids(recipients),
        dump_seconds=round(result.seconds, 3),
        raw_bytes=result.raw_bytes,
        compression=compression,
        compression_level=level,
        dump=result.dump,
        globals=globals_obj,
        tables=result.tables,
        app_version=app_version,
        tags=tags,
    )
    return manifest


def record(lease: Lease, store: ObjectStorage, manifest: Manifest) -> None:
    """Write the manifest (from here on, this is a backup) while still owning the folder.

    The lock is checked after the write: held until then, no clean-up can have taken the
    folder, and from then on a clean-up sees the manifest.
    """
    lease.confirm()
    key = f"{backup_folder(store, manifest.database, manifest.id)}/{MANIFEST}"
    try:
        write_json(store.client(), store, key, manifest)
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, store) from exc
    lease.confirm()


def _encryption(recipients: list[str]) -> str:
    if not recipients:
        return "none (set SLIPWAY_BACKUP_RECIPIENTS to encrypt)"
    return "age, to " + ", ".join(f"`{r}`" for r in recipients)


def backup_report(m: Manifest) -> str:
    ratio = m.raw_bytes / m.dump.size if m.dump.size else 0.0
    speed = m.raw_bytes / m.dump_seconds / 1048576 if m.dump_seconds else 0.0
    return "\n".join(
        [
            f"# Backup `{m.id}` of `{m.database}`",
            "",
            "| | |",
            "|---|---|",
            f"| id | `{m.id}` |",
            f"| server | PostgreSQL {m.server_version} (pg_dump {m.pg_dump_version}) |",
            f"| size | {_mib(m.raw_bytes)} raw, {_mib(m.dump.size)} stored ({m.compression} -{m.compression_level}) |",
            f"| compression ratio | {ratio:.2f} |",
            f"| duration | {m.duration_seconds:.1f} s (dump and upload {m.dump_seconds:.1f} s) |",
            f"| throughput | {speed:.1f} MiB/s |",
            f"| tables | {len(m.tables)}, {sum(t.rows for t in m.tables):,} rows |",
            f"| encryption | {_encryption(m.recipients)} |",
            f"| sha256 | `{m.dump.sha256}` |",
        ]
    )


@flow(name="backup-database", log_prints=False, **HOOKS)
def backup_database(
    database_block: str | None = None,
    store_block: str | None = None,
    compression: Compression = "zstd",
    level: int = 1,
    threads: int = -1,
    include_globals: bool = False,
    app_version: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Back up one PostgreSQL database to the backup store.

    database_block / store_block: saved block names; empty means DATABASE_URL and
    SLIPWAY_BACKUP_URL with the AWS variables. compression: zstd (default) or gzip.
    """
    db = PostgresDatabase.resolve(database_block)
    store = ObjectStorage.resolve(store_block)
    if compression not in ("zstd", "gzip"):
        raise SlipwayError(f"unknown compression {compression!r}: use zstd or gzip")
    backup_recipients(store)  # a recipient that is no age key fails before anything is dumped
    client = store.client()
    check_bucket(client, store)
    with backup_lease(db, store, client) as lease:
        # Leftovers of killed backups are cleaned while this one dumps.
        cleaning = clean_incomplete.submit(db, store, lease.backup_id)
        try:
            manifest = dump_task(
                db,
                store,
                lease.backup_id,
                compression,
                level,
                threads,
                include_globals,
                app_version,
                tags or {},
            )
            record(lease, store, manifest)
        finally:
            cleaning.wait()
    if not cleaning.state.is_completed():
        # The new backup is good; leftovers wait for the next run.
        get_run_logger().warning("cleaning up killed backups failed: %s", cleaning.state.message)
    create_markdown_artifact(backup_report(manifest), key="backup-report")
    return manifest.model_dump(mode="json")
