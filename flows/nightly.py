"""The nightly backup: back up, verify, then apply retention (never after a failure)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.backup import backup_database
from flows.prune import prune_backups
from flows.verify import verify_backup
from tasks.backup_catalog import Compression


@flow(name="nightly-backup")
def nightly_backup(
    database_block: str | None = None,
    store_block: str | None = None,
    compression: Compression = "zstd",
    level: int = 1,
    drill: bool = False,
    keep_last: int = 7,
    keep_daily: int = 7,
    keep_weekly: int = 4,
    keep_monthly: int = 6,
    min_keep: int = 3,
) -> dict[str, Any]:
    """Back up the database, verify the new backup (drill: restore it too), then prune."""
    manifest = backup_database(database_block, store_block, compression, level)
    verification = verify_backup(manifest["id"], drill, database_block, store_block)
    pruned = prune_backups(
        False,
        keep_last,
        keep_daily,
        keep_weekly,
        keep_monthly,
        min_keep,
        database_block,
        store_block,
    )
    return {"backup": manifest, "verification": verification, "prune": pruned}
