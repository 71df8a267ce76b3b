"""`prisma migrate resolve`: mark a migration applied, or its failed attempt rolled back."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from blocks.errors import ConfigError, SlipwayError
from blocks.settings import PostgresSettings
from tasks.prisma import table
from tasks.prisma.models import LocalMigration


def resolve_migration(
    db: PostgresSettings,
    migrations_dir: Path,
    *,
    applied: str | None = None,
    rolled_back: str | None = None,
    schema: str | None = None,
    lock_timeout: float = table.LOCK_TIMEOUT_SECONDS,
) -> None:
    """`prisma migrate resolve`: mark one migration as applied, or its failed attempt rolled back.

    `applied`: the migration's failed attempts become rolled back and a finished row is
    added (no script runs); this also baselines a database that has no `_prisma_migrations`.
    `rolled_back`: its failed attempts are marked rolled back, so deploy runs it again.
    """
    if (applied is None) == (rolled_back is None):
        raise ConfigError("pass exactly one of --applied NAME or --rolled-back NAME")
    local = table.read_local(migrations_dir) if applied is not None else []
    try:
        with (
            table.session(db, schema) as (conn, schema_name),
            table.advisory_lock(conn, db, lock_timeout),
        ):
            if applied is not None:
                _mark_applied(conn, db, schema_name, local, applied)
            elif rolled_back is not None:
                _mark_rolled_back(conn, db, schema_name, rolled_back)
    except psycopg.Error as exc:
        raise table.db_error(exc, db) from exc


def _mark_applied(
    conn: psycopg.Connection,
    db: PostgresSettings,
    schema: str,
    local: list[LocalMigration],
    name: str,
) -> None:
    migration = next((m for m in local if m.name == name), None)
    if migration is None:
        raise SlipwayError(
            f"P3017: migration {name} is not in the migrations folder: pass the whole folder "
            'name (e.g. "20201207184859_initial_migration")'
        )
    has_table = table.table_exists(conn, schema)
    rows = (
        [r for r in table.read_rows(conn, schema) if r.migration_name == name] if has_table else []
    )
    if any(r.finished_at is not None for r in rows):
        raise SlipwayError(
            f"P3008: migration {name} is already recorded as applied in {db.display()}: "
            "nothing to resolve"
        )
    now = table.utc_now()
    with conn.transaction():
        if not has_table:
            conn.execute(sql.SQL(table.CREATE_TABLE).format(table=table.table_id(schema)))
        for row in rows:
            if row.rolled_back_at is None:
                conn.execute(
                    sql.SQL("UPDATE {} SET rolled_back_at = %s WHERE id = %s").format(
                        table.table_id(schema)
                    ),
                    [now, row.id],
                )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, checksum, logs, started_at, finished_at, migration_name) "
                "VALUES (%s, %s, '', %s, %s, %s)"
            ).format(table.table_id(schema)),
            [str(uuid.uuid4()), migration.checksum, now, now, name],
        )


def _mark_rolled_back(
    conn: psycopg.Connection, db: PostgresSettings, schema: str, name: str
) -> None:
    rows = (
        [r for r in table.read_rows(conn, schema) if r.migration_name == name]
        if table.table_exists(conn, schema)
        else []
    )
    if not rows:
        raise SlipwayError(
            f"P3011: migration {name} cannot be rolled back: it was never applied to "
            f'{db.display()}; pass the whole folder name (e.g. "20201207184859_initial_migration")'
        )
    if all(r.finished_at is not None for r in rows):
        raise SlipwayError(
            f"P3012: migration {name} cannot be rolled back: it is not in a failed state "
            "(it was applied); undo it with a new migration"
        )
    with conn.transaction():
        for row in rows:
            if row.finished_at is None and row.rolled_back_at is None:
                conn.execute(
                    sql.SQL("UPDATE {} SET rolled_back_at = %s WHERE id = %s").format(
                        table.table_id(schema)
                    ),
                    [table.utc_now(), row.id],
                )
