"""The rollback: undo a release's completed steps in reverse, from its journal.

Started by a failing release (as its subflow, under the release's lock) or on its own
(`slipway rollback --env NAME`, or the rollback deployment), which finds the release left
unfinished or failed, else the latest one. Every step is idempotent: a rollback that
failed or was killed can simply be run again.

Database: when the release's migrations ran, the pre-release backup is restored if the
policy says `restore` and the app was stopped during the migration (nothing written since
the backup is lost then), after an approval if it says `ask`, and never if it says
`never`. A release that had succeeded keeps its database: its data is live data.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from prefect import flow, get_run_logger

from blocks.environment import Environment
from blocks.errors import SlipwayError
from blocks.input_checks import check_version
from flows.restore import restore_database
from tasks.notify import HOOKS, Emergency
from tasks.postgres.catalog import utcnow
from tasks.release.approval import ask_approval, wait_for_approval
from tasks.release.journal import (
    NEEDS_ROLLBACK,
    Journal,
    RollbackMetrics,
    RollbackRecord,
    StepRecord,
    find_release,
    list_releases,
    system_metrics,
)
from tasks.release.lock import deploy_lock, run_label
from tasks.rollout import RolloutTarget, open_target
from tasks.rollout.steps import (
    app_health_task,
    cleanup_task,
    deploy_task,
    restore_state_task,
    revision_task,
    stop_services_task,
)


def pick_release(journals: list[Journal], release_id: str | None) -> Journal | None:
    """The release to roll back: the one named, else the newest left unfinished or failed,
    else the newest that succeeded (releases already rolled back are behind us)."""
    if release_id:
        named = [j for j in journals if j.record.id == release_id]
        return named[0] if named else None
    for journal in journals:
        if journal.record.status in NEEDS_ROLLBACK:
            return journal
    return next((j for j in journals if j.record.status == "succeeded"), None)


def database_plan(journal: Journal, environment: Environment) -> tuple[bool, str]:
    """Whether to restore the pre-release backup, and why (or why not)."""
    record = journal.record
    policy = environment.policy.database_rollback
    if record.rollback and record.rollback.database_restored:
        return False, f"backup {record.backup_id} was restored by an earlier rollback attempt"
    if not record.changed("migrate"):
        return False, "no migration ran: the database was not changed"
    if record.status == "succeeded":
        return False, (
            "the release had succeeded, so its database holds live data and is kept; "
            f"`slipway restore {record.backup_id}` brings back the pre-release state"
        )
    if not record.backup_id:
        return False, "no pre-release backup was recorded: the database is left as it is"
    if policy == "never":
        return False, "policy database_rollback=never: the database is left as it is"
    if policy == "restore" and not record.app_stopped:
        return False, (
            "the app ran during the migration, so a restore could lose new data: database left "
            f"as it is (`slipway restore {record.backup_id}` if needed)"
        )
    return True, f"restore pre-release backup {record.backup_id} (policy {policy})"


def redeploy(target: RolloutTarget, version: str | None, step: StepRecord | None = None) -> str:
    """The version back on every service (or all stopped when there was none); the summary.
    The commands' output goes to `step`."""
    if version is None:
        return "nothing was deployed before the release: " + stop_services_task(target)
    report = deploy_task(target, version, keep_going=True)
    if step is not None:
        step.output = report.output or None
    return report.summary()


@flow(name="rollback", **HOOKS)
def rollback(
    env: str,
    to_version: str | None = None,
    release_id: str | None = None,
    yes: bool = False,
    inside_release: bool = False,
    to_revision: int | None = None,
    services: list[str] | None = None,
) -> dict[str, Any]:
    """Roll an environment back to the version live before its last release.

    Args:
        env: The environment (its Slipway Environment block's name).
        to_version: The version to go back to (default: the one the release journal
            recorded as live before the release).
        release_id: Which release to undo (default: the newest left unfinished or failed,
            else the newest).
        yes: Confirm restoring the database when the rollback needs it: what was written
            since the pre-release backup is replaced (the old database is kept aside).
        inside_release: Set by the release flow, which already holds the environment's lock.
        to_revision: Instead, put this kept revision back (a Kubernetes target's ReplicaSet,
            as `kubectl rollout undo --to-revision`; an ECS task definition revision) on
            `services` (default: all); the database and the journal are left alone.
        services: The services `to_revision` applies to.
    """
    if to_version is not None:
        # Before anything is stopped or restored: the redeploy would fail on it.
        check_version(to_version, "--to version")
    environment = Environment.resolve(env)
    env = environment.block_name  # the lock is the loaded block's
    db = environment.database()
    store = environment.store()
    client = store.client()
    if not inside_release and environment.policy.approve_rollback:
        wait_for_approval(
            f"roll back {env}" + (f" to {to_version}" if to_version else ""),
            environment.policy.approval_timeout_minutes,
        )
    lock = (
        nullcontext()
        if inside_release
        else deploy_lock(db, env, f"rollback ({run_label()})", environment.policy.lock_wait_seconds)
    )
    with open_target(environment.target) as target, lock:
        if to_revision is not None:
            report = revision_task(target, to_revision, services)
            health = app_health_task(target, environment.health_checks, report.version)
            return {
                "version": report.version,
                "revision": to_revision,
                "database_restored": False,
                "detail": f"{report.summary()}; {health}",
            }
        if release_id:
            journal: Journal | None = find_release(client, store, env, release_id)
        else:
            journal = pick_release(list_releases(client, store, env), None)
        if journal is None:
            if to_version is None:
                raise SlipwayError(
                    f"nothing to roll back in {env}: no release journal; pass --to VERSION"
                )
            detail = redeploy(target, to_version)
            health = app_health_task(target, environment.health_checks, to_version)
            return {
                "version": to_version,
                "database_restored": False,
                "detail": f"{detail}; {health}",
            }
        return _undo(journal, environment, target, to_version, yes, inside_release)


