"""Prisma migrations (`migrate status`, `deploy`, `resolve`): natively, or through the Prisma CLI.

Native mode keeps `_prisma_migrations` exactly as Prisma's schema engine does, so both modes
can take turns on one database: Prisma's table definition, the sha256 of each migration.sql
as checksum, `pg_advisory_lock(72707369)` around deploy and resolve (10 s to get it, as
Prisma), one row per attempt (inserted before the script runs; finished with
`applied_steps_count` 1, or left unfinished with Prisma's P3018 logs), and an unfinished row
blocking later deploys (P3009) until `resolve` marks it rolled back or applied.

Transactions, as Prisma: each migration.sql goes to the server whole, as one simple-protocol
query on an autocommit connection. PostgreSQL runs a file of several statements as one
implicit transaction, so a failing migration leaves nothing behind (unless the file commits
parts itself: its own BEGIN/COMMIT work as written); `ALTER TYPE ... ADD VALUE` works, but
the new value cannot be used in the same file (55P04: use it in the next migration); and
statements that refuse transaction blocks (`CREATE INDEX CONCURRENTLY`, `VACUUM`...) only run
as the single statement of their file, as Prisma's documentation asks. Slipway does not
split files to get round this: a migration must behave here as under `prisma migrate deploy`
on a developer's machine, and splitting would give up the all-or-nothing file. Instead,
deploy and --dry-run refuse, before anything runs, a pending file that mixes such a
statement with others: PostgreSQL would reject it halfway through the release.

Where Slipway differs from Prisma, for the operator's sake: a file that leaves a transaction
open (BEGIN without COMMIT) is rolled back and recorded as failed, where Prisma's own
bookkeeping would vanish with it; a migration counts as edited when its *applied* row's
checksum differs (Prisma's status also compares rolled-back attempts, flagging every
migration fixed after a failure); deploy warns about edited migrations and about applied
ones missing locally (Prisma says nothing), then goes on as Prisma does.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings
from tasks.prisma.models import (
    DeployReport,
    LocalMigration,
    MigrationFailed,
    MigrationRow,
    MigrationStatus,
    checksum_matches,
    database_error_line,
)
from tasks.prisma.sql_lexer import script_problem
from tasks.prisma.table import (
    CREATE_TABLE,
    LOCK_TIMEOUT_SECONDS,
    RESOLVE_DOC,
    TABLE,
    advisory_lock,
    db_error,
    no_lock,
    read_local,
    read_rows,
    session,
    table_exists,
    table_id,
    utc_now,
)

LOGGER = logging.getLogger(__name__)


# --- status -------------------------------------------------------------------------------


def migration_status(
    db: PostgresSettings, migrations_dir: Path, *, schema: str | None = None
) -> MigrationStatus:
    """Compare the migrations folder with `_prisma_migrations`; reads only, creates nothing."""
    local = read_local(migrations_dir)
    try:
        with session(db, schema) as (conn, schema_name):
            has_table = table_exists(conn, schema_name)
            rows = read_rows(conn, schema_name) if has_table else []
    except psycopg.Error as exc:
        raise db_error(exc, db) from exc
    return _compare(db, migrations_dir, local, rows, has_table)


def _compare(
    db: PostgresSettings,
    migrations_dir: Path,
    local: list[LocalMigration],
    rows: list[MigrationRow],
    has_table: bool,
) -> MigrationStatus:
    names = {m.name for m in local}
    active = [r for r in rows if r.rolled_back_at is None]
    finished = {r.migration_name: r for r in active if r.finished_at is not None}
    failed = [r for r in active if r.finished_at is None]
    attempted = {r.migration_name for r in active}
    return MigrationStatus(
        database=db.display(),
        migrations_dir=str(migrations_dir),
        has_migrations_table=has_table,
        local=[m.name for m in local],
        applied=list(finished),
        pending=[m.name for m in local if m.name not in attempted],
        failed=list(dict.fromkeys(r.migration_name for r in failed)),
        failed_logs={r.migration_name: r.logs or "" for r in failed},
        modified=[
            m.name
            for m in local
            if m.name in finished and not checksum_matches(m.script, finished[m.name].checksum)
        ],
        missing_locally=list(
            dict.fromkeys(r.migration_name for r in active if r.migration_name not in names)
        ),
    )


# --- deploy -------------------------------------------------------------------------------


def deploy_migrations(
    db: PostgresSettings,
    migrations_dir: Path,
    *,
    dry_run: bool = False,
    schema: str | None = None,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> DeployReport:
    """Apply the pending migrations in folder-name order, as `prisma migrate deploy`.

    Refuses before changing anything when an earlier migration failed (P3009), when the
    database has tables but no `_prisma_migrations` (P3005: baseline it with resolve), or when
    a pending file cannot run as one script. `dry_run` runs the same checks, takes no lock,
    creates nothing and returns each pending migration's SQL. A failing migration raises
    `MigrationFailed` with Prisma's logs, which are also recorded in its row.
    """
    log = log or LOGGER
    local = read_local(migrations_dir)
    report = DeployReport(database=db.display(), dry_run=dry_run)
    try:
        with session(db, schema) as (conn, schema_name):
            lock = no_lock() if dry_run else advisory_lock(conn, db, lock_timeout)
            with lock:
                has_table = table_exists(conn, schema_name)
                if not has_table:
                    _refuse_non_empty(conn, db, schema_name)
                rows = read_rows(conn, schema_name) if has_table else []
                _refuse_failed(rows, db)
                status = _compare(db, migrations_dir, local, rows, has_table)
                report.warnings = _warnings(status)
                for warning in report.warnings:
                    log.warning(warning)
                by_name = {m.name: m for m in local}
                pending = [by_name[name] for name in status.pending]
                for migration in pending:
                    problem = script_problem(migration.text())
                    if problem:
                        raise SlipwayError(
                            f"migration {migration.name} cannot be applied: {problem}; "
                            "nothing was changed"
                        )
                if dry_run:
                    report.sql = {m.name: m.text() for m in pending}
                    return report
                if not has_table:
                    conn.execute(sql.SQL(CREATE_TABLE).format(table=table_id(schema_name)))
                for migration in pending:
                    log.info("applying %s", migration.name)
                    seconds = _apply(conn, db, schema_name, migration)
                    report.applied.append(migration.name)
                    report.durations[migration.name] = round(seconds, 3)
                    log.info("applied %s in %.2f s", migration.name, seconds)
    except psycopg.Error as exc:
        raise db_error(exc, db) from exc
    return report


def _warnings(status: MigrationStatus) -> list[str]:
    warnings = [
        f"migration {name} was edited after it was applied (its checksum differs): the "
        "database has the applied version; put the change in a new migration"
        for name in status.modified
    ]
    if status.missing_locally:
        warnings.append(
            f"applied to {status.database} but missing from {status.migrations_dir}: "
            f"{', '.join(status.missing_locally)} (is the folder from an older release?)"
        )
    return warnings


def _apply(conn: psycopg.Connection, db: PostgresSettings, schema: str, m: LocalMigration) -> float:
    """Run one migration with Prisma's bookkeeping around it; its duration in seconds."""
    row_id = str(uuid.uuid4())
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, checksum, started_at, migration_name) VALUES (%s, %s, %s, %s)"
        ).format(table_id(schema)),
        [row_id, m.checksum, utc_now(), m.name],
    )
    start = time.monotonic()
    code: str | None = None
    error = ""
    try:
        conn.execute(m.script, prepare=False)
    except psycopg.Error as exc:
        if conn.closed or conn.broken:
            raise MigrationFailed(
                f"lost the connection to {db.display()} while applying {m.name}: its row stays "
                "unfinished and blocks deploys; check what it changed, then `slipway migrate "
                f"resolve --rolled-back {m.name}` (or `--applied {m.name}`)",
                migration=m.name,
                logs=str(exc),
                code="P3018",
            ) from exc
        code, error = _database_error(exc, m.text())
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.execute("ROLLBACK")  # the file's own BEGIN, failed or never committed
        if code is None:
            code = "none"
            error = (
                "migration.sql left a transaction open (BEGIN without COMMIT): "
                "Slipway rolled it back"
            )
    seconds = time.monotonic() - start
    if code is not None:
        logs = (
            "A migration failed to apply. New migrations cannot be applied before the error "
            "is recovered from. Read more about how to resolve migration issues in a "
            f"production database: {RESOLVE_DOC}\n\nMigration name: {m.name}\n\n"
            f"Database error code: {code}\n\nDatabase error:\n{error}\n"
        )
        conn.execute(
            sql.SQL("UPDATE {} SET logs = %s WHERE id = %s").format(table_id(schema)),
            [logs, row_id],
        )
        raise MigrationFailed(
            f"P3018: migration {m.name} failed ({code}: {_bare(error)}); later "
            f"migrations did not run and deploys stay blocked until you fix the database and "
            f"run `slipway migrate resolve --rolled-back {m.name}` (or `--applied {m.name}` "
            "if you completed it by hand)",
            migration=m.name,
            logs=logs,
            code="P3018",
        )
    conn.execute(
        sql.SQL(
            "UPDATE {} SET applied_steps_count = applied_steps_count + 1, finished_at = %s "
            "WHERE id = %s"
        ).format(table_id(schema)),
        [utc_now(), row_id],
    )
    return seconds


