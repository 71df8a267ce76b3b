"""Prisma's bookkeeping table and lock: the migrations folder, the session, `_prisma_migrations`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from blocks.errors import ConfigError, SlipwayError
from blocks.settings import PostgresSettings
from tasks.postgres.connection import connect
from tasks.prisma.models import LocalMigration, MigrationRow

TABLE = "_prisma_migrations"
LOCK_ID = 72707369  # Prisma Migrate's advisory lock key
LOCK_TIMEOUT_SECONDS = 10.0  # Prisma's ADVISORY_LOCK_TIMEOUT
RESOLVE_DOC = "https://pris.ly/d/migrate-resolve"

# Prisma's DDL (schema engine, PostgreSQL flavour); qualified here because every statement
# of ours names the schema, whatever search_path a migration sets.
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS {table} (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)"""


def read_local(migrations_dir: Path) -> list[LocalMigration]:
    """The migration folders in name order; files beside them (migration_lock.toml) ignored."""
    if not migrations_dir.is_dir():
        raise ConfigError(
            f"migrations folder {migrations_dir} not found: pass --migrations "
            "path/to/prisma/migrations"
        )
    found = []
    for entry in sorted(migrations_dir.iterdir(), key=lambda p: p.name):
        if not entry.is_dir():
            continue
        script = entry / "migration.sql"
        if not script.is_file():
            raise ConfigError(
                f"migration folder {entry} has no migration.sql: add it or remove the folder"
            )
        found.append(LocalMigration(entry.name, script.read_bytes()))
    return found


@contextmanager
def session(db: PostgresSettings, schema: str | None) -> Iterator[tuple[psycopg.Connection, str]]:
    """An autocommit connection whose search_path is `schema` (as Prisma's ?schema=)."""
    with connect(db, autocommit=True) as conn:
        if schema:
            conn.execute(
                "SELECT set_config('search_path', %s, false)",
                [sql.Identifier(schema).as_string(conn)],
            )
        row = conn.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise ConfigError(
                f"schema {schema or '(search_path)'} does not exist in {db.display()}: create it "
                "or fix ?schema= in the database URL"
            )
        yield conn, str(row[0])


@contextmanager
def advisory_lock(conn: psycopg.Connection, db: PostgresSettings, timeout: float) -> Iterator[None]:
    """Prisma's migration lock, given up (P1002) after `timeout` seconds of waiting."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false)", [f"{max(1, round(timeout * 1000))}ms"]
    )
    try:
        conn.execute(f"SELECT pg_advisory_lock({LOCK_ID})")
    except psycopg.errors.LockNotAvailable as exc:
        raise SlipwayError(
            f"P1002: another migration run (Slipway or Prisma) holds the migration lock on "
            f"{db.display()} (pg_advisory_lock({LOCK_ID})) and {timeout:g} s passed: let it "
            "finish, or find its session in pg_locks"
        ) from exc
    conn.execute("RESET lock_timeout")
    try:
        yield
    finally:
        # Closing the connection releases it too: an error here must not hide the first one.
        with contextlib.suppress(psycopg.Error):
            conn.execute(f"SELECT pg_advisory_unlock({LOCK_ID})")


@contextmanager
def no_lock() -> Iterator[None]:
    yield


def table_id(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, TABLE)


def table_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", [schema, TABLE]
    ).fetchone()
    return row is not None


def read_rows(conn: psycopg.Connection, schema: str) -> list[MigrationRow]:
    with conn.cursor(row_factory=class_row(MigrationRow)) as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, "
                "started_at, applied_steps_count FROM {} ORDER BY started_at"
            ).format(table_id(schema))
        )
        return cur.fetchall()


def utc_now() -> datetime:
    return datetime.now(UTC)  # Prisma stamps rows with its own clock, not the server's


def db_error(exc: psycopg.Error, db: PostgresSettings) -> SlipwayError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SlipwayError(f"PostgreSQL error on {db.display()}: {first}")
