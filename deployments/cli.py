"""The `slipway` command line: runs Slipway's flows, one verb each, with loud one-line errors.

With PREFECT_API_URL set the runs appear in that server's UI; without it they run on
Prefect's temporary local API.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from importlib.metadata import version
from typing import Annotated, Any, TypeVar, cast

import typer

from deployments.migrate_cli import migrate_app

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

T = TypeVar("T")

# How long `mirror` lets its early listing run alone before Prefect's import competes.
EARLY_PLAN_WAIT = 3.0

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DbBlockOpt = Annotated[
    str | None, typer.Option(help="PostgresDatabase block name (default: DATABASE_URL).")
]
StoreBlockOpt = Annotated[
    str | None, typer.Option(help="ObjectStorage block name (default: SLIPWAY_BACKUP_URL).")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _prefect_api_down() -> str | None:
    """The configured Prefect API URL when it does not answer, else None."""
    url = os.environ.get("PREFECT_API_URL")
    return None if not url or _answers(url) else url


@functools.cache
def _answers(url: str) -> bool:
    """Whether the API's /health answers (401/403 too: credentials are Prefect's to check).

    With the standard library, not httpx: its import would delay the mirror's early copies.
    A certificate this probe cannot verify is Prefect's to judge, with its TLS settings
    (PREFECT_API_SSL_CERT_FILE and the like).
    """
    import http.client
    import ssl
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return False
    try:
        health = f"{url.rstrip('/')}/health"
        with urllib.request.urlopen(health, timeout=3) as response:  # noqa: S310 - http(s)
            status: int = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ssl.SSLCertVerificationError)
    except (OSError, http.client.HTTPException, ValueError):
        return False
    return status != 404 and status < 500


def _require_prefect_api() -> None:
    """Fail in one line, before anything runs, when PREFECT_API_URL does not answer."""
    if down := _prefect_api_down():
        _fail(
            f"the Prefect API at {down} does not answer: start it, or unset PREFECT_API_URL "
            "to run on a temporary local API"
        )


def _foreground_settings() -> contextlib.AbstractContextManager[object]:
    """Prefect settings for a run in this terminal: no flow-run heartbeats.

    Heartbeats let a server's automation mark a dead worker's run crashed; here the
    operator sees the process end, and a killed release is found by its journal. Each
    flow's heartbeat thread also holds its exit up to a second. An explicit
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY keeps them.
    """
    if {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"} & set(
        os.environ
    ):
        return contextlib.nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _run(call: Callable[[], T], verbose: bool) -> T:
    """Run a flow; expected failures become one line on stderr and exit status 1."""
    from blocks.errors import SlipwayError

    _require_prefect_api()

    if not verbose:
        from prefect.logging.handlers import PrefectConsoleHandler

        # The flow's own logs still reach the Prefect API; the terminal gets the outcome.
        for logger in (logging.getLogger(), logging.getLogger("prefect")):
            for handler in logger.handlers:
                if isinstance(handler, PrefectConsoleHandler):
                    handler.setLevel(logging.CRITICAL)
    try:
        with _foreground_settings():
            return call()
    except SlipwayError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    raise AssertionError("unreachable")


def _print(data: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, default=str) if as_json else text)


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
    from tasks.backup_catalog import Compression

    if compression not in ("zstd", "gzip"):
        _fail(f"unknown compression {compression!r}: use zstd or gzip")
    chosen = cast(Compression, compression)
    m = _run(
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
    _print(
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
    from tasks.backup_catalog import list_backups
    from tasks.object_storage import check_bucket

    try:
        db = PostgresDatabase.resolve(database_block)
        store = ObjectStorage.resolve(store_block)
        client = store.client()
        check_bucket(client, store)
        entries = list_backups(client, store, db.database)
    except SlipwayError as exc:
        _fail(str(exc))
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

    r = _run(lambda: verify_backup(backup_id, drill, database_block, store_block), verbose)
    _print(r, as_json, f"{r['backup_id']} ok: {r['detail']}")


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
    down = _prefect_api_down()
    if down:
        # A restore is what you need when things are down: run on a temporary local API.
        typer.echo(f"warning: Prefect API {down} does not answer; running locally", err=True)
        os.environ.pop("PREFECT_API_URL")
    from blocks.errors import SlipwayError
    from blocks.settings import PostgresSettings
    from tasks import early_download

    try:
        target = PostgresSettings.from_url(target_database_url)
    except SlipwayError as exc:
        _fail(str(exc))
    if target.password is not None and "PGPASSWORD" not in os.environ:
        # Flow parameters are stored by Prefect: the password travels by environment only.
        os.environ["PGPASSWORD"] = target.password.get_secret_value()
    if store_block is None:
        # Prefect is not imported yet: the archive downloads while it loads.
        early_download.start(source_database or target.database, backup_id)
    try:
        from flows.restore import restore_database

        r = _run(
            lambda: restore_database(
                target.display(), backup_id, source_database, yes, jobs, None, store_block
            ),
            verbose,
        )
    finally:
        early_download.discard()
    _print(r, as_json, r["state"])


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

    r = _run(
        lambda: prune_backups(
            dry_run,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            min_keep,
            database_block,
            store_block,
        ),
        verbose,
    )
    _print(r, as_json, r["plan"])


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
    from tasks import early_mirror

    _require_prefect_api()
    if not (dry_run or source_block or destination_block) and os.environ.get("PREFECT_API_URL"):
        # Prefect is not imported yet: the copies begin while it loads, and the run that
        # adopts them will be recorded (tasks/early_mirror.py).
        early_mirror.start(source, destination, delete, head_start=EARLY_PLAN_WAIT)
    try:
        from flows.mirror import mirror_bucket

        r = _run(
            lambda: mirror_bucket(
                source, destination, delete, dry_run, source_block, destination_block
            ),
            verbose,
        )
    finally:
        early_mirror.discard()
    text = (
        f"{r['copied']} copied ({int(r['copied_bytes']) / 1048576:.1f} MiB), "
        f"{r['deleted']} deleted, {r['unchanged']} unchanged in {r['seconds']:.1f} s"
    )
    _print(r, as_json, r["plan"] if dry_run else text)


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

    r = _run(lambda: snapshot_bucket(bucket_url, name, level, source_block, store_block), verbose)
    _print(
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

    r = _run(
        lambda: restore_files(
            source, destination, prefix, mirror_block, destination_block, store_block
        ),
        verbose,
    )
    _print(
        r,
        as_json,
        f"{r['restored']} objects ({int(r['restored_bytes']) / 1048576:.1f} MiB) restored "
        f"from {r['source']} into {r['destination']}",
    )


EnvOpt = Annotated[str, typer.Option("--env", help="The environment (its block's name).")]


@app.command("release")
def release_cmd(
    version: Annotated[str, typer.Argument(help="The version: every service's image tag.")],
    env: EnvOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Preflight and plan (pending SQL) only.")
    ] = False,
    skip_check: Annotated[
        list[str] | None,
        typer.Option(help="Skip a preflight check on purpose (recorded); repeatable."),
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Release VERSION: preflight, backup, migrations, rollout, health; rolls back on failure."""
    from flows.release import release

    r = _run(lambda: release(version, env, dry_run, list(skip_check or [])), verbose)
    if dry_run:
        pending = r["pending_migrations"]
        text = (
            f"plan: {r['previous_version'] or 'nothing'} -> {version} on {env}; "
            f"{len(pending)} pending migrations{': ' + ', '.join(pending) if pending else ''}"
        )
    else:
        text = f"{env} runs {version} (was {r['previous_version'] or 'nothing'}); release {r['id']}"
    _print(r, as_json, text)