def _database_error(exc: psycopg.Error, script: str) -> tuple[str, str]:
    """SQLSTATE and the error as Prisma logs it: message, detail, hint, position."""
    diag = exc.diag
    if not diag.sqlstate:
        return "none", str(exc).strip()
    lines = [f"{diag.severity_nonlocalized or 'ERROR'}: {diag.message_primary}"]
    lines += [
        f"{label}: {value}"
        for label, value in (
            ("DETAIL", diag.message_detail),
            ("HINT", diag.message_hint),
            ("CONTEXT", diag.context),
        )
        if value
    ]
    text = "\n".join(lines)
    if diag.statement_position:
        text += "\n\nPosition:\n" + _excerpt(script, int(diag.statement_position))
    return diag.sqlstate, text


def _bare(error: str) -> str:
    """The first line of a database error without its severity, for one-line messages."""
    first = error.strip().splitlines()[0] if error.strip() else ""
    return re.sub(r"^(ERROR|FATAL|PANIC): ", "", first)


def _excerpt(script: str, position: int) -> str:
    """The error's line and up to five before it, numbered (position counts characters)."""
    lines = script.split("\n")
    shown = [line.rstrip("\r") for line in lines]
    end = 0
    for number, line in enumerate(lines, 1):
        end += len(line) + 1
        if position <= end:
            first = max(1, number - 5)
            return "\n".join(f"{n:>3} {shown[n - 1]}".rstrip() for n in range(first, number + 1))
    return ""


