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

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row
from pydantic import BaseModel, Field

from blocks.errors import ConfigError, SlipwayError
from blocks.settings import PostgresSettings
from tasks.postgres import connect

if TYPE_CHECKING:
    from prefect import Task

    deploy_migrations_task: Task[..., DeployReport]
    migration_status_task: Task[..., MigrationStatus]

LOGGER = logging.getLogger(__name__)
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


class MigrationRow(BaseModel):
    """One row of `_prisma_migrations`: one attempt at one migration."""

    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int


class MigrationStatus(BaseModel):
    """The migrations folder against the database, as `prisma migrate status` sees them."""

    database: str
    migrations_dir: str
    has_migrations_table: bool
    local: list[str] = Field(description="Migration folders, in the order they apply.")
    applied: list[str] = Field(description="Applied (finished, not rolled back), in order.")
    pending: list[str] = Field(description="Local migrations not applied yet.")
    failed: list[str] = Field(description="Unfinished and not rolled back: block deploys.")
    failed_logs: dict[str, str] = Field(description="The recorded logs of each failed one.")
    modified: list[str] = Field(description="Edited after being applied (checksum mismatch).")
    missing_locally: list[str] = Field(description="In the database, not in the folder.")

    @property
    def ok(self) -> bool:
        """Up to date: nothing pending, failed, edited or missing locally."""
        return not (self.pending or self.failed or self.modified or self.missing_locally)

    def summary(self) -> str:
        """Readable lines, `migrate status` style."""
        lines = [
            f"{self.database}: {len(self.local)} migration(s) in {self.migrations_dir}, "
            f"{len(self.applied)} applied"
        ]

        def section(title: str, names: list[str], notes: dict[str, str] | None = None) -> None:
            if names:
                lines.append(f"{title} ({len(names)}):")
                for name in names:
                    note = (notes or {}).get(name)
                    lines.append(f"  {name}" + (f"  -- {note}" if note else ""))

        section("Not yet applied", self.pending)
        errors = {name: database_error_line(logs) for name, logs in self.failed_logs.items()}
        section("Failed, blocking deploys (P3009)", self.failed, errors)
        if self.failed:
            lines.append(
                "  fix the database, then `slipway migrate resolve --rolled-back NAME` "
                "(or `--applied NAME` if you completed it by hand)"
            )
        section("Edited after being applied (checksum mismatch)", self.modified)
        section("Applied to the database but missing locally", self.missing_locally)
        if self.ok:
            lines.append("Database schema is up to date!")
        return "\n".join(lines)


class DeployReport(BaseModel):
    """What a deploy applied, or with dry_run what it would apply."""

    database: str
    dry_run: bool = False
    applied: list[str] = Field(default_factory=list)
    durations: dict[str, float] = Field(
        default_factory=dict, description="Seconds each applied migration took."
    )
    sql: dict[str, str] = Field(
        default_factory=dict, description="Dry run: each pending migration's SQL, in order."
    )
    warnings: list[str] = Field(default_factory=list)


class MigrationFailed(SlipwayError):
    """A migration failed (P3018), or an earlier failure blocks deploys (P3009)."""

    def __init__(self, message: str, migration: str = "", logs: str = "", code: str = "") -> None:
        super().__init__(message)
        self.migration = migration
        self.logs = logs
        self.code = code


@dataclass(frozen=True)
class _Local:
    name: str
    script: bytes

    @property
    def checksum(self) -> str:
        return checksum(self.script)

    def text(self) -> str:
        try:
            return self.script.decode()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"migration {self.name}: migration.sql is not UTF-8 (byte {exc.start}): "
                "save it as UTF-8"
            ) from None


def checksum(script: bytes) -> str:
    """Prisma's checksum of a migration script: sha256, lowercase hex."""
    return hashlib.sha256(script).hexdigest()


def checksum_matches(script: bytes, recorded: str) -> bool:
    """Prisma's comparison: LF and CRLF versions match, and so do old unpadded checksums."""
    for variant in (script, script.replace(b"\r\n", b"\n"), script.replace(b"\n", b"\r\n")):
        digest = hashlib.sha256(variant).digest()
        if recorded and len(recorded) != 64:  # before prisma-engines#1887: bytes not zero-padded
            rendered = "".join(f"{byte:x}" for byte in digest)
        else:
            rendered = digest.hex()
        if rendered == recorded:
            return True
    return False


def schema_from_url(url: str) -> str | None:
    """The `?schema=` of a Prisma database URL; None leaves the search_path (normally public)."""
    values = parse_qs(urlsplit(url).query).get("schema")
    return values[0] if values and values[0] else None


