"""The rollout's Prefect tasks, over any `RolloutTarget`."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.rollout import HealthCheck
from tasks.rollout.base import RolloutReport, RolloutTarget


@task(cache_policy=NO_CACHE, name="stop-services")
def stop_services_task(target: RolloutTarget) -> str:
    """Prefect task: stop the services (reverse order); says which."""
    return "stopped " + ", ".join(target.stop_services())


@task(cache_policy=NO_CACHE, name="rollout")
def deploy_task(target: RolloutTarget, version: str, keep_going: bool = False) -> RolloutReport:
    """Prefect task: every service to `version`, gated; the report (summary, output).
    `keep_going`: a rollback's, bringing back every place it can."""
    return target.deploy(version, keep_going=keep_going)


@task(cache_policy=NO_CACHE, name="app-health")
def app_health_task(target: RolloutTarget, checks: list[HealthCheck], version: str) -> str:
    """Prefect task: the app-wide checks after a rollout; their summary."""
    if not checks:
        return "no app-wide checks configured (each service passed its own gate)"
    return target.wait_healthy(checks, version).summary()


@task(cache_policy=NO_CACHE, name="to-revision")
def revision_task(target: RolloutTarget, number: int, services: list[str] | None) -> RolloutReport:
    """Prefect task: a kept revision back on the services (Kubernetes' rollout undo)."""
    return target.to_revision(number, services)


@task(cache_policy=NO_CACHE, name="save-target-state")
def save_state_task(
    target: RolloutTarget, release_id: str, flags: dict[str, str]
) -> dict[str, Any]:
    """Prefect task: what the rollback restores besides the version (no secret values)."""
    return target.save_state(release_id, flags)


@task(cache_policy=NO_CACHE, name="restore-target-state")
def restore_state_task(target: RolloutTarget, record: dict[str, Any]) -> str:
    """Prefect task: the saved state back; says what."""
    return ", ".join(target.restore_state(record)) or "nothing to restore"


@task(cache_policy=NO_CACHE, name="cleanup")
def cleanup_task(target: RolloutTarget, release_id: str) -> str:
    """Prefect task: the release's temporary objects deleted; says which."""
    return ", ".join(target.cleanup(release_id)) or "nothing to delete"


@task(cache_policy=NO_CACHE, name="prune-target")
def prune_task(target: RolloutTarget) -> str:
    """Prefect task: after a release succeeded, what no rollback needs any more, dropped."""
    return ", ".join(target.prune()) or "nothing to prune"
