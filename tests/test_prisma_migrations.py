"""Prisma migrations in native mode against a real PostgreSQL: Prisma's bookkeeping, row by row.

The Prisma CLI cannot run on these machines (its engine download is unreachable), so the
rows are checked against what its schema engine writes (see tests/prisma_histories.py for
its DDL) and CLI mode only for the command Slipway builds and its errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner

from blocks.errors import ConfigError, SlipwayError
from blocks.settings import PostgresSettings
from deployments.cli import app
from tasks.prisma import (
    LOCK_ID,
    MigrationFailed,
    deploy_migrations,
    migration_status,
    prisma_cli_deploy,
    resolve_migration,
    script_problem,
)
from tests.harness.postgres import PostgresInfo
from tests.pg_fixtures import create_database
from tests.prisma_histories import (
    PRISMA_CREATE_TABLE,
    REAL_WORLD,
    generated_history,
    write_history,
)

pytestmark = pytest.mark.postgres

Row = dict[str, Any]


@pytest.fixture
def db(postgres: PostgresInfo) -> PostgresSettings:
    """A new, empty database."""
    return PostgresSettings.from_url(postgres.url(create_database(postgres, sql="")))


def query(db: PostgresSettings, text: str, *params: Any) -> list[Row]:
    with psycopg.connect(**db.conninfo(), autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(text, params or None)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def migration_rows(db: PostgresSettings, schema: str = "public") -> list[Row]:
    return query(db, f'SELECT * FROM "{schema}"._prisma_migrations ORDER BY started_at')  # noqa: S608


def has_table(db: PostgresSettings, name: str, schema: str = "public") -> bool:
    return bool(query(db, "SELECT to_regclass(%s) AS t", f'"{schema}"."{name}"')[0]["t"])


def assert_applied_as_prisma(row: Row, name: str, script: bytes) -> None:
    """The row `prisma migrate deploy` leaves after applying a migration."""
    assert row["migration_name"] == name
    assert str(uuid.UUID(row["id"])) == row["id"]
    assert uuid.UUID(row["id"]).version == 4
    assert row["checksum"] == hashlib.sha256(script).hexdigest()
    assert row["finished_at"] is not None
    assert row["finished_at"] >= row["started_at"]
    assert row["logs"] is None
    assert row["rolled_back_at"] is None
    assert row["applied_steps_count"] == 1


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


def test_a_long_history_applies_once_with_prismas_rows_and_table(
    db: PostgresSettings, postgres: PostgresInfo, tmp_path: Path
) -> None:
    history = generated_history(300)
    # Written newest first: only folder-name order makes the history apply.
    folder = write_history(tmp_path, dict(reversed(history.migrations.items())))

    before = migration_status(db, folder)
    assert before.pending == list(history.migrations)
    assert not before.has_migrations_table
    assert not has_table(db, "_prisma_migrations")  # status only reads

    report = deploy_migrations(db, folder)
    assert report.applied == list(history.migrations)
    assert set(report.durations) == set(history.migrations)
    rows = migration_rows(db)
    assert [r["migration_name"] for r in rows] == list(history.migrations)
    for row, (name, text) in zip(rows, history.migrations.items(), strict=True):
        assert_applied_as_prisma(row, name, text.encode())
    assert len({r["id"] for r in rows}) == 300

    # What the 300 scripts built is really there.
    tables = query(
        db,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> %s",
        "_prisma_migrations",
    )
    assert {t["tablename"] for t in tables} == history.tables
    columns = query(
        db,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name <> '_prisma_migrations'",
    )
    assert {(c["table_name"], c["column_name"]) for c in columns} == history.columns
    indexes = query(
        db,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename <> '_prisma_migrations'",
    )
    assert {i["indexname"] for i in indexes} == history.indexes
    enums = query(
        db,
        "SELECT typname FROM pg_type WHERE typtype = 'e' AND typnamespace = 'public'::regnamespace",
    )
    assert {e["typname"] for e in enums} == history.enums
    role = query(db, 'SELECT enum_range(NULL::"Role")::text[] AS v')[0]["v"]
    assert role == history.role_values

    # A second deploy is a no-op, and the rows are untouched.
    again = deploy_migrations(db, folder)
    assert again.applied == []
    assert migration_rows(db) == rows
    status = migration_status(db, folder)
    assert status.ok
    assert status.applied == list(history.migrations)

    # The table is the one Prisma's own DDL creates: same columns, types, defaults, key.
    reference = PostgresSettings.from_url(
        postgres.url(create_database(postgres, sql=PRISMA_CREATE_TABLE))
    )
    shape = (
        "SELECT column_name, ordinal_position, data_type, character_maximum_length, "
        "is_nullable, column_default FROM information_schema.columns "
        "WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position"
    )
    assert query(db, shape) == query(reference, shape)
    key = (
        "SELECT conname, contype, pg_get_constraintdef(oid) AS def FROM pg_constraint "
        "WHERE conrelid = '_prisma_migrations'::regclass"
    )
    assert query(db, key) == query(reference, key)


def test_real_world_files_apply_as_postgresql_runs_them(
    db: PostgresSettings, tmp_path: Path
) -> None:
    folder = write_history(tmp_path, REAL_WORLD)
    dry = deploy_migrations(db, folder, dry_run=True)
    assert dry.sql == REAL_WORLD
    assert not has_table(db, "_prisma_migrations")
    assert not has_table(db, "Customer")

    report = deploy_migrations(db, folder)
    assert report.applied == list(REAL_WORLD)
    for row, (name, text) in zip(migration_rows(db), REAL_WORLD.items(), strict=True):
        assert_applied_as_prisma(row, name, text.encode())

    customers = query(db, 'SELECT "email", "display;name" AS name FROM "Customer" ORDER BY "id"')
    assert customers == [
        {"email": f"c{i}@example.com", "name": f"Customer; {i}"} for i in (1, 2, 3)
    ]
    index = query(
        db,
        "SELECT i.indisvalid, i.indisunique FROM pg_index i "
        "WHERE i.indexrelid = '\"Customer_email_key\"'::regclass",
    )
    assert index == [{"indisvalid": True, "indisunique": True}]  # CONCURRENTLY, alone: built
    assert query(db, 'SELECT enum_range(NULL::"OrderStatus")::text[] AS v')[0]["v"] == [
        "PAID",
        "SHIPPED",
    ]
    orders = query(
        db, 'SELECT "status"::text AS s, "shippedAt" IS NOT NULL AS shipped FROM "Order"'
    )
    assert orders == [{"s": "SHIPPED", "shipped": True}] * 3
    assert query(db, "SELECT count(*) AS n FROM pg_proc WHERE proname = 'touch_note'")[0]["n"] == 1
    assert not has_table(db, "nope")


def test_concurrently_beside_other_statements_is_refused_before_anything_runs(
    db: PostgresSettings, tmp_path: Path
) -> None:
    mixed = (
        '-- CreateTable\nCREATE TABLE "Audit" ("id" SERIAL PRIMARY KEY, "at" TIMESTAMP(3));\n\n'
        '-- CreateIndex\nCREATE INDEX CONCURRENTLY "Audit_at_idx" ON "Audit"("at");\n'
    )
    folder = write_history(
        tmp_path,
        {
            "20240101000000_init": 'CREATE TABLE "First" ("id" INTEGER);\n',
            "20240102000000_audit": mixed,
        },
    )
    # The premise: PostgreSQL rejects this file sent whole (as Prisma sends it), and runs its
    # two statements sent one by one (the fix: two migrations).
    with psycopg.connect(**db.conninfo(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ActiveSqlTransaction, match="transaction block"):
            conn.execute(mixed.encode())
        assert not has_table(db, "Audit")  # the implicit transaction took the table with it
        for statement in mixed.split("\n\n"):
            conn.execute(statement.encode())
        assert has_table(db, "Audit_at_idx")
        conn.execute('DROP TABLE "Audit"')

    for dry_run in (True, False):
        with pytest.raises(SlipwayError) as exc:
            deploy_migrations(db, folder, dry_run=dry_run)
        message = one_line(exc.value)
        assert "20240102000000_audit" in message
        assert "CREATE INDEX CONCURRENTLY" in message
        assert "nothing was changed" in message
    assert not has_table(db, "_prisma_migrations")
    assert not has_table(db, "First")
    assert script_problem(REAL_WORLD["20240103000000_customer_email_key"]) is None
    assert script_problem("VACUUM;\nSELECT 1;") is not None
    assert (
        script_problem("SELECT 'VACUUM'; SELECT $x$ CREATE INDEX CONCURRENTLY i ON t(c) $x$;")
        is None
    )


FAILING = {
    "20240201000000_init": """\