def database_error_line(logs: str) -> str:
    """The first line of the database error in Prisma-style logs (else their first line)."""
    lines = logs.strip().splitlines()
    if "Database error:" in lines:
        after = lines[lines.index("Database error:") + 1 :]
        if after:
            return after[0]
    return lines[0] if lines else ""


# --- status -------------------------------------------------------------------------------


def migration_status(
    db: PostgresSettings, migrations_dir: Path, *, schema: str | None = None
) -> MigrationStatus:
    """Compare the migrations folder with `_prisma_migrations`; reads only, creates nothing."""
    local = _read_local(migrations_dir)
    try:
        with _session(db, schema) as (conn, schema_name):
            has_table = _table_exists(conn, schema_name)
            rows = _rows(conn, schema_name) if has_table else []
    except psycopg.Error as exc:
        raise _db_error(exc, db) from exc
    return _compare(db, migrations_dir, local, rows, has_table)


def _compare(
    db: PostgresSettings,
    migrations_dir: Path,
    local: list[_Local],
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
    local = _read_local(migrations_dir)
    report = DeployReport(database=db.display(), dry_run=dry_run)
    try:
        with _session(db, schema) as (conn, schema_name):
            lock = _no_lock() if dry_run else _advisory_lock(conn, db, lock_timeout)
            with lock:
                has_table = _table_exists(conn, schema_name)
                if not has_table:
                    _refuse_non_empty(conn, db, schema_name)
                rows = _rows(conn, schema_name) if has_table else []
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
                    conn.execute(sql.SQL(CREATE_TABLE).format(table=_table(schema_name)))
                for migration in pending:
                    log.info("applying %s", migration.name)
                    seconds = _apply(conn, db, schema_name, migration)
                    report.applied.append(migration.name)
                    report.durations[migration.name] = round(seconds, 3)
                    log.info("applied %s in %.2f s", migration.name, seconds)
    except psycopg.Error as exc:
        raise _db_error(exc, db) from exc
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


def _apply(conn: psycopg.Connection, db: PostgresSettings, schema: str, m: _Local) -> float:
    """Run one migration with Prisma's bookkeeping around it; its duration in seconds."""
    row_id = str(uuid.uuid4())
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, checksum, started_at, migration_name) VALUES (%s, %s, %s, %s)"
        ).format(_table(schema)),
        [row_id, m.checksum, _now(), m.name],
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
            sql.SQL("UPDATE {} SET logs = %s WHERE id = %s").format(_table(schema)), [logs, row_id]
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
        ).format(_table(schema)),
        [_now(), row_id],
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


# --- resolve ------------------------------------------------------------------------------


def resolve_migration(
    db: PostgresSettings,
    migrations_dir: Path,
    *,
    applied: str | None = None,
    rolled_back: str | None = None,
    schema: str | None = None,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> None:
    """`prisma migrate resolve`: mark one migration as applied, or its failed attempt rolled back.

    `applied`: the migration's failed attempts become rolled back and a finished row is
    added (no script runs); this also baselines a database that has no `_prisma_migrations`.
    `rolled_back`: its failed attempts are marked rolled back, so deploy runs it again.
    """
    if (applied is None) == (rolled_back is None):
        raise ConfigError("pass exactly one of --applied NAME or --rolled-back NAME")
    local = _read_local(migrations_dir) if applied is not None else []
    try:
        with _session(db, schema) as (conn, schema_name), _advisory_lock(conn, db, lock_timeout):
            if applied is not None:
                _mark_applied(conn, db, schema_name, local, applied)
            elif rolled_back is not None:
                _mark_rolled_back(conn, db, schema_name, rolled_back)
    except psycopg.Error as exc:
        raise _db_error(exc, db) from exc


def _mark_applied(
    conn: psycopg.Connection, db: PostgresSettings, schema: str, local: list[_Local], name: str
) -> None:
    migration = next((m for m in local if m.name == name), None)
    if migration is None:
        raise SlipwayError(
            f"P3017: migration {name} is not in the migrations folder: pass the whole folder "
            'name (e.g. "20201207184859_initial_migration")'
        )
    has_table = _table_exists(conn, schema)
    rows = [r for r in _rows(conn, schema) if r.migration_name == name] if has_table else []
    if any(r.finished_at is not None for r in rows):
        raise SlipwayError(
            f"P3008: migration {name} is already recorded as applied in {db.display()}: "
            "nothing to resolve"
        )
    now = _now()
    with conn.transaction():
        if not has_table:
            conn.execute(sql.SQL(CREATE_TABLE).format(table=_table(schema)))
        for row in rows:
            if row.rolled_back_at is None:
                conn.execute(
                    sql.SQL("UPDATE {} SET rolled_back_at = %s WHERE id = %s").format(
                        _table(schema)
                    ),
                    [now, row.id],
                )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, checksum, logs, started_at, finished_at, migration_name) "
                "VALUES (%s, %s, '', %s, %s, %s)"
            ).format(_table(schema)),
            [str(uuid.uuid4()), migration.checksum, now, now, name],
        )


