"""`slipway migrate status|deploy|resolve`: the runbooks' migrate.sh, without Node by default.

No Prefect here: these commands call `tasks.prisma` directly and start in about a second.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deployments.cli_common import JsonOpt, fail, show
from deployments.cli_style import SlipwayTyper

if TYPE_CHECKING:
    from blocks.settings import PostgresSettings

migrate_app = SlipwayTyper(
    help="Prisma migrations: status, deploy, resolve (native, or with --prisma-schema the "
    "Prisma CLI).",
    no_args_is_help=True,
)

DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql://user@host:5432/db[?schema=public] (default: DATABASE_URL; "
        "password in PGPASSWORD).",
        show_default=False,
    ),
]
MigrationsOpt = Annotated[
    Path, typer.Option("--migrations", help="The migrations folder (prisma/migrations).")
]


def _database(
    url: str | None, migrations: Path | None = None
) -> tuple[PostgresSettings, str | None]:
    """Settings and Prisma's `?schema=` from --database-url or DATABASE_URL; every problem
    with them and with the migrations folder (when it is needed) in one line."""
    from blocks.config_check import combined
    from blocks.errors import SlipwayError
    from blocks.input_checks import refuse_url_password
    from blocks.settings import PostgresSettings
    from tasks.prisma import schema_from_url

    problems = []
    found = None
    try:
        if url:
            refuse_url_password(url, "--database-url")
        url = url or os.environ.get("DATABASE_URL")
        if not url:
            problems.append("no database: pass --database-url or set DATABASE_URL")
        else:
            found = PostgresSettings.from_url(url), schema_from_url(url)
    except SlipwayError as exc:
        problems.append(str(exc))
    except ValueError as exc:  # urlsplit on a malformed port; the URL may hold a password
        problems.append(f"the database URL is malformed ({exc}): fix it")
    if migrations is not None and not migrations.is_dir():
        problems.append(
            f"migrations folder {migrations} not found: pass --migrations path/to/prisma/migrations"
        )
    if problems or found is None:
        fail(str(combined(problems)))
    return found


def _progress() -> logging.Logger:
    """Progress on stderr (stdout carries the result); a private logger, no global handlers."""

    class Plain(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = record.getMessage()
            return f"warning: {text}" if record.levelno >= logging.WARNING else text

    log = logging.Logger("slipway.migrate", logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Plain())
    log.addHandler(handler)
    return log


@migrate_app.command()
def status(
    database_url: DatabaseUrlOpt = None,
    migrations: MigrationsOpt = Path("prisma/migrations"),
    as_json: JsonOpt = False,
) -> None:
    """Compare the migrations folder with the database; exit 1 unless it is up to date.

    --json: {"database", "local", "applied", "pending", "failed", "failed_logs", "modified",
    "missing_locally", "ok", ...}.
    """
    from blocks.errors import SlipwayError
    from tasks.prisma import migration_status

    db, schema = _database(database_url, migrations)
    try:
        found = migration_status(db, migrations, schema=schema)
    except SlipwayError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({**found.model_dump(mode="json"), "ok": found.ok}))
    else:
        typer.echo(found.summary())
    if not found.ok:
        raise typer.Exit(1)


@migrate_app.command()
def deploy(
    database_url: DatabaseUrlOpt = None,
    migrations: MigrationsOpt = Path("prisma/migrations"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the pending migrations and their SQL only.")
    ] = False,
    prisma_schema: Annotated[
        Path | None,
        typer.Option(
            help="Run `npx prisma migrate deploy --schema PATH` instead (needs Node and the "
            "app's node_modules); PATH is relative to --app-dir.",
            show_default=False,
        ),
    ] = None,
    app_dir: Annotated[
        Path, typer.Option(help="With --prisma-schema: where npx runs (the app's checkout).")
    ] = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Apply the pending migrations, as `prisma migrate deploy` (--dry-run: natively, always).

    --json: {"database", "dry_run", "applied": ["name", ...], "durations": {name: seconds},
    "sql": {name: text}}; with --prisma-schema {"mode": "cli", "output"}.
    """
    from blocks.errors import SlipwayError
    from tasks.prisma import MigrationFailed, deploy_migrations, prisma_cli_deploy

    cli = prisma_schema is not None and not dry_run
    db, schema = _database(database_url, None if cli else migrations)
    try:
        if prisma_schema is not None and cli:
            output = prisma_cli_deploy(db, prisma_schema, app_dir, schema=schema)
            typer.echo(json.dumps({"mode": "cli", "output": output}) if as_json else output)
            return
        report = deploy_migrations(db, migrations, dry_run=dry_run, schema=schema, log=_progress())
    except MigrationFailed as exc:
        typer.echo(exc.logs.rstrip(), err=True)
        fail(str(exc))
    except SlipwayError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(report.model_dump_json())
    elif dry_run:
        for name, text in report.sql.items():
            typer.echo(f"-- {name}\n{text.rstrip()}\n")
        typer.echo(f"{len(report.sql)} pending migration(s); dry run, nothing changed")
    elif report.applied:
        typer.echo(f"{len(report.applied)} migration(s) applied:")
        for name in report.applied:
            typer.echo(f"  {name}  ({report.durations[name]:.2f} s)")
    else:
        typer.echo("No pending migrations to apply.")


@migrate_app.command()
def resolve(
    database_url: DatabaseUrlOpt = None,
    migrations: MigrationsOpt = Path("prisma/migrations"),
    applied: Annotated[
        str | None, typer.Option(help="Record NAME as applied (completed by hand, or a baseline).")
    ] = None,
    rolled_back: Annotated[
        str | None, typer.Option(help="Mark NAME's failed attempt rolled back: deploy retries it.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Settle a failed migration (or baseline a database), as `prisma migrate resolve`.

    --json: {"migration", "marked": "applied" or "rolled_back"}.
    """
    from blocks.errors import SlipwayError
    from tasks.prisma import resolve_migration

    db, schema = _database(database_url, migrations)
    try:
        resolve_migration(db, migrations, applied=applied, rolled_back=rolled_back, schema=schema)
    except SlipwayError as exc:
        fail(str(exc))
    marked = "applied" if applied else "rolled_back"
    show(
        {"migration": applied or rolled_back, "marked": marked},
        as_json,
        f"Migration {applied or rolled_back} marked as {marked.replace('_', ' ')}.",
    )