CREATE TYPE "Plan" AS ENUM ('FREE');
CREATE TABLE "Account" ("id" SERIAL PRIMARY KEY, "plan" "Plan" NOT NULL DEFAULT 'FREE');
INSERT INTO "Account" DEFAULT VALUES;
""",
    "20240202000000_pro_plan": """\
-- AlterEnum
ALTER TYPE "Plan" ADD VALUE 'PRO';

-- CreateTable
CREATE TABLE "Invoice" ("id" SERIAL PRIMARY KEY);

-- Upgrade everyone (the new value is not committed yet: PostgreSQL refuses it)
UPDATE "Account" SET "plan" = 'PRO';
""",
    "20240203000000_account_name": 'ALTER TABLE "Account" ADD COLUMN "name" TEXT;\n',
}


def test_a_failed_migration_is_recorded_blocks_deploys_and_is_resolved(
    db: PostgresSettings, tmp_path: Path
) -> None:
    folder = write_history(tmp_path, FAILING)
    failed_name = "20240202000000_pro_plan"
    with pytest.raises(MigrationFailed) as exc:
        deploy_migrations(db, folder)
    failure = exc.value
    message = one_line(failure)
    assert message.startswith(
        f'P3018: migration {failed_name} failed (55P04: unsafe use of new value "PRO" of enum '
        'type "Plan"); '
    )
    assert f"resolve --rolled-back {failed_name}" in message
    assert failure.migration == failed_name
    assert failure.logs.startswith("A migration failed to apply.")
    assert f"Migration name: {failed_name}" in failure.logs
    assert "Database error code: 55P04" in failure.logs
    assert 'ERROR: unsafe use of new value "PRO" of enum type "Plan"' in failure.logs
    assert "HINT: New enum values must be committed before they can be used." in failure.logs
    assert """  8 UPDATE "Account" SET "plan" = 'PRO';""" in failure.logs  # Position: the line

    first, failed = migration_rows(db)
    assert_applied_as_prisma(first, "20240201000000_init", FAILING["20240201000000_init"].encode())
    assert failed["migration_name"] == failed_name
    assert failed["finished_at"] is None
    assert failed["rolled_back_at"] is None
    assert failed["applied_steps_count"] == 0
    assert failed["logs"] == failure.logs
    assert failed["checksum"] == hashlib.sha256(FAILING[failed_name].encode()).hexdigest()
    # One implicit transaction: nothing of the failed file stayed.
    assert not has_table(db, "Invoice")
    assert query(db, 'SELECT enum_range(NULL::"Plan")::text[] AS v')[0]["v"] == ["FREE"]

    status = migration_status(db, folder)
    assert status.failed == [failed_name]
    assert status.pending == ["20240203000000_account_name"]
    assert status.failed_logs[failed_name] == failure.logs
    assert not status.ok

    for dry_run in (True, False):
        with pytest.raises(MigrationFailed) as blocked:
            deploy_migrations(db, folder, dry_run=dry_run)
        assert one_line(blocked.value).startswith(f"P3009: migration {failed_name} failed")
        assert blocked.value.code == "P3009"
        assert "unsafe use of new value" in str(blocked.value)
        assert blocked.value.logs.startswith("migrate found failed migrations")
        assert f"The `{failed_name}` migration started at " in blocked.value.logs
        assert " UTC failed with the following logs:\n" + failure.logs.strip() in blocked.value.logs
    assert len(migration_rows(db)) == 2

    with pytest.raises(SlipwayError, match=r"^P3012"):
        resolve_migration(db, folder, rolled_back="20240201000000_init")
    with pytest.raises(SlipwayError, match=r"^P3011"):
        resolve_migration(db, folder, rolled_back="pro_plan")
    resolve_migration(db, folder, rolled_back=failed_name)
    rolled = migration_rows(db)[1]
    assert rolled["rolled_back_at"] is not None
    assert {k: v for k, v in rolled.items() if k != "rolled_back_at"} == {
        k: v for k, v in failed.items() if k != "rolled_back_at"
    }

    # The fix: the value in one migration, its use in the next one.
    fixed = FAILING[failed_name].replace("UPDATE", "-- moved to the next migration\n-- UPDATE")
    (folder / failed_name / "migration.sql").write_text(fixed)
    write_history(
        tmp_path, {"20240202000001_upgrade_plans": 'UPDATE "Account" SET "plan" = \'PRO\';\n'}
    )
    report = deploy_migrations(db, folder)
    assert report.applied == [
        failed_name,
        "20240202000001_upgrade_plans",
        "20240203000000_account_name",
    ]
    rows = migration_rows(db)
    assert [r["migration_name"] for r in rows] == [
        "20240201000000_init",
        failed_name,
        failed_name,
        "20240202000001_upgrade_plans",
        "20240203000000_account_name",
    ]
    assert rows[1] == rolled
    assert_applied_as_prisma(rows[2], failed_name, fixed.encode())
    assert query(db, 'SELECT "plan"::text AS p FROM "Account"') == [{"p": "PRO"}]
    assert migration_status(db, folder).ok  # the rolled-back attempt does not count as an edit


def test_a_failure_inside_the_files_own_transaction_and_an_unclosed_one(
    db: PostgresSettings, tmp_path: Path
) -> None:
    explicit = "20240301000000_explicit"
    folder = write_history(
        tmp_path,
        {
            explicit: 'BEGIN;\nCREATE TABLE "Half" ("id" INTEGER);\nINSERT INTO "Missing" VALUES (1);\nCOMMIT;\n'
        },
    )
    with pytest.raises(MigrationFailed, match="42P01") as exc:
        deploy_migrations(db, folder)
    assert 'ERROR: relation "Missing" does not exist' in exc.value.logs
    assert not has_table(db, "Half")
    (row,) = migration_rows(db)  # recorded: the aborted transaction was rolled back first
    assert row["logs"] == exc.value.logs
    assert row["finished_at"] is None

    resolve_migration(db, folder, rolled_back=explicit)
    unclosed = "20240302000000_unclosed"
    shutil.rmtree(folder / explicit)
    write_history(tmp_path, {unclosed: 'BEGIN;\nCREATE TABLE "Open" ("id" INTEGER);\n'})
    with pytest.raises(MigrationFailed, match="left a transaction open") as exc:
        deploy_migrations(db, folder)
    assert not has_table(db, "Open")
    assert migration_rows(db)[-1]["logs"] == exc.value.logs
    assert migration_status(db, folder).failed == [unclosed]


def test_edited_after_apply_is_reported_and_deploy_warns_and_goes_on(
    db: PostgresSettings, tmp_path: Path
) -> None:
    folder = write_history(tmp_path, {"20240401000000_init": 'CREATE TABLE "T" ("id" INTEGER);\n'})
    deploy_migrations(db, folder)
    script = folder / "20240401000000_init" / "migration.sql"

    script.write_bytes(script.read_bytes().replace(b"\n", b"\r\n"))  # a Windows checkout
    assert migration_status(db, folder).ok
    old_style = "".join(f"{b:x}" for b in hashlib.sha256(script.read_bytes()).digest())
    assert len(old_style) < 64  # this script's digest has bytes below 0x10
    query(db, "UPDATE _prisma_migrations SET checksum = %s", old_style)  # pre-2021 Prisma rows
    assert migration_status(db, folder).ok

    script.write_text('CREATE TABLE "T" ("id" BIGINT);\n')
    status = migration_status(db, folder)
    assert status.modified == ["20240401000000_init"]
    assert not status.ok
    write_history(tmp_path, {"20240402000000_more": 'CREATE TABLE "U" ("id" INTEGER);\n'})
    report = deploy_migrations(db, folder)
    assert report.applied == ["20240402000000_more"]
    assert len(report.warnings) == 1
    assert "20240401000000_init was edited after it was applied" in report.warnings[0]


def test_missing_locally_is_reported(db: PostgresSettings, tmp_path: Path) -> None:
    folder = write_history(tmp_path, {"20240501000000_a": "SELECT 1;\n", "20240502000000_b": ""})
    assert deploy_migrations(db, folder).applied == ["20240501000000_a", "20240502000000_b"]
    shutil.rmtree(folder / "20240502000000_b")
    status = migration_status(db, folder)
    assert status.missing_locally == ["20240502000000_b"]
    assert not status.ok
    assert "missing from" in deploy_migrations(db, folder).warnings[0]


def test_baseline_and_resolve_applied(db: PostgresSettings, tmp_path: Path) -> None:
    init = 'CREATE TABLE "Legacy" ("id" INTEGER);\n'
    folder = write_history(
        tmp_path,
        {
            "20240601000000_init": init,
            "20240602000000_next": 'ALTER TABLE "Legacy" ADD COLUMN "x" INTEGER;\n',
            "20240603000000_broken": "SELECT * FROM nowhere;\n",
        },
    )
    query(db, init)  # made by `prisma db push` long ago: tables, no _prisma_migrations
    with pytest.raises(SlipwayError) as exc:
        deploy_migrations(db, folder)
    assert one_line(exc.value).startswith("P3005:")
    assert "resolve --applied" in str(exc.value)
    assert not has_table(db, "_prisma_migrations")

    resolve_migration(db, folder, applied="20240601000000_init")
    (baseline,) = migration_rows(db)
    assert baseline["checksum"] == hashlib.sha256(init.encode()).hexdigest()
    assert baseline["logs"] == ""
    assert baseline["applied_steps_count"] == 0
    assert baseline["started_at"] == baseline["finished_at"] is not None
    assert baseline["rolled_back_at"] is None
    assert str(uuid.UUID(baseline["id"])) == baseline["id"]
    with pytest.raises(SlipwayError, match=r"^P3008"):
        resolve_migration(db, folder, applied="20240601000000_init")
    with pytest.raises(SlipwayError, match=r"^P3017"):
        resolve_migration(db, folder, applied="init")
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_migration(db, folder)

    with pytest.raises(MigrationFailed):
        deploy_migrations(db, folder)
    legacy = query(
        db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'Legacy'"
    )
    assert {c["column_name"] for c in legacy} == {"id", "x"}
    # Completed by hand: --applied settles the failed attempt and records it as applied.
    resolve_migration(db, folder, applied="20240603000000_broken")
    rows = migration_rows(db)
    assert [r["migration_name"] for r in rows][-2:] == ["20240603000000_broken"] * 2
    assert rows[-2]["rolled_back_at"] is not None
    assert rows[-2]["finished_at"] is None
    assert rows[-1]["finished_at"] is not None
    assert rows[-1]["logs"] == ""
    assert migration_status(db, folder).ok


def test_deploys_wait_for_prismas_advisory_lock(db: PostgresSettings, tmp_path: Path) -> None:
    folder = write_history(tmp_path, {"20240701000000_init": 'CREATE TABLE "T" ("id" INTEGER);\n'})
    with psycopg.connect(**db.conninfo(), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(72707369)")  # what `prisma migrate deploy` runs
        with pytest.raises(SlipwayError) as exc:
            deploy_migrations(db, folder, lock_timeout=0.2)
        assert one_line(exc.value).startswith("P1002:")
        assert not has_table(db, "_prisma_migrations")
        assert deploy_migrations(db, folder, dry_run=True).sql  # dry runs take no lock

        outcome: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: outcome.update(report=deploy_migrations(db, folder))
        )
        worker.start()
        waiting: list[Row] = []
        for _ in range(500):  # until the deploy queues behind the holder (no timing assumed)
            waiting = query(
                db,
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
                LOCK_ID,
            )
            if waiting or not worker.is_alive():
                break
            time.sleep(0.02)
        assert waiting, "the deploy did not wait for the lock"
        assert not has_table(db, "_prisma_migrations")
        holder.execute("SELECT pg_advisory_unlock(72707369)")
        worker.join(60)
    assert outcome["report"].applied == ["20240701000000_init"]
    assert query(db, "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'")[0]["n"] == 0


# --- the command line ---------------------------------------------------------------------


def slipway(*args: str, env: dict[str, str]) -> Any:
    """`slipway ARGS` in process, with exactly these variables set (and DATABASE_URL unset)."""
    runner = CliRunner()
    clean = {k: None for k in ("DATABASE_URL", "PGPASSWORD") if k not in env}
    return runner.invoke(app, list(args), env={**clean, **env})


def test_cli_status_deploy_resolve(
    db: PostgresSettings, postgres: PostgresInfo, tmp_path: Path
) -> None:
    folder = write_history(tmp_path, FAILING)
    url = postgres.url_without_password(db.database)  # a password in it is refused (ps)
    env = {
        "DATABASE_URL": postgres.url_without_password(db.database),
        "PGPASSWORD": postgres.password,
    }
    common = ("--migrations", str(folder))

    status = slipway("migrate", "status", *common, env=env)
    assert status.exit_code == 1
    assert "Not yet applied (3):" in status.stdout
    assert not has_table(db, "_prisma_migrations")

    dry = slipway("migrate", "deploy", "--dry-run", *common, env=env)
    assert dry.exit_code == 0, dry.stderr
    assert (
        "-- 20240202000000_pro_plan\n-- AlterEnum\nALTER TYPE \"Plan\" ADD VALUE 'PRO';"
        in dry.stdout
    )
    assert "3 pending migration(s); dry run, nothing changed" in dry.stdout
    assert not has_table(db, "_prisma_migrations")

    failed = slipway(
        "migrate", "deploy", *common, "--database-url", url, env={"PGPASSWORD": postgres.password}
    )
    assert failed.exit_code == 1
    *logs, last = failed.stderr.strip().splitlines()
    assert last.startswith("error: P3018: migration 20240202000000_pro_plan failed (55P04")
    assert "applying 20240201000000_init" in logs
    assert "Database error code: 55P04" in logs
    assert postgres.password not in failed.stdout + failed.stderr

    status = slipway("migrate", "status", *common, "--json", env=env)
    assert status.exit_code == 1
    found = json.loads(status.stdout)
    assert found["failed"] == ["20240202000000_pro_plan"]
    assert found["ok"] is False
    blocked = slipway("migrate", "deploy", *common, env=env)
    assert blocked.exit_code == 1
    assert (
        blocked.stderr.strip()
        .splitlines()[-1]
        .startswith("error: P3009: migration 20240202000000_pro_plan")
    )

    neither = slipway("migrate", "resolve", *common, env=env)
    assert (neither.exit_code, neither.stderr) == (
        1,
        "error: pass exactly one of --applied NAME or --rolled-back NAME\n",
    )
    query(db, "ALTER TYPE \"Plan\" ADD VALUE 'PRO'")  # the operator finishes it by hand...
    query(db, 'CREATE TABLE "Invoice" ("id" SERIAL PRIMARY KEY)')
    query(db, 'UPDATE "Account" SET "plan" = \'PRO\'')
    resolved = slipway(
        "migrate", "resolve", "--applied", "20240202000000_pro_plan", *common, env=env
    )
    assert resolved.exit_code == 0, resolved.stderr  # ...and records it
    assert "marked as applied" in resolved.stdout

    deployed = slipway("migrate", "deploy", *common, "--json", env=env)
    assert deployed.exit_code == 0, deployed.stderr
    assert json.loads(deployed.stdout)["applied"] == ["20240203000000_account_name"]
    status = slipway("migrate", "status", *common, env=env)
    assert status.exit_code == 0, status.stdout
    assert status.stdout.strip().endswith("Database schema is up to date!")


def test_cli_one_line_errors(db: PostgresSettings, postgres: PostgresInfo, tmp_path: Path) -> None:
    folder = write_history(tmp_path, {"20240801000000_a": "SELECT 1;\n"})
    nowhere = slipway("migrate", "status", "--migrations", str(folder), env={})
    assert (nowhere.exit_code, nowhere.stderr) == (
        1,
        "error: no database: pass --database-url or set DATABASE_URL\n",
    )
    env = {"DATABASE_URL": postgres.url(db.database)}
    missing = slipway("migrate", "deploy", "--migrations", str(tmp_path / "nope"), env=env)
    assert missing.exit_code == 1
    assert (
        missing.stderr
        == f"error: migrations folder {tmp_path / 'nope'} not found: pass --migrations path/to/prisma/migrations\n"
    )
    bad = postgres.url_without_password(db.database)
    denied = slipway(
        "migrate",
        "status",
        "--migrations",
        str(folder),
        "--database-url",
        bad,
        env={"PGPASSWORD": "wrong-password"},
    )
    assert denied.exit_code == 1
    assert denied.stderr.startswith("error: PostgreSQL rejected the password")
    assert denied.stderr.count("\n") == 1
    (folder / "20240802000000_empty").mkdir()
    no_sql = slipway("migrate", "status", "--migrations", str(folder), env=env)
    assert no_sql.exit_code == 1
    assert "has no migration.sql" in no_sql.stderr
    assert no_sql.stderr.count("\n") == 1


def test_schema_from_the_url_is_where_migrations_go(
    db: PostgresSettings, postgres: PostgresInfo, tmp_path: Path
) -> None:
    folder = write_history(
        tmp_path, {"20240901000000_init": 'CREATE TABLE "Thing" ("id" INTEGER);\n'}
    )
    url = postgres.url_without_password(db.database) + "?schema=tenant%20one"
    env = {"PGPASSWORD": postgres.password}
    absent = slipway(
        "migrate", "deploy", "--migrations", str(folder), "--database-url", url, env=env
    )
    assert absent.exit_code == 1
    assert absent.stderr.startswith("error: schema tenant one does not exist")
    query(db, 'CREATE SCHEMA "tenant one"')
    done = slipway("migrate", "deploy", "--migrations", str(folder), "--database-url", url, env=env)
    assert done.exit_code == 0, done.stderr
    assert has_table(db, "Thing", "tenant one")
    assert not has_table(db, "Thing")
    assert [r["migration_name"] for r in migration_rows(db, "tenant one")] == [
        "20240901000000_init"
    ]
    assert not has_table(db, "_prisma_migrations")
    assert migration_status(db, folder, schema="tenant one").ok
    assert migration_status(db, folder).pending == ["20240901000000_init"]


def test_status_then_deploy_of_one_migration(db: PostgresSettings, tmp_path: Path) -> None:
    folder = write_history(tmp_path, {"20241001000000_a": 'CREATE TABLE "A" ("id" INTEGER);\n'})
    assert migration_status(db, folder).pending == ["20241001000000_a"]
    assert deploy_migrations(db, folder).applied == ["20241001000000_a"]
    assert has_table(db, "A")


# --- Prisma CLI mode: only the command Slipway builds and its errors ----------------------


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_cli_mode_without_node_is_a_one_line_error(
    db: PostgresSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SlipwayError) as exc:
        prisma_cli_deploy(db, Path("prisma/schema.prisma"), tmp_path)
    assert one_line(exc.value).startswith("npx not found on the PATH: install Node.js")
    fake_tool(tmp_path / "bin", "npx", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(SlipwayError, match=r"^node not found"):
        prisma_cli_deploy(db, Path("prisma/schema.prisma"), tmp_path)
    result = slipway(
        "migrate",
        "deploy",
        "--prisma-schema",
        "prisma/schema.prisma",
        "--app-dir",
        str(tmp_path),
        env={"DATABASE_URL": "postgresql://app@db.invalid/app", "PATH": str(tmp_path / "empty")},
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: npx not found")
    assert result.stderr.count("\n") == 1


def test_cli_mode_command_line_and_environment(
    db: PostgresSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `npx` records what it receives: no claim about Prisma's behaviour."""
    app_dir = tmp_path / "app"
    (app_dir / "prisma").mkdir(parents=True)
    (app_dir / "prisma" / "schema.prisma").write_text(
        'datasource db {\n  provider = "postgresql"\n}\n'
    )
    record = tmp_path / "record.txt"
    fake_tool(
        tmp_path / "bin",
        "npx",
        f"""printf '%s\\n' "$PWD" "$DATABASE_URL" "$@" > {record}
echo "1 migration found in prisma/migrations"
[ -z "$FAIL" ] || {{ echo "Error: P3009 blocked" >&2; echo "url was $DATABASE_URL" >&2; exit 1; }}""",
    )
    fake_tool(tmp_path / "bin", "node", "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")

    output = prisma_cli_deploy(db, Path("prisma/schema.prisma"), app_dir, schema="public")
    assert output == "1 migration found in prisma/migrations"
    cwd, url, *argv = record.read_text().splitlines()
    assert cwd == str(app_dir)
    assert argv == ["--no", "prisma", "migrate", "deploy", "--schema", "prisma/schema.prisma"]
    assert db.password is not None
    assert db.password.get_secret_value() not in " ".join(argv)
    parsed = PostgresSettings.from_url(url)
    assert parsed == db
    assert parse_qs(urlsplit(url).query) == {"schema": ["public"]}

    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(SlipwayError) as exc:
        prisma_cli_deploy(db, Path("prisma/schema.prisma"), app_dir)
    message = one_line(exc.value)
    assert message.startswith("prisma migrate deploy failed (exit 1): ")
    assert "Error: P3009 blocked" in message
    assert db.password.get_secret_value() not in message
    with pytest.raises(ConfigError, match=r"schema\.prisma"):
        prisma_cli_deploy(db, Path("nope/schema.prisma"), app_dir)