def _refuse_failed(rows: list[MigrationRow], db: PostgresSettings) -> None:
    failed = [r for r in rows if r.finished_at is None and r.rolled_back_at is None]
    if not failed:
        return
    first = failed[0]
    details = "\n".join(
        f"The `{r.migration_name}` migration started at "
        f"{r.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f} UTC failed"
        + (f" with the following logs:\n{r.logs.strip()}" if r.logs and r.logs.strip() else "")
        for r in failed
    )
    error = _bare(database_error_line(first.logs or "")) or "no logs recorded"
    raise MigrationFailed(
        f"P3009: migration {first.migration_name} failed on {db.display()} "
        f"({error}) and blocks deploys: fix the database, then run `slipway migrate resolve "
        f"--rolled-back {first.migration_name}` (or `--applied {first.migration_name}` if you "
        "completed it by hand)",
        migration=first.migration_name,
        logs="migrate found failed migrations in the target database, new migrations will not "
        "be applied. Read more about how to resolve migration issues in a production database: "
        f"{RESOLVE_DOC}\n{details}",
        code="P3009",
    )


def _refuse_non_empty(conn: psycopg.Connection, db: PostgresSettings, schema: str) -> None:
    row = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname <> 'spatial_ref_sys' "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
        "AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1 LIMIT 1",
        [schema],
    ).fetchone()
    if row:
        raise SlipwayError(
            f"P3005: {db.display()} already has tables in schema {schema} (e.g. {row[0]}) but "
            f"no {TABLE} table: baseline it first with `slipway migrate resolve --applied NAME` "
            "for each migration its schema already contains (https://pris.ly/d/migrate-baseline)"
        )