@app.command("rollback")
def rollback_cmd(
    env: EnvOpt,
    to: Annotated[
        str | None, typer.Option("--to", help="Version to go back to (default: the one before).")
    ] = None,
    release_id: Annotated[
        str | None, typer.Option("--release", help="Which release (default: unfinished/last).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm restoring the database when needed.")
    ] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Roll back ENV's last (or unfinished) release to the version live before it."""
    from flows.rollback import rollback

    r = _run(lambda: rollback(env, to, release_id, yes), verbose)
    restored = "database restored" if r["database_restored"] else "database kept"
    _print(r, as_json, f"{env} back on {r['version'] or 'nothing'}; {restored}")


@app.command("status")
def status_cmd(env: EnvOpt, as_json: JsonOpt = False) -> None:
    """The live version, the lock holder, recent releases and any left unfinished."""
    from blocks.environment import Environment
    from blocks.errors import SlipwayError
    from tasks.compose_target import ComposeTarget
    from tasks.deploy_lock import describe, lock_holder
    from tasks.release_journal import NEEDS_ROLLBACK, list_releases

    try:
        environment = Environment.resolve(env)
        store = environment.store()
        live = ComposeTarget(environment.target).live_versions()
        holder = lock_holder(environment.database(), env)
        releases = [j.record for j in list_releases(store.client(), store, env)[:10]]
    except SlipwayError as exc:
        _fail(str(exc))
    unfinished = [r for r in releases if r.status in NEEDS_ROLLBACK]
    data = {
        "environment": env,
        "live_version": live.version,
        "services": live.services,
        "lock": holder.model_dump(mode="json") if holder else None,
        "releases": [
            {k: getattr(r, k) for k in ("id", "version", "previous_version", "status", "error")}
            for r in releases
        ],
        "unfinished": [r.id for r in unfinished],
    }
    lines = [
        f"{env}: live {live.version or 'mixed or none'} ({live.describe()})",
        f"lock: {describe(holder) if holder else 'free'}",
    ]
    lines += [
        f"  {r.id}  {r.previous_version or '-'} -> {r.version}  {r.status}"
        + (f"  ({r.error})" if r.error else "")
        for r in releases
    ]
    if unfinished:
        names = ", ".join(f"{r.id} ({r.version}, {r.status})" for r in unfinished)
        lines.append(f"unfinished: {names}: run `slipway rollback --env {env}`")
    _print(data, as_json, "\n".join(lines))


@app.command("unlock")
def unlock_cmd(env: EnvOpt) -> None:
    """End a stale holder of ENV's release lock (a release whose process hangs)."""
    from blocks.environment import Environment
    from blocks.errors import SlipwayError
    from tasks.deploy_lock import break_lock, describe

    try:
        holder = break_lock(Environment.resolve(env).database(), env)
    except SlipwayError as exc:
        _fail(str(exc))
    typer.echo(f"ended {describe(holder)}" if holder else f"{env} was not locked")


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
        _fail(str(exc))
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
        _fail(str(exc))
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: the webhook starts runs on a Prefect server")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(settings, secrets), host=host, port=port, log_level="warning")


def main() -> None:
    """The `slipway` console script: the command, then a quick exit.

    Tearing down an interpreter that imported Prefect takes about half a second and does
    nothing useful. So threads are joined, exit handlers run (there Prefect drains its log
    and event workers) and the streams are flushed, then the process ends at once.
    """
    code: int = 0
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = exc.code or 0
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
