"""Target settings to a target: the only place that knows the kinds of target.

A new kind adds its settings to `blocks.rollout.TargetSettings`, its module here, and one
branch below; nothing else changes.
"""

from __future__ import annotations

from typing import assert_never

from blocks.rollout import ComposeTargetSettings, TargetSettings
from tasks.rollout.base import RolloutTarget


def open_target(settings: TargetSettings) -> RolloutTarget:
    """The target the settings describe; use it as a context manager (it closes it)."""
    if isinstance(settings, ComposeTargetSettings):
        # Imported here: only a compose environment loads the Docker SDK.
        from tasks.rollout.compose import ComposeTarget

        return ComposeTarget(settings)
    assert_never(settings)
