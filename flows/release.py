"""The release: preflight, a fresh backup, migrations, rollout, health; rollback on failure.

The Qubeless upgrade guide's order: back up first, stop the app, migrate, start the API, then
the worker, then the web front, check, and roll back cleanly when anything goes wrong.
Every step is written to the release journal in the backup store before and after it
runs, so a release whose process died can still be rolled back (`slipway rollback`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from blocks.environment import Environment
from blocks.errors import SlipwayError
from blocks.input_checks import check_version
from blocks.object_storage import ObjectStorage
from blocks.postgres import PostgresDatabase
from flows.backup import backup_database
from flows.rollback import rollback
from flows.verify import verify_backup
from tasks.notify import HOOKS
from tasks.prisma import deploy_migrations, prisma_cli_deploy
from tasks.release.journal import Journal, ReleaseRecord
from tasks.release.lock import deploy_lock, run_label
from tasks.release.preflight import Preflight, migrations_dir, run_preflight
from tasks.rollout import RolloutTarget, open_target
from tasks.rollout.steps import (
    app_health_task,
    deploy_task,
    prune_task,
    save_state_task,
    stop_services_task,
)


class ReleaseFailed(SlipwayError):
    """The release failed and was rolled back to the version live before."""


@task(cache_policy=NO_CACHE, name="preflight")
def preflight_task(
    environment: Environment,
    db: PostgresDatabase,
    store: ObjectStorage,
    target: RolloutTarget,
    version: str,
    skip: list[str],
    flags: dict[str, str] | None = None,
) -> Preflight:
    return run_preflight(environment, db, store, target, version, skip, flags)


@task(cache_policy=NO_CACHE, name="migrate")
def migrate_task(
    environment: Environment, db: PostgresDatabase, version: str, pending: list[str]
) -> list[str]:
    settings = environment.migrations
    if settings.mode == "cli":
        if settings.schema_path is None or settings.app_directory is None:
            raise SlipwayError("migrations mode cli needs schema_path and app_directory")
        get_run_logger().info(prisma_cli_deploy(db, settings.schema_path, settings.app_directory))
        return pending
    report = deploy_migrations(db, migrations_dir(environment, version), log=get_run_logger())
    return list(report.applied)


def release_report(record: ReleaseRecord, preflight: Preflight | None) -> str:
    lines = [
        f"# Release {record.version} to {record.environment}: {record.status}",
        "",
        f"- release id: `{record.id}`",
        f"- before: {record.previous_version or 'nothing deployed'}",
        f"- backup: {record.backup_id or '-'}",
        f"- migrations applied: {', '.join(record.migrations_applied) or 'none'}",
    ]
    if record.error:
        lines.append(f"- error: {record.error}")
    if preflight:
        lines += ["", "## Preflight", "", "| check | result |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in preflight.lines.items()]
    lines += ["", "## Steps", "", "| step | status | seconds | detail |", "|---|---|---|---|"]
    lines += [
        f"| {s.name} | {s.status} | {s.seconds if s.seconds is not None else ''} | "
        f"{(s.detail or '').replace('|', '/')} |"
        for s in record.steps
    ]
    if record.rollback:
        rb = record.rollback
        lines += [
            "",
            f"## Rollback: {rb.status}",
            "",
            f"- to: {rb.to_version or 'nothing'}; database restored: {rb.database_restored}",
        ]
        lines += [f"- {s.name}: {s.status} ({s.detail or ''})" for s in rb.steps]
    lines += command_output(record)
    return "\n".join(lines)


def command_output(record: ReleaseRecord) -> list[str]:
    """The tails of the commands the steps ran (an ssh target's steps), one section each."""
    steps = [(s.name, s) for s in record.steps]
    if record.rollback:
        steps += [(f"rollback {s.name}", s) for s in record.rollback.steps]
    lines = []
    for title, step in steps:
        for command, tail in (step.output or {}).items():
            lines += ["", f"### {title}: {command}", "", "~~~", tail.replace("~~~", "~ ~ ~"), "~~~"]
    return ["", "## Command output", *lines] if lines else []


@flow(name="release", **HOOKS)
def release(
    version: str,
    env: str,
    dry_run: bool = False,
    skip_checks: list[str] | None = None,
    flags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Release a version to an environment; any failure rolls back to the version before.

    Args:
        version: The version to release: every service's image tag, e.g. v1.4.2.
        env: The environment (its Slipway Environment block's name).
        dry_run: Run the preflight and show the plan (pending migrations and their SQL);
            change nothing.
        skip_checks: Preflight checks to skip on purpose (disk, database, tools, target,
            migrations, backup); recorded in the release journal.
        flags: Feature flags to set with the release (a kubernetes target's
            flags_configmap); their values before are put back by a rollback.
    """
    check_version(version)
    skip = list(skip_checks or [])
    environment = Environment.resolve(env)
    env = environment.block_name  # the lock and the journal are the loaded block's
    db = environment.database()
    store = environment.store()
    logger = get_run_logger()
    holder = f"release {version} ({run_label()})"
    with (
        open_target(environment.target) as target,
        deploy_lock(db, env, holder, environment.policy.lock_wait_seconds),
    ):
        preflight = preflight_task(environment, db, store, target, version, skip, flags)
        before = target.current_version()
        if dry_run:
            sql = (
                deploy_migrations(db, migrations_dir(environment, version), dry_run=True).sql
                if environment.migrations.mode != "none"
                else {}
            )
            create_markdown_artifact(
                _dry_run_report(env, version, before, preflight, sql), key="release-plan"
            )
            return {
                "dry_run": True,
                "version": version,
                "previous_version": before,
                "pending_migrations": preflight.pending,
                "preflight": preflight.lines,
            }
        journal = Journal.start(store.client(), store, env, version)
        record = journal.record
        record.previous_version = before
        record.skipped_checks = skip
        record.flags = dict(flags or {})
        context = FlowRunContext.get()
        record.flow_run_id = str(context.flow_run.id) if context and context.flow_run else None
        journal.save()
        try:
            _release_steps(journal, environment, db, target, preflight, version, before)
        except BaseException as exc:
            error = str(exc) if isinstance(exc, SlipwayError) else f"{type(exc).__name__}: {exc}"
            journal.finish("failed", error)
            logger.error("release %s failed: %s; rolling back to %s", version, error, before)
            outcome = rollback(env=env, release_id=record.id, inside_release=True, yes=True)
            create_markdown_artifact(
                release_report(journal.reload().record, preflight), key="release-report"
            )
            raise ReleaseFailed(
                f"release {version} to {env} failed: {error}; rolled back to "
                f"{outcome['version'] or 'nothing'}"
                + _database_outcome(outcome, record.changed("migrate"))
            ) from exc
        journal.finish("succeeded")
        create_markdown_artifact(release_report(record, preflight), key="release-report")
        _prune(target)
    logger.info("release %s to %s succeeded (was %s)", version, env, before)
    return record.model_dump(mode="json")


def _prune(target: RolloutTarget) -> None:
    # The release succeeded: a failure to tidy up is a warning, never a failed release.
    try:
        get_run_logger().info("pruned: %s", prune_task(target))
    except Exception as exc:
        get_run_logger().warning("pruning after the release failed: %s", exc)


def _database_outcome(outcome: dict[str, Any], migrated: bool) -> str:
    if outcome["database_restored"]:
        return "; database restored"
    if migrated:
        return f"; database NOT restored: {outcome.get('database') or 'see the journal'}"
    return ""


def _release_steps(
    journal: Journal,
    environment: Environment,
    db: PostgresDatabase,
    target: RolloutTarget,
    preflight: Preflight,
    version: str,
    before: str | None,
) -> None:
    record = journal.record
    env = record.environment
    with journal.step("backup") as step:
        manifest = backup_database(
            environment.database_block,
            environment.store_block,
            app_version=before,
            tags={"release": record.id, "env": env, "version": version},
        )
        record.backup_id = manifest["id"]
        if preflight.recent_backup is None:
            verify_backup(
                manifest["id"], False, environment.database_block, environment.store_block
            )
        step.detail = f"backup {manifest['id']}"
    # Secrets, flags: what the rollback restores besides the version (none for most targets).
    state = save_state_task(target, record.id, record.flags)
    if state:
        record.target_state = state
        journal.save()
    pending = preflight.pending
    if pending:
        if environment.migrations.stop_app and before is not None:
            with journal.step("stop") as step:
                step.detail = stop_services_task(target)
                record.app_stopped = True
        with journal.step("migrate") as step:
            record.migrations_applied = migrate_task(environment, db, version, pending)
            step.detail = ", ".join(record.migrations_applied)
    else:
        journal.skip("migrate", "no pending migrations")
    with journal.step("rollout") as step:
        report = deploy_task(target, version)
        step.detail, step.output = report.summary(), report.output or None
    with journal.step("health") as step:
        step.detail = app_health_task(target, environment.health_checks, version)


def _dry_run_report(
    env: str, version: str, before: str | None, preflight: Preflight, sql: dict[str, str]
) -> str:
    lines = [
        f"# Release plan: {before or 'nothing'} -> {version} on {env} (dry run, nothing changed)",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in preflight.lines.items()],
        "",
        f"## Pending migrations ({len(sql)})",
    ]
    for name, text in sql.items():
        lines += ["", f"### {name}", "", "```sql", text.strip(), "```"]
    return "\n".join(lines)
