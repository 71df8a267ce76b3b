"""`slipway backups list`: the backups in the store, as a table or as JSON.

Without block names it reads DATABASE_URL and SLIPWAY_BACKUP_URL and never imports
Prefect: listing is a quick look.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from deployments.cli_common import DbBlockOpt, JsonOpt, StoreBlockOpt, check_config, fail
from deployments.cli_style import SlipwayTyper

if TYPE_CHECKING:
    from blocks.settings import PostgresSettings, StorageSettings
    from tasks.postgres.catalog import BackupEntry

backups_app = SlipwayTyper(help="The backups in the store.", no_args_is_help=True)

HEADERS = ("ID", "TAKEN AT (UTC)", "SIZE", "RATIO", "VERIFIED", "ENCRYPTED", "APP VERSION")


@backups_app.command("list")
def backups_list(
    database_block: DbBlockOpt = None, store_block: StoreBlockOpt = None, as_json: JsonOpt = False
) -> None:
    """List the database's complete backups, newest first.

    --json: a list, newest first, of {"id", "database", "taken_at", "raw_bytes",
    "stored_bytes", "verified", "encrypted", "app_version"}; [] when there is none.
    """
    check_config(database=database_block is None, store=store_block is None)
    from blocks.errors import SlipwayError
    from tasks.postgres.catalog import list_backups
    from tasks.storage.s3 import check_bucket

    try:
        db, store = _settings(database_block, store_block)
        client = store.client()
        check_bucket(client, store)
        entries = list_backups(client, store, db.database)
    except SlipwayError as exc:
        fail(str(exc))
    rows = [_row(e) for e in entries]
    if as_json:
        typer.echo(json.dumps(rows))
    elif not rows:
        typer.echo(f"no backups of {db.database!r} in {store.url()}: `slipway backup` takes one")
    else:
        typer.echo(_table(rows))


def _settings(
    database_block: str | None, store_block: str | None
) -> tuple[PostgresSettings, StorageSettings]:
    """The named blocks (loaded from Prefect), else the environment's settings."""
    from blocks.settings import PostgresSettings, StorageSettings

    if database_block or store_block:
        from deployments.cli_common import require_prefect_api

        require_prefect_api()

    db: PostgresSettings
    store: StorageSettings
    if database_block:
        from blocks.postgres import PostgresDatabase

        db = PostgresDatabase.resolve(database_block)
    else:
        db = PostgresSettings.from_env()
    if store_block:
        from blocks.object_storage import ObjectStorage

        store = ObjectStorage.resolve(store_block)
    else:
        store = StorageSettings.from_env()
    return db, store


def _row(entry: BackupEntry) -> dict[str, Any]:
    m = entry.manifest
    return {
        "id": m.id,
        "database": m.database,
        "taken_at": m.started_at.isoformat(),
        "raw_bytes": m.raw_bytes,
        "stored_bytes": m.dump.size,
        "verified": entry.verified,
        "encrypted": m.encrypted,
        "app_version": m.app_version,
    }


def _size(n: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = min(int(math.log(n, 1024)), len(units) - 1) if n > 0 else 0
    return f"{n} B" if power == 0 else f"{n / 1024**power:.1f} {units[power]}"


def _cells(r: dict[str, Any]) -> tuple[str, ...]:
    stored, raw = int(r["stored_bytes"] or 0), int(r["raw_bytes"] or 0)
    return (
        r["id"],
        r["taken_at"][:19].replace("T", " "),
        _size(stored),
        f"{raw / stored:.1f}x" if stored else "-",
        "yes" if r["verified"] else "no",
        "yes" if r["encrypted"] else "no",
        r["app_version"] or "-",
    )


def _table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned columns under a header line; sizes and ratios right-aligned."""
    lines = [HEADERS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    right = {2, 3}
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )
