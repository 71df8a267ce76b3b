"""Which release a rollback undoes, and whether it restores the database: the rules alone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from blocks.environment import Environment, ReleasePolicy
from blocks.rollout import ComposeTargetSettings
from flows.rollback import database_plan, pick_release
from tasks.release.journal import Journal, ReleaseRecord, ReleaseStatus, StepRecord

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def journal(release_id: str, status: ReleaseStatus, **fields: Any) -> Journal:
    record = ReleaseRecord(
        id=release_id, environment="prod", version="v9", started_at=NOW, status=status, **fields
    )
    return Journal(None, None, record)  # type: ignore[arg-type]  # never saved here


def environment(policy: str) -> Environment:
    return Environment(
        database_block="db",
        store_block="store",
        target=ComposeTargetSettings(project_directory=Path("/srv/app")),
        policy=ReleasePolicy(database_rollback=policy),  # type: ignore[arg-type]
    )


def test_pick_unfinished_first_then_last_success() -> None:
    journals = [  # newest first, as list_releases gives them
        journal("5", "rolled_back"),
        journal("4", "succeeded"),
        journal("3", "running"),
        journal("2", "succeeded"),
    ]
    assert pick_release(journals, None) is journals[2]
    assert pick_release(journals[:2], None) is journals[1]
    assert pick_release(journals[:1], None) is None
    assert pick_release(journals, "2") is journals[3]
    assert pick_release(journals, "9") is None


MIGRATED = [StepRecord(name="migrate", status="failed", started_at=NOW)]


@pytest.mark.parametrize(
    ("status", "policy", "steps", "stopped", "restore", "why"),
    [
        ("failed", "restore", MIGRATED, True, True, "restore pre-release backup b1"),
        ("running", "restore", MIGRATED, True, True, "restore pre-release backup b1"),
        ("failed", "restore", MIGRATED, False, False, "the app ran during the migration"),
        ("failed", "never", MIGRATED, True, False, "database_rollback=never"),
        ("failed", "ask", MIGRATED, False, True, "policy ask"),
        ("failed", "restore", [], True, False, "no migration ran"),
        ("succeeded", "restore", MIGRATED, True, False, "its database holds live data"),
    ],
)
def test_database_plan(
    status: ReleaseStatus,
    policy: str,
    steps: list[StepRecord],
    stopped: bool,
    restore: bool,
    why: str,
) -> None:
    j = journal("1", status, steps=steps, app_stopped=stopped, backup_id="b1")
    decided, reason = database_plan(j, environment(policy))
    assert decided is restore
    assert why in reason
