"""The nightly backup: the database (backup, verify, prune) and each configured bucket
(mirror, or snapshot, verify, prune), all in parallel. One part failing does not stop the
others; the run then fails, and its report says which part failed and why.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from blocks.environment import BucketBackup, Environment
from blocks.errors import SlipwayError
from blocks.object_storage import ObjectStorage
from flows.backup import backup_database
from flows.mirror import mirror_bucket
from flows.prune import prune_backups
from flows.snapshot import prune_snapshots, snapshot_bucket, snapshot_name, verify_snapshot
from flows.verify import verify_backup
from tasks.notify import HOOKS
from tasks.postgres.catalog import Compression
from tasks.retention import RetentionPolicy


@task(cache_policy=NO_CACHE, name="database-part")
def database_part(
    database_block: str | None,
    store_block: str | None,
    compression: Compression,
    level: int,
    drill: bool,
    retention: RetentionPolicy,
) -> dict[str, Any]:
    manifest = backup_database(database_block, store_block, compression, level)
    verification = verify_backup(manifest["id"], drill, database_block, store_block)
    pruned = prune_backups(False, retention, database_block, store_block)
    return {"backup": manifest, "verification": verification, "prune": pruned}


@task(cache_policy=NO_CACHE, name="bucket-part")
def bucket_part(
    bucket: BucketBackup, store_block: str | None, retention: RetentionPolicy
) -> dict[str, Any]:
    name = bucket.name or snapshot_name(bucket.source)
    if bucket.mode == "mirror":
        store = ObjectStorage.resolve(store_block)
        return mirror_bucket(
            bucket.source,
            store.url("mirrors", name),
            bucket.delete,
            False,
            bucket.source_block,
            store_block,
        )
    snapshot = snapshot_bucket(bucket.source, name, 3, bucket.source_block, store_block)
    verify_snapshot(name, snapshot["id"], store_block)
    pruned = prune_snapshots(name, False, retention, store_block)
    return {"snapshot": snapshot, "prune": pruned}


def _error(future: PrefectFuture[Any]) -> str | None:
    future.wait()
    state = future.state
    if state.is_completed():
        return None
    try:
        state.result()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if not isinstance(exc, SlipwayError) else str(exc)
    return state.message or state.name


@flow(name="nightly-backup", **HOOKS)
def nightly_backup(
    env: str | None = None,
    database_block: str | None = None,
    store_block: str | None = None,
    compression: Compression = "zstd",
    level: int = 1,
    drill: bool = False,
    retention: RetentionPolicy = RetentionPolicy(),  # noqa: B008 - frozen, so shared safely
    buckets: list[BucketBackup] | None = None,
) -> dict[str, Any]:
    """Back up the database (verify it, then prune) and each of the app's buckets.

    Args:
        env: The environment whose blocks to use (its database, store and buckets); without
            it, the blocks named here, else DATABASE_URL and SLIPWAY_BACKUP_URL.
        database_block: PostgresDatabase block (default: the environment's, or DATABASE_URL).
        store_block: ObjectStorage block of the backup store.
        compression: zstd, or gzip for compatibility.
        level: Compression level.
        drill: Also restore the new backup into a scratch database and compare row counts.
        retention: How many backups and snapshots to keep: the newest (keep_last), one per
            day, week and month for that many of each, and never fewer than min_keep.
        buckets: The app's buckets, each mirrored or snapshotted into the backup store
            (default: the environment's).
    """
    if env:
        environment = Environment.resolve(env)
        database_block = database_block or environment.database_block
        store_block = store_block or environment.store_block
        buckets = buckets if buckets is not None else environment.buckets
    parts: dict[str, PrefectFuture[Any]] = {
        "database": database_part.submit(
            database_block, store_block, compression, level, drill, retention
        )
    }
    for bucket in buckets or []:
        label = f"{bucket.mode} {bucket.source}"
        parts[label] = bucket_part.with_options(name=f"bucket-{bucket.mode}").submit(
            bucket, store_block, retention
        )
    errors = {label: _error(future) for label, future in parts.items()}
    lines = ["# Nightly backup", "", "| part | outcome |", "|---|---|"]
    lines += [f"| {label} | {'ok' if not e else 'FAILED: ' + e} |" for label, e in errors.items()]
    create_markdown_artifact("\n".join(lines), key="nightly-report")
    failed = {label: e for label, e in errors.items() if e}
    if failed:
        raise SlipwayError(
            f"nightly backup: {len(failed)} of {len(parts)} parts failed: "
            + "; ".join(f"{label}: {e}" for label, e in failed.items())
        )
    result: dict[str, Any] = dict(parts["database"].result())
    result["buckets"] = {
        label: future.result() for label, future in parts.items() if label != "database"
    }
    return result
