"""Restore a backup into a database: beside the target first, then swap names."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psycopg
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

from blocks.environment import Environment
from blocks.errors import SlipwayError
from blocks.input_checks import refuse_url_password
from blocks.object_storage import ObjectStorage
from blocks.postgres import PostgresDatabase
from tasks.crypto.keys import identities_for
from tasks.notify import HOOKS
from tasks.postgres import connection as pg
from tasks.postgres import swap
from tasks.postgres.catalog import BackupEntry, find_backup
from tasks.postgres.restore import restore_from_store
from tasks.postgres.scratch import scratch_dir, sweep_scratch_dirs
from tasks.release.approval import wait_for_approval


def _reason(exc: BaseException) -> str:
    """Why a restore stopped, never empty: signals carry no message of their own."""
    if isinstance(exc, TerminationSignal):
        return f"stopped by {signal.Signals(exc.signal).name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc) or type(exc).__name__


def _sweep_leftovers(admin: psycopg.Connection, target: str) -> list[str]:
    """Remove what killed restores left: side databases of this target, scratch directories."""
    with swap.target_lock(admin, target):
        done = swap.sweep_side_databases(admin, target)
    done += [f"directory {path} removed" for path in sweep_scratch_dirs()]
    return done


@task(cache_policy=NO_CACHE, name="restore-beside-and-swap")
def restore_and_swap(
    target: PostgresDatabase, store: ObjectStorage, entry: BackupEntry, yes: bool, jobs: int
) -> dict[str, Any]:
    logger = get_run_logger()
    # Read here, never a parameter; a missing or wrong key fails before anything changes.
    identities = (
        identities_for(f"backup {entry.manifest.id}", entry.manifest.recipients, store)
        if entry.manifest.encrypted
        else []
    )
    admin = pg.connect(pg.admin_database(target), autocommit=True)
    try:
        leftovers = _sweep_leftovers(admin, target.database)
        if leftovers:
            logger.warning("leftovers of an interrupted restore: %s", "; ".join(leftovers))
        if pg.database_exists(admin, target.database):
            swap.refuse_if_not_empty(target, yes)  # checked again at the swap
        new = swap.side_name(target.database, "new")
        if not swap.hold_side_name(admin, new):
            raise SlipwayError(f"database name {new!r} is in use: run the restore again")
        pg.create_database(admin, new)
        try:
            # The schema goes into the new database while the archive downloads (decrypted
            # chunk by chunk, each authenticated by age); data only once the stored bytes'
            # checksum matched. The target is not touched.
            with scratch_dir(entry.manifest.raw_bytes) as tmp:
                restore_from_store(
                    store.client(),
                    store,
                    entry,
                    target.with_database(new),
                    Path(tmp),
                    jobs,
                    identities,
                )
            previous = swap.swap_in(admin, target, new, yes)
        except BaseException as exc:
            pg.drop_database(admin, new)
            raise SlipwayError(f"{_reason(exc)}; target {target.database!r} is unchanged") from exc
    finally:
        admin.close()
    state = f"database {target.database!r} now holds backup {entry.manifest.id}"
    if previous:
        state += f"; the previous database is kept as {previous!r} (DROP DATABASE it when done)"
    if leftovers:
        state += f"; removed leftovers of an interrupted restore: {'; '.join(leftovers)}"
    logger.info(state)
    return {
        "target": target.database,
        "backup": entry.manifest.id,
        "previous": previous,
        "leftovers_removed": leftovers,
        "state": state,
    }


@flow(name="restore-database", **HOOKS)
def restore_database(
    target_database_url: str | None = None,
    backup: str = "latest",
    source_database: str | None = None,
    yes: bool = False,
    jobs: int = 2,
    target_database_block: str | None = None,
    store_block: str | None = None,
    env: str | None = None,
) -> dict[str, Any]:
    """Restore a backup into a database: beside it first, then swap names.

    Args:
        target_database_url: postgresql://user@host:port/db, without a password (PGPASSWORD
            or the block gives it).
        backup: The backup's id, or latest.
        source_database: Whose backups, by database name (default: the target's).
        yes: Replace a target that holds tables. A replaced target, empty or not, is always
            kept under another name.
        jobs: Parallel pg_restore jobs.
        target_database_block: PostgresDatabase block of the target, instead of a URL.
        store_block: ObjectStorage block of the backup store (default: SLIPWAY_BACKUP_URL).
        env: Restore into this environment's database from its store; when its policy says
            so, the run first waits for a person's approval in the Prefect UI.
    """
    environment = Environment.resolve(env) if env else None
    if environment is not None:
        target_database_block = target_database_block or environment.database_block
        store_block = store_block or environment.store_block
    if target_database_block:
        target = PostgresDatabase.resolve(target_database_block)
    elif target_database_url:
        # Flow parameters are stored and shown by Prefect: the password comes another way.
        refuse_url_password(target_database_url, "target_database_url")
        target = PostgresDatabase.from_url(target_database_url)
    else:
        raise SlipwayError("no restore target: pass --target-database-url or a target block")
    store = ObjectStorage.resolve(store_block)
    entry = find_backup(
        store.client(),
        store,
        source_database or target.database,
        backup,
        choose="name one as the source database (--source-database)",
    )
    if entry.manifest.encrypted:  # before waiting for anyone's approval
        identities_for(f"backup {entry.manifest.id}", entry.manifest.recipients, store)
    if environment is not None and environment.policy.approve_restore:
        wait_for_approval(
            f"restore backup {entry.manifest.id} into {target.database!r} of {env}",
            environment.policy.approval_timeout_minutes,
        )
    result = restore_and_swap(target, store, entry, yes, jobs)
    create_markdown_artifact(
        f"# Restore of `{entry.manifest.id}`\n\n{result['state']}\n", key="restore-report"
    )
    return result
