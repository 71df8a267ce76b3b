"""Rollouts: the target interface and shared ordered rollout (`base`), health polling
(`health`), the factory (`factory`, the only place that knows the kinds), the Prefect tasks
(`steps`), and one module per kind of target: `compose` (with `compose_v1`), `ssh` (hosts
in waves, each a `systemd_host` over an `ssh_session`), `kubernetes` (with `kube_api`,
`kube_status`, `kube_release_state`) and `ecs` (with `ecs_api`, `ecs_deployments`,
`ecs_task_definitions`, `ecs_preflight`)."""

from tasks.rollout.base import (
    LiveVersion,
    MixedVersions,
    PreflightReport,
    RolloutFailed,
    RolloutReport,
    RolloutTarget,
)
from tasks.rollout.factory import open_target

__all__ = [
    "LiveVersion",
    "MixedVersions",
    "PreflightReport",
    "RolloutFailed",
    "RolloutReport",
    "RolloutTarget",
    "open_target",
]
