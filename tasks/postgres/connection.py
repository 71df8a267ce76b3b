"""PostgreSQL operations: connections, snapshots and row counts, pg_dump, pg_restore, renames."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings
from tasks.postgres.catalog import TableCount

# The tables whose data pg_dump dumps: not those an extension creates (CREATE EXTENSION
# makes them again), except the extension's configuration tables (pg_extension_config_dump).
TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND (
    NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
    )
    OR EXISTS (SELECT 1 FROM pg_extension e WHERE c.oid = ANY (e.extconfig))
  )
ORDER BY 1, 2
"""
# Any table at all, an extension's included.
HAS_TABLES_SQL = """
SELECT EXISTS (
  SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r'
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
)
"""


def connect(db: PostgresSettings, *, autocommit: bool = False) -> psycopg.Connection:
    """Connect, turning libpq's failures into one line that names the problem and the fix."""
    try:
        return psycopg.connect(**db.conninfo(), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise connection_error(exc, db) from exc


def connection_error(exc: Exception, db: PostgresSettings) -> SlipwayError:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
    where = db.display()
    low = str(exc).lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return SlipwayError(
            f"PostgreSQL rejected the password of role {db.user!r} at {where}: "
            "fix PGPASSWORD, the URL or the PostgresDatabase block"
        )
    if f'database "{db.database}" does not exist' in low:
        return SlipwayError(f"database {db.database!r} does not exist at {where}: check its name")
    if "connection refused" in low or "could not connect" in low or "timeout" in low:
        return SlipwayError(
            f"cannot reach PostgreSQL at {db.host}:{db.port}: is it running? check DATABASE_URL"
        )
    return SlipwayError(f"cannot connect to {where}: {text}")


def server_major(conn: psycopg.Connection) -> int:
    return conn.info.server_version // 10000


def server_version(conn: psycopg.Connection) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def pg_tool(name: str, want_major: int | None = None, *, than: str | None = None) -> Path:
    """A client binary (pg_dump, pg_restore...) at least as new as the server (or `than`).

    Looks in $SLIPWAY_PG_BIN, then Debian's /usr/lib/postgresql/<major>/bin (newest first),
    then the PATH.
    """
    candidates: list[Path] = []
    if os.environ.get("SLIPWAY_PG_BIN"):
        candidates.append(Path(os.environ["SLIPWAY_PG_BIN"]) / name)
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_dir_major, reverse=True):
        candidates.append(Path(d) / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    found = [c for c in candidates if c.exists()]
    if not found:
        raise SlipwayError(f"{name} not found: install the PostgreSQL client (postgresql-client)")
    if want_major is not None:
        for cand in found:
            if tool_major(cand) >= want_major:
                return cand
        newest = found[0]
        raise SlipwayError(
            f"{name} {tool_major(newest)} is older than {than or f'the server ({want_major})'}: "
            f"install postgresql-client-{want_major} or set SLIPWAY_PG_BIN"
        )
    return found[0]


def _dir_major(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def tool_version(tool: Path) -> str:
    out = subprocess.run(
        [str(tool), "--version"], capture_output=True, text=True, check=True, env=tool_env()
    )
    # `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`: the number after the name.
    found = re.search(r"\) (\d+(?:\.\d+)*)", out.stdout)
    return found.group(1) if found else out.stdout.strip().rsplit(" ", 1)[-1]


def tool_major(tool: Path) -> int:
    return tool_major_of(tool_version(tool)) or 0


def tool_major_of(version: str) -> int | None:
    """The major version in a tool's version string ("15.8" -> 15), None if none is there."""
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else None


def list_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """The tables whose data pg_dump dumps (one TABLE DATA entry each), by schema and name."""
    return [(str(s), str(t)) for s, t in conn.execute(TABLES_SQL).fetchall()]


def count_rows(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> list[TableCount]:
    counts = []
    for schema, table in tables:
        query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
        counts.append(TableCount(schema_name=schema, table=table, rows=int(row[0]) if row else 0))
    return counts


def table_counts(db: PostgresSettings) -> list[TableCount]:
    with connect(db) as conn:
        return count_rows(conn, list_tables(conn))


def database_size(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def database_exists(admin: psycopg.Connection, name: str) -> bool:
    row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def has_tables(conn: psycopg.Connection) -> bool:
    """Whether any table is there, an extension's included: a database that is not empty."""
    return conn.execute(HAS_TABLES_SQL).fetchone() == (True,)


def database_has_tables(db: PostgresSettings) -> bool:
    with connect(db) as conn:
        return has_tables(conn)


def create_database(admin: psycopg.Connection, name: str, owner: str | None = None) -> None:
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if owner:
        query = query + sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    admin.execute(query)


def drop_database(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rename_database(admin: psycopg.Connection, old: str, new: str) -> None:
    """Rename, disconnecting the sessions still on it (a rename needs none)."""
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (old,),
    )
    admin.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def admin_database(db: PostgresSettings) -> PostgresSettings:
    """The same server, connected to the `postgres` maintenance database."""
    return db.with_database("postgres")


# What a libpq tool may inherit: locale, paths, and the operator's TLS, password-file and
# Kerberos settings (the same ones libpq reads inside Slipway). Never the S3 keys, Slipway's
# or Prefect's settings, nor PGSERVICE/PGOPTIONS-style variables that could redirect or
# reconfigure the connection the settings describe.
TOOL_ENV = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"}
    | {"SSL_CERT_FILE", "SSL_CERT_DIR", "KRB5CCNAME", "KRB5_CONFIG"}
    | {"PGPASSFILE", "PGSSLMODE", "PGSSLCERT", "PGSSLKEY", "PGSSLCERTMODE", "PGSSLROOTCERT"}
    | {"PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI", "PGSSLMINPROTOCOLVERSION"}
    | {"PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB"}
    | {"PGGSSDELEGATION", "PGREQUIREPEER", "PGREQUIREAUTH", "PGCHANNELBINDING"}
)


def tool_env() -> dict[str, str]:
    """The environment a PostgreSQL client tool inherits: the allowlist above, nothing else."""
    return {k: v for k, v in os.environ.items() if k in TOOL_ENV or k.startswith("LC_")}


def pg_env(db: PostgresSettings) -> dict[str, str]:
    """The child environment for libpq tools: `tool_env()` plus the target's PG* variables."""
    return {**tool_env(), **db.libpq_env()}
