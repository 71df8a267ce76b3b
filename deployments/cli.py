"""The `slipway` command line: runs Slipway's flows, one verb each, with loud one-line errors.

With PREFECT_API_URL set the runs appear in that server's UI; without it they run on
Prefect's temporary local API.
"""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import version
from typing import Annotated, cast

import typer

from deployments.cli_common import (
    JsonOpt,
    VerboseOpt,
    fail,
    prefect_api_down,
    run_flow,
    show,
)
from deployments.migrate_cli import migrate_app
from deployments.release_cli import add_release_commands

app = typer.Typer(
    help="Slipway: release and backup automation as Prefect workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backups_app = typer.Typer(help="The backups in the store.", no_args_is_help=True)
app.add_typer(backups_app, name="backups")
app.add_typer(migrate_app, name="migrate")
env_app = typer.Typer(help="Environments as code (blocks from YAML).", no_args_is_help=True)
app.add_typer(env_app, name="env")
webhook_app = typer.Typer(help="The git-tag webhook that starts releases.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")

DbBlockOpt = Annotated[
    str | None, typer.Option(help="PostgresDatabase block name (default: DATABASE_URL).")
]
StoreBlockOpt = Annotated[
    str | None, typer.Option(help="ObjectStorage block name (default: SLIPWAY_BACKUP_URL).")
]


@app.command("version")
def show_version() -> None:
    """Print Slipway's version."""
    typer.echo(version("slipway"))


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
    """Back up the database to the backup store; prints the new backup's id."""
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


@backups_app.command("list")
def backups_list(
    database_block: DbBlockOpt = None, store_block: StoreBlockOpt = None, as_json: JsonOpt = False
) -> None:
    """List complete backups, newest first."""
    from blocks.errors import SlipwayError
    from blocks.object_storage import ObjectStorage
    from blocks.postgres import PostgresDatabase
    from tasks.postgres.catalog import list_backups
    from tasks.storage.s3 import check_bucket

    try:
        db = PostgresDatabase.resolve(database_block)
        store = ObjectStorage.resolve(store_block)
        client = store.client()
        check_bucket(client, store)
        entries = list_backups(client, store, db.database)
    except SlipwayError as exc:
        fail(str(exc))
    rows = [
        {
            "id": e.manifest.id,
            "database": e.manifest.database,
            "raw_bytes": e.manifest.raw_bytes,
            "stored_bytes": e.manifest.dump.size,
            "verified": e.verified,
            "app_version": e.manifest.app_version,
        }
        for e in entries
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        typer.echo(
            f"{r['id']}  {int(r['stored_bytes'] or 0) / 1048576:9.1f} MiB  "
            f"{'verified' if r['verified'] else '-':8}  {r['app_version'] or ''}"
        )


@app.command()
def verify(
    backup_id: Annotated[str, typer.Argument(metavar="ID|latest")] = "latest",
    drill: Annotated[bool, typer.Option(help="Also restore into a scratch database.")] = False,
    database_block: DbBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a backup's size, checksum and contents; --drill restores it and compares rows."""
    from flows.verify import verify_backup

    r = run_flow(lambda: verify_backup(backup_id, drill, database_block, store_block), verbose)
    show(r, as_json, f"{r['backup_id']} ok: {r['detail']}")


@app.command()
def restore(
    backup_id: Annotated[str, typer.Argument(metavar="ID|latest")],
    target_database_url: Annotated[
        str,
        typer.Option(help="postgresql://user@host:port/db (password in PGPASSWORD or ~/.pgpass)."),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Replace a non-empty target.")] = False,
    jobs: Annotated[int, typer.Option(help="pg_restore parallel jobs.")] = 2,
    source_database: Annotated[
        str | None, typer.Option(help="Whose backups (default: the target's name).")
    ] = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Restore a backup into the target database (beside it first, then swap names)."""
    down = prefect_api_down()
    if down:
        # A restore is what you need when things are down: run on a temporary local API.
        typer.echo(f"warning: Prefect API {down} does not answer; running locally", err=True)
        os.environ.pop("PREFECT_API_URL")
    from blocks.errors import SlipwayError
    from blocks.input_checks import refuse_url_password
    from blocks.settings import PostgresSettings

    try:
        refuse_url_password(target_database_url, "--target-database-url")
        target = PostgresSettings.from_url(target_database_url)
    except SlipwayError as exc:
        fail(str(exc))
    from flows.restore import restore_database

    r = run_flow(
        lambda: restore_database(
            target.display(), backup_id, source_database, yes, jobs, None, store_block
        ),
        verbose,
    )
    show(r, as_json, r["state"])


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    keep_last: int = 7,
    keep_daily: int = 7,
    keep_weekly: int = 4,
    keep_monthly: int = 6,
    min_keep: int = 3,
    database_block: DbBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Apply retention: keep-last plus daily, weekly and monthly backups."""
    from flows.prune import prune_backups
    from tasks.retention import RetentionPolicy

    try:
        policy = RetentionPolicy(keep_last, keep_daily, keep_weekly, keep_monthly, min_keep)
    except ValueError as exc:
        fail(str(exc))
    r = run_flow(lambda: prune_backups(dry_run, policy, database_block, store_block), verbose)
    show(r, as_json, r["plan"])


SourceBlockOpt = Annotated[
    str | None,
    typer.Option(help="ObjectStorage block for the app's side (default: SLIPWAY_SOURCE_*)."),
]


@app.command("mirror")
def mirror_cmd(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix (the app's) or a directory.")],
    destination: Annotated[str, typer.Argument(help="s3://bucket/prefix or a directory.")],
    delete: Annotated[
        bool, typer.Option("--delete", help="Also delete what the source no longer has.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    source_block: SourceBlockOpt = None,
    destination_block: Annotated[
        str | None, typer.Option(help="ObjectStorage block for the destination (default: AWS_*).")
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Copy what is new or changed from SOURCE to DESTINATION."""
    from flows.mirror import mirror_bucket

    r = run_flow(
        lambda: mirror_bucket(
            source, destination, delete, dry_run, source_block, destination_block
        ),
        verbose,
    )
    text = (
        f"{r['copied']} copied ({int(r['copied_bytes']) / 1048576:.1f} MiB), "
        f"{r['deleted']} deleted, {r['unchanged']} unchanged in {r['seconds']:.1f} s"
    )
    show(r, as_json, r["plan"] if dry_run else text)


@app.command()
def snapshot(
    bucket_url: Annotated[str, typer.Argument(help="s3://bucket/prefix (the app's) or a dir.")],
    name: Annotated[
        str | None, typer.Option(help="Folder in the store (default: the bucket's name).")
    ] = None,
    level: Annotated[int, typer.Option(help="zstd level.")] = 3,
    source_block: SourceBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Archive a bucket (or prefix) into the backup store as one point-in-time snapshot."""
    from flows.snapshot import snapshot_bucket

    r = run_flow(
        lambda: snapshot_bucket(bucket_url, name, level, source_block, store_block), verbose
    )
    show(
        r,
        as_json,
        f"{r['name']}@{r['id']}  {r['object_count']} objects, "
        f"{int(r['archive']['size']) / 1048576:.1f} MiB in {r['duration_seconds']:.1f} s",
    )


@app.command("restore-files")
def restore_files_cmd(
    source: Annotated[
        str,
        typer.Argument(
            metavar="MIRROR|NAME@SNAPSHOT",
            help="A mirror (s3://bucket/prefix or a directory) or a snapshot: NAME@ID, "
            "NAME@latest.",
        ),
    ],
    destination: Annotated[str, typer.Argument(help="s3://bucket/prefix (the app's) or a dir.")],
    prefix: Annotated[str, typer.Option(help="Only the objects under this key prefix.")] = "",
    mirror_block: Annotated[
        str | None, typer.Option(help="ObjectStorage block of the mirror (default: AWS_*).")
    ] = None,
    destination_block: SourceBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Put objects back from a mirror or a snapshot, each checked against its checksum."""
    from flows.restore_files import restore_files

    r = run_flow(
        lambda: restore_files(
            source, destination, prefix, mirror_block, destination_block, store_block
        ),
        verbose,
    )
    show(
        r,
        as_json,
        f"{r['restored']} objects ({int(r['restored_bytes']) / 1048576:.1f} MiB) restored "
        f"from {r['source']} into {r['destination']}",
    )


# After the backup commands, as `slipway --help` lists them.
add_release_commands(app)


@env_app.command("apply")
def env_apply(
    file: Annotated[str, typer.Argument(help="Environment YAML (secrets as ${VAR}).")],
) -> None:
    """Create or update an environment's blocks from YAML."""
    from pathlib import Path

    from blocks.env_file import apply_environment, load_environment_file
    from blocks.errors import SlipwayError

    try:
        written = apply_environment(load_environment_file(Path(file)))
    except SlipwayError as exc:
        fail(str(exc))
    typer.echo("saved blocks: " + ", ".join(written))


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
    from deployments.webhook import WebhookConfig, WebhookSecrets, create_app

    try:
        settings = WebhookConfig.from_file(Path(config))
        secrets = WebhookSecrets.from_env()
    except SlipwayError as exc:
        fail(str(exc))
    if not os.environ.get("PREFECT_API_URL"):
        fail("PREFECT_API_URL is not set: the webhook starts runs on a Prefect server")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(settings, secrets), host=host, port=port, log_level="warning")


def main() -> None:
    """The `slipway` console script."""
    app()


if __name__ == "__main__":
    main()
