"""Retention: keep-last plus daily, weekly and monthly backups (GFS); delete the rest."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from blocks.object_storage import ObjectStorage
from blocks.postgres import PostgresDatabase
from tasks.notify import HOOKS
from tasks.postgres.catalog import backup_folder, list_backups
from tasks.retention import BackupRef, RetentionPolicy, plan_retention
from tasks.storage.s3 import delete_prefix


@flow(name="prune-backups", **HOOKS)
def prune_backups(
    dry_run: bool = False,
    retention: RetentionPolicy = RetentionPolicy(),  # noqa: B008 - frozen, so shared safely
    database_block: str | None = None,
    store_block: str | None = None,
) -> dict[str, Any]:
    """Apply the retention policy to the database's backups (dry_run: only print the plan).

    The newest verified backup is always kept, and never fewer than `retention.min_keep`.
    """
    db = PostgresDatabase.resolve(database_block)
    store = ObjectStorage.resolve(store_block)
    client = store.client()
    entries = {e.manifest.id: e for e in list_backups(client, store, db.database)}
    plan = plan_retention(
        [BackupRef(i, e.manifest.created_at, e.verified) for i, e in entries.items()], retention
    )
    logger = get_run_logger()
    logger.info("retention plan%s:\n%s", " (dry run)" if dry_run else "", plan.render())
    if not dry_run:
        for ref in plan.delete:
            delete_prefix(client, store, backup_folder(store, db.database, ref.id))
    create_table_artifact(
        [
            {
                "id": ref.id,
                "size_mib": round(entries[ref.id].manifest.dump.size / 1048576, 1),
                "verified": entries[ref.id].verified,
                "why kept": ", ".join(reasons),
            }
            for ref, reasons in plan.keep
        ],
        key="backups-kept",
        description="Backups kept by retention",
    )
    return {
        "dry_run": dry_run,
        "keep": [{"id": ref.id, "reasons": list(reasons)} for ref, reasons in plan.keep],
        "delete": [ref.id for ref in plan.delete],
        "plan": plan.render(),
    }