def _undo(
    journal: Journal,
    environment: Environment,
    target: RolloutTarget,
    to_version: str | None,
    yes: bool,
    inside_release: bool,
) -> dict[str, Any]:
    record = journal.record
    env = record.environment
    version = to_version or record.previous_version
    restore, why = database_plan(journal, environment)
    if restore and not (yes or inside_release):
        raise SlipwayError(
            f"rolling back {env} restores backup {record.backup_id} into "
            f"{environment.database().database!r}, replacing what was written since: "
            "pass --yes to confirm"
        )
    if restore and environment.policy.database_rollback == "ask":
        answer = ask_approval(why, environment.policy.approval_timeout_minutes)
        if not answer.approve:
            # Refused or unanswered: the old version comes back on the database as it is.
            restore = False
            reason = answer.reason or "no reason given"
            why = (
                f"restore of backup {record.backup_id} refused ({reason}): the database is "
                f"left as the release left it (`slipway restore {record.backup_id}` brings "
                "back the pre-release state)"
            )
    get_run_logger().info(
        "rolling back %s release %s to %s; database: %s", env, record.id, version, why
    )
    previous = record.rollback
    rb = RollbackRecord(started_at=utcnow(), to_version=version)
    if previous is not None:
        rb.database_restored = previous.database_restored
    record.rollback = rb
    journal.save()
    try:
        if restore:
            with journal.step("stop", rb.steps) as step:
                step.detail = stop_services_task(target)
            with journal.step("restore-database", rb.steps) as step:
                result = restore_database(
                    backup=record.backup_id or "latest",
                    yes=True,
                    target_database_block=environment.database_block,
                    store_block=environment.store_block,
                )
                rb.database_restored = True
                step.detail = result["state"]
        else:
            journal.skip("restore-database", why, rb.steps)
        if record.target_state:
            # Secrets and flags back before the old version's pods start and read them.
            with journal.step("restore-state", rb.steps) as step:
                step.detail = restore_state_task(target, record.target_state)
        with journal.step("redeploy", rb.steps) as step:
            step.detail = redeploy(target, version, step)
        if version is not None:
            with journal.step("health", rb.steps) as step:
                step.detail = app_health_task(target, environment.health_checks, version)
        with journal.step("cleanup", rb.steps) as step:
            step.detail = cleanup_task(target, record.id)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, SlipwayError) else f"{type(exc).__name__}: {exc}"
        rb.status, rb.error = "failed", error
        _finish(journal, rb, target)
        journal.finish("rollback_failed")
        raise Emergency(
            f"ROLLBACK of {env} to {version or 'nothing'} FAILED: {error}; the environment may be "
            f"between versions: see `slipway status --env {env}`, fix, then `slipway rollback "
            f"--env {env}` again"
        ) from exc
    rb.status = "succeeded"
    _finish(journal, rb, target)
    journal.finish("rolled_back")
    return {
        "release": record.id,
        "version": version,
        "database_restored": rb.database_restored,
        "database": why,
        "steps": [s.model_dump(mode="json") for s in rb.steps],
    }


def _finish(journal: Journal, rb: RollbackRecord, target: RolloutTarget) -> None:
    record = journal.record
    rb.finished_at = utcnow()
    duration = (rb.finished_at - rb.started_at).total_seconds()
    rb.metrics = RollbackMetrics(
        timestamp=rb.finished_at,
        event="rollback_success" if rb.status == "succeeded" else "rollback_failure",
        version=rb.to_version,
        duration_seconds=round(duration, 3),
        status="success" if rb.status == "succeeded" else "failure",
        hostname=record.hostname,
        user=record.user,
        system_metrics=system_metrics(target.usage()),
    )
    journal.save()