def _mark_rolled_back(
    conn: psycopg.Connection, db: PostgresSettings, schema: str, name: str
) -> None:
    rows = (
        [r for r in _rows(conn, schema) if r.migration_name == name]
        if _table_exists(conn, schema)
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
                        _table(schema)
                    ),
                    [_now(), row.id],
                )


# --- Prisma CLI mode ----------------------------------------------------------------------


def prisma_cli_deploy(
    db: PostgresSettings, schema_path: Path, app_dir: Path, *, schema: str | None = None
) -> str:
    """Run `npx prisma migrate deploy --schema SCHEMA_PATH` in `app_dir`; its output.

    DATABASE_URL (with the password) reaches Prisma through the environment only; `npx --no`
    never downloads Prisma: the app must have it in its node_modules.
    """
    npx = shutil.which("npx")
    if npx is None:
        raise SlipwayError(
            "npx not found on the PATH: install Node.js and npm, or use the native mode "
            "(no Node needed)"
        )
    if shutil.which("node") is None:
        raise SlipwayError("node not found on the PATH: install Node.js, or use the native mode")
    if not app_dir.is_dir():
        raise ConfigError(f"app directory {app_dir} not found: pass the app's checkout")
    if not (app_dir / schema_path).is_file():
        raise ConfigError(
            f"Prisma schema {schema_path} not found in {app_dir}: pass the app's schema.prisma "
            "(e.g. prisma/schema.prisma)"
        )
    env = {
        **os.environ,
        "DATABASE_URL": database_url(db, schema),
        "PRISMA_HIDE_UPDATE_MESSAGE": "1",
    }
    proc = subprocess.run(
        [npx, "--no", "prisma", "migrate", "deploy", "--schema", str(schema_path)],
        cwd=app_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if db.password is not None:
        secret = db.password.get_secret_value()
        for form in (secret, quote(secret, safe="")):
            output = output.replace(form, "***")
    if proc.returncode != 0:
        tail = " | ".join([line.strip() for line in output.splitlines() if line.strip()][-3:])
        raise SlipwayError(
            f"prisma migrate deploy failed (exit {proc.returncode}): {tail or 'no output'}"
        )
    return output


def database_url(db: PostgresSettings, schema: str | None = None) -> str:
    """A Prisma DATABASE_URL for `db`, password included: for a child's environment only."""
    auth = quote(db.user, safe="")
    if db.password is not None:
        auth += ":" + quote(db.password.get_secret_value(), safe="")
    host = f"[{db.host}]" if ":" in db.host else db.host
    query = urlencode({k: v for k, v in (("schema", schema), ("sslmode", db.sslmode)) if v})
    return f"postgresql://{auth}@{host}:{db.port}/{quote(db.database, safe='')}" + (
        f"?{query}" if query else ""
    )


# --- statements that cannot run in a multi-statement file ---------------------------------

_LEXEME = re.compile(
    r"""(?P<space>\s+)
      | (?P<line_comment>--[^\n]*)
      | (?P<block_comment>/\*)
      | (?P<escape_string>[eE]'(?:[^'\\]|\\.|'')*'?)
      | (?P<word>[^\W\d][\w$]*)
      | (?P<quoted>"(?:[^"]|"")*"?)
      | (?P<string>'(?:[^']|'')*'?)
      | (?P<dollar>\$(?P<tag>(?:[^\W\d]\w*)?)\$(?s:.*?)(?:\$(?P=tag)\$|\Z))
      | (?P<semicolon>;)
      | (?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)
_COMMENT_EDGE = re.compile(r"/\*|\*/")


def _statements(script: str) -> list[list[str]]:
    """The script's statements, each as its upper-cased bare words (comments, strings,
    quoted identifiers and dollar-quoted bodies skipped), the way PostgreSQL splits them."""
    statements: list[list[str]] = []
    words: list[str] = []
    nonempty = False
    pos = 0
    while pos < len(script):
        match = _LEXEME.match(script, pos)
        assert match is not None  # `other` matches any character
        kind, pos = match.lastgroup, match.end()
        if kind == "block_comment":  # PostgreSQL's block comments nest
            depth = 1
            while depth and (edge := _COMMENT_EDGE.search(script, pos)):
                depth += 1 if edge.group() == "/*" else -1
                pos = edge.end()
            if depth:
                pos = len(script)
        elif kind == "semicolon":
            if nonempty:
                statements.append(words)
            words, nonempty = [], False
        elif kind not in ("space", "line_comment"):
            nonempty = True
            if kind == "word":
                words.append(match.group().upper())
    if nonempty:
        statements.append(words)
    return statements


def _refuses_transaction(words: list[str]) -> str | None:
    head = words[:4]
    if head[:1] == ["CREATE"] and "INDEX" in head[1:3] and "CONCURRENTLY" in head[2:4]:
        return "CREATE INDEX CONCURRENTLY"
    if head[:3] == ["DROP", "INDEX", "CONCURRENTLY"]:
        return "DROP INDEX CONCURRENTLY"
    if head[:1] == ["REINDEX"] and "CONCURRENTLY" in words[:6]:
        return "REINDEX CONCURRENTLY"
    if head[:2] == ["ALTER", "TABLE"] and "DETACH" in words and words[-1] == "CONCURRENTLY":
        return "DETACH PARTITION CONCURRENTLY"
    if head[:1] == ["VACUUM"]:
        return "VACUUM"
    for pair in (("CREATE", "DATABASE"), ("DROP", "DATABASE"), ("ALTER", "SYSTEM")):
        if tuple(head[:2]) == pair:
            return " ".join(pair)
    if head[:2] in (["CREATE", "TABLESPACE"], ["DROP", "TABLESPACE"]):
        return " ".join(head[:2])
    return None


def script_problem(script: str) -> str | None:
    """Why PostgreSQL would reject this migration.sql as one script, or None."""
    statements = _statements(script)
    if len(statements) < 2:
        return None
    for words in statements:
        what = _refuses_transaction(words)
        if what:
            return (
                f"{what} cannot run inside a transaction block, and PostgreSQL runs a "
                f"migration.sql of {len(statements)} statements as one transaction (so does "
                "Prisma): move it into a migration of its own, as its only statement"
            )
    return None


# --- shared -------------------------------------------------------------------------------


def _read_local(migrations_dir: Path) -> list[_Local]:
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
        found.append(_Local(entry.name, script.read_bytes()))
    return found


@contextmanager
def _session(db: PostgresSettings, schema: str | None) -> Iterator[tuple[psycopg.Connection, str]]:
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
def _advisory_lock(
    conn: psycopg.Connection, db: PostgresSettings, timeout: float
) -> Iterator[None]:
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
def _no_lock() -> Iterator[None]:
    yield


def _table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, TABLE)


def _table_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", [schema, TABLE]
    ).fetchone()
    return row is not None


def _rows(conn: psycopg.Connection, schema: str) -> list[MigrationRow]:
    with conn.cursor(row_factory=class_row(MigrationRow)) as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, "
                "started_at, applied_steps_count FROM {} ORDER BY started_at"
            ).format(_table(schema))
        )
        return cur.fetchall()


def _now() -> datetime:
    return datetime.now(UTC)  # Prisma stamps rows with its own clock, not the server's


def _db_error(exc: psycopg.Error, db: PostgresSettings) -> SlipwayError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SlipwayError(f"PostgreSQL error on {db.display()}: {first}")


# --- Prefect tasks ------------------------------------------------------------------------


def _run_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return LOGGER


def _deploy_in_run(
    db: PostgresSettings, migrations_dir: Path, dry_run: bool = False, schema: str | None = None
) -> DeployReport:
    """`deploy_migrations`, logging to the Prefect run."""
    return deploy_migrations(db, migrations_dir, dry_run=dry_run, schema=schema, log=_run_logger())


def _status_in_run(
    db: PostgresSettings, migrations_dir: Path, schema: str | None = None
) -> MigrationStatus:
    """`migration_status`, logged to the Prefect run."""
    status = migration_status(db, migrations_dir, schema=schema)
    _run_logger().info("%s", status.summary())
    return status


def __getattr__(name: str) -> Any:
    # Prefect takes seconds to import: the tasks are built on first use, so the CLI, which
    # calls the plain functions, starts without it.
    if name not in ("deploy_migrations_task", "migration_status_task"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    globals()["deploy_migrations_task"] = task(name="prisma-migrate-deploy", cache_policy=NO_CACHE)(
        _deploy_in_run
    )
    globals()["migration_status_task"] = task(name="prisma-migrate-status", cache_policy=NO_CACHE)(
        _status_in_run
    )
    return globals()[name]
