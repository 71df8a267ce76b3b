"""The `slipway` command line: runs Slipway's flows, one verb each, with loud one-line errors.

With PREFECT_API_URL set the runs appear in that server's UI; without it they run on the
local API of PREFECT_HOME, shared by every command and started on demand
(deployments/local_api.py).
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import version
from typing import Annotated, cast

import typer

from deployments.backups_cli import backups_app
from deployments.cli_common import (
    DbBlockOpt,
    JsonOpt,
    StoreBlockOpt,
    VerboseOpt,
    check_config,
    fail,
    prefect_api_down,
    require_prefect_api,
    run_flow,
    show,
)
from deployments.cli_style import SlipwayTyper
from deployments.doctor_cli import doctor_cmd
from deployments.files_cli import add_file_commands
from deployments.k8s_cli import flags_app, k8s_app
from deployments.keygen_cli import keygen_cmd
from deployments.migrate_cli import migrate_app
from deployments.release_cli import add_release_commands

app = SlipwayTyper(
    help="Slipway: release and backup automation as Prefect workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(backups_app, name="backups")
app.add_typer(migrate_app, name="migrate")
app.add_typer(k8s_app, name="k8s")
app.add_typer(flags_app, name="flags")
env_app = SlipwayTyper(help="Environments as code (blocks from YAML).", no_args_is_help=True)
app.add_typer(env_app, name="env")
webhook_app = SlipwayTyper(help="The git-tag webhook that starts releases.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


@app.command("version")
def show_version(as_json: JsonOpt = False) -> None:
    """Print Slipway's version (--json: {"version": ...})."""
    show({"version": version("slipway")}, as_json, version("slipway"))


@app.command()
def backup(
    compression: Annotated[str, typer.Option(help="zstd, or gzip for compatibility.")] = "zstd",
    level: Annotated[int, typer.Option(help="Compression level (zstd 1-19, gzip 1-9).")] = 1,
    threads: Annotated[int, typer.Option(help="zstd threads (-1: one per core).")] = -1,
    globals_: Annotated[
        bool, typer.Option("--globals", help="Also pg_dumpall --globals-only.")
    ] = False,
    app_version: Annotated[str | None, typer.Option(help="Recorded in the manifest.")] = None,
    database_block: DbBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Back up the database to the backup store; prints the new backup's id.

    --json: the backup's manifest (id, database, raw_bytes, dump {key, size, sha256},
    duration_seconds, tables...).
    """
    check_config(database=database_block is None, store=store_block is None)
    from flows.backup import backup_database
    from tasks.postgres.catalog import Compression

    if compression not in ("zstd", "gzip"):
        fail(f"unknown compression {compression!r}: use zstd or gzip")
    chosen = cast(Compression, compression)
    m = run_flow(
        lambda: backup_database(
            database_block,
            store_block,
            chosen,
            level,
            threads,
            globals_,
            app_version,
        ),
        verbose,
    )
    show(
        m,
        as_json,
        f"{m['id']}  {m['raw_bytes'] / 1048576:.1f} MiB -> {m['dump']['size'] / 1048576:.1f} MiB "
        f"in {m['duration_seconds']:.1f} s",
    )


@app.command()
def verify(
    backup_id: Annotated[
        str, typer.Argument(metavar="ID|latest", help="The backup (default: the newest).")
    ] = "latest",
    drill: Annotated[bool, typer.Option(help="Also restore into a scratch database.")] = False,
    database_block: DbBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a backup's size, checksum and contents; --drill restores it and compares rows.

    --json: {"backup_id", "ok", "drill", "detail", "verified_at"}.
    """
    check_config(database=database_block is None, store=store_block is None)
    from flows.verify import verify_backup

    r = run_flow(lambda: verify_backup(backup_id, drill, database_block, store_block), verbose)
    show(r, as_json, f"{r['backup_id']} ok: {r['detail']}")


