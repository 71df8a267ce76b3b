"""Target settings to a target: the only place that knows the kinds of target.

A new kind adds its settings to `blocks.rollout.TargetSettings`, its module here, and one
branch below; nothing else changes.
"""

from __future__ import annotations

from typing import assert_never

from blocks.rollout import (
    ComposeTargetSettings,
    EcsTargetSettings,
    KubernetesTargetSettings,
    SshTargetSettings,
    TargetSettings,
)
from tasks.rollout.base import RolloutTarget


def open_target(settings: TargetSettings) -> RolloutTarget:
    """The target the settings describe; use it as a context manager (it closes it)."""
    # Imported in the branch: each kind loads only its own client library.
    if isinstance(settings, ComposeTargetSettings):
        from tasks.rollout.compose import ComposeTarget

        return ComposeTarget(settings)
    if isinstance(settings, SshTargetSettings):
        from tasks.rollout.ssh import SshTarget

        return SshTarget(settings)
    if isinstance(settings, KubernetesTargetSettings):
        from tasks.rollout.kubernetes import KubernetesTarget

        return KubernetesTarget(settings)
    if isinstance(settings, EcsTargetSettings):
        from tasks.rollout.ecs import EcsTarget

        return EcsTarget(settings)
    assert_never(settings)