@app.command()
def restore(
    backup_id: Annotated[
        str, typer.Argument(metavar="ID|latest", help="The backup, or the newest: latest.")
    ],
    target_database_url: Annotated[
        str,
        typer.Option(help="postgresql://user@host:port/db (password in PGPASSWORD or ~/.pgpass)."),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Replace a non-empty target.")] = False,
    jobs: Annotated[int, typer.Option(help="pg_restore parallel jobs.")] = 2,
    source_database: Annotated[
        str | None,
        typer.Option(help="Whose backups (default: DATABASE_URL's database, else the target's)."),
    ] = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Restore a backup into the target database (beside it first, then swap names).

    --json: {"target", "backup", "previous", "leftovers_removed", "state"}.
    """
    check_config(
        database=None if source_database is None else False,  # DATABASE_URL names the source
        store=store_block is None,
        database_urls=[(target_database_url, "--target-database-url")],
    )
    down = prefect_api_down()
    if down:
        # A restore is what you need when things are down: it runs on the local API of
        # PREFECT_HOME, and says so once it succeeded (a failure stays one line).
        os.environ.pop("PREFECT_API_URL")
    from blocks.errors import SlipwayError
    from blocks.input_checks import refuse_url_password
    from blocks.settings import PostgresSettings

    try:
        refuse_url_password(target_database_url, "--target-database-url")
        target = PostgresSettings.from_url(target_database_url)
    except SlipwayError as exc:
        fail(str(exc))
    source = source_database or _configured_database()
    from flows.restore import restore_database

    r = run_flow(
        lambda: restore_database(target.display(), backup_id, source, yes, jobs, None, store_block),
        verbose,
    )
    show(r, as_json, r["state"])
    if down:
        typer.echo(
            f"warning: the Prefect API at {down} does not answer: this restore ran on the local "
            "API of PREFECT_HOME, whose history has its run",
            err=True,
        )


def _configured_database() -> str | None:
    """DATABASE_URL's database (the app's, whose backups a restore takes by default), if set."""
    from blocks.errors import SlipwayError
    from blocks.settings import PostgresSettings

    url = os.environ.get("DATABASE_URL")
    if not url:
        return None
    try:
        return PostgresSettings.from_url(url).database
    except (SlipwayError, ValueError):  # the URL may hold a password: never echo it
        fail(
            "DATABASE_URL must look like postgresql://user@host:5432/dbname, as it names the "
            "source database by default: fix it, or pass --source-database"
        )


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    keep_last: Annotated[int, typer.Option(help="Keep the N newest backups.")] = 7,
    keep_daily: Annotated[
        int, typer.Option(help="Keep the newest backup of each of the N latest days with one.")
    ] = 7,
    keep_weekly: Annotated[
        int, typer.Option(help="The same for the N latest ISO weeks with a backup.")
    ] = 4,
    keep_monthly: Annotated[
        int, typer.Option(help="The same for the N latest months with a backup.")
    ] = 6,
    min_keep: Annotated[
        int, typer.Option(help="Never keep fewer than N backups: the newest fill in.")
    ] = 3,
    database_block: DbBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Apply retention: keep-last plus daily, weekly and monthly backups.

    --json: {"dry_run", "keep": [{"id", "reasons"}], "delete": ["id", ...], "plan"}.
    """
    check_config(database=database_block is None, store=store_block is None)
    from flows.prune import prune_backups
    from tasks.retention import RetentionPolicy

    try:
        policy = RetentionPolicy(keep_last, keep_daily, keep_weekly, keep_monthly, min_keep)
    except ValueError as exc:
        fail(str(exc))
    r = run_flow(lambda: prune_backups(dry_run, policy, database_block, store_block), verbose)
    show(r, as_json, r["plan"])


add_file_commands(app)
app.command("keygen")(keygen_cmd)


# After the backup commands, as `slipway --help` lists them.
add_release_commands(app)
app.command("doctor")(doctor_cmd)


@env_app.command("apply")
def env_apply(
    file: Annotated[str, typer.Argument(help="Environment YAML (secrets as ${VAR}).")],
    as_json: JsonOpt = False,
) -> None:
    """Create or update an environment's blocks from YAML; the whole file is checked first.

    --json: {"saved": ["block name", ...]}.
    """
    from pathlib import Path

    from blocks.env_file import apply_environment, load_environment_file
    from blocks.errors import SlipwayError

    try:
        spec = load_environment_file(Path(file))  # a bad file fails before anything starts
    except SlipwayError as exc:
        fail(str(exc))
    require_prefect_api()
    try:
        written = apply_environment(spec)
    except SlipwayError as exc:
        fail(str(exc))
    show({"saved": written}, as_json, "saved blocks: " + ", ".join(written))


@webhook_app.command("serve")
def webhook_serve(
    config: Annotated[
        str, typer.Option(help="YAML: repositories, their environments and tag patterns.")
    ] = "webhook.yaml",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
) -> None:
    """Receive GitHub, GitLab and Gitea pushes; a release tag starts its release deployment.

    Secrets come from SLIPWAY_WEBHOOK_SECRET (or SLIPWAY_GITHUB_WEBHOOK_SECRET, ..._GITLAB_...,
    ..._GITEA_...); PREFECT_API_URL says which Prefect server starts the runs.
    """
    from pathlib import Path

    import uvicorn

    from blocks.errors import SlipwayError
    from deployments.webhook import WebhookConfig, WebhookSecrets, create_app, listen

    try:
        settings = WebhookConfig.from_file(Path(config))
        secrets = WebhookSecrets.from_env()
    except SlipwayError as exc:
        fail(str(exc))
    if not os.environ.get("PREFECT_API_URL"):
        fail("PREFECT_API_URL is not set: the webhook starts runs on a Prefect server")
    try:
        sock = listen(host, port)
    except SlipwayError as exc:
        fail(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = uvicorn.Server(uvicorn.Config(create_app(settings, secrets), log_level="warning"))
    server.run(sockets=[sock])


def main() -> None:
    """The `slipway` console script: any failure is one line on stderr (deployments.cli_errors)."""
    from deployments.cli_errors import run_app

    run_app(app)


if __name__ == "__main__":
    main()
