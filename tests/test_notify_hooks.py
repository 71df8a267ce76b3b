"""The state hooks' messages for each outcome, received by the Telegram simulator.

The hooks are called as Prefect calls them, `hook(flow, flow_run, state)`, with the flow run
and state objects built here (the hook looks up the failed step on the Prefect server); the
end-to-end runs through a worker are in tests/test_deployments.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from prefect.client.schemas.objects import FlowRun, State
from prefect.states import Cancelled, Completed, Crashed, Failed

from flows.backup import backup_database
from flows.release import ReleaseFailed, release
from flows.rollback import rollback
from tasks.notify import Emergency, notify_outcome
from tests.chat_simulators import TelegramSimulator
from tests.harness.prefect_server import PrefectInfo

pytestmark = [pytest.mark.prefect]


@pytest.fixture
def telegram(
    monkeypatch: pytest.MonkeyPatch, prefect_server: PrefectInfo
) -> Iterator[TelegramSimulator]:
    with TelegramSimulator(chat_ids=("111",)) as sim:
        for name in ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "SLIPWAY_SLACK_BLOCK"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", sim.bot_token)
        monkeypatch.setenv("ADMIN_TELEGRAM_IDS", "111")
        monkeypatch.setenv("TELEGRAM_API_URL", sim.api_url)
        monkeypatch.setenv("SLIPWAY_ENV", "production")
        yield sim


def flow_run(parameters: dict[str, Any], *, subflow: bool = False) -> FlowRun:
    return FlowRun(
        name="brave-otter",
        flow_id=uuid.uuid4(),
        parameters=parameters,
        total_run_time=timedelta(seconds=83),
        parent_task_run_id=uuid.uuid4() if subflow else None,
    )


def test_success_names_flow_environment_backup_and_duration(telegram: TelegramSimulator) -> None:
    state: State[Any] = Completed(data={"id": "20261122T020000Z-ab12"})
    notify_outcome(backup_database, flow_run({}), state)
    (message,) = telegram.messages
    assert message.text.startswith("✅ backup-database succeeded on production")
    for expected in ("brave-otter", "20261122T020000Z-ab12", "1 min 23 s", "production"):
        assert expected in message.text


def test_failure_carries_the_error_and_the_version(telegram: TelegramSimulator) -> None:
    error = ReleaseFailed("release v2 to production failed: api answered 500; rolled back to v1")
    notify_outcome(release, flow_run({"version": "v2", "env": None}), Failed(data=error))
    (message,) = telegram.messages
    assert message.text.startswith("❌ release FAILED on production")
    assert "v2" in message.text
    assert "api answered 500; rolled back to v1" in message.text


def test_a_failed_rollback_is_an_emergency_even_as_a_subflow(telegram: TelegramSimulator) -> None:
    error = Emergency("ROLLBACK of production to v1 FAILED: engine unreachable")
    notify_outcome(rollback, flow_run({"to_version": "v1"}, subflow=True), Failed(data=error))
    (message,) = telegram.messages
    assert message.text.startswith("🚨 rollback FAILED on production")
    assert "engine unreachable" in message.text
    assert "act now" in message.text


def test_crash_and_cancel_and_quiet_subflows(telegram: TelegramSimulator) -> None:
    notify_outcome(backup_database, flow_run({}), Crashed(message="SIGTERM"))
    notify_outcome(backup_database, flow_run({}), Cancelled(message="cancelled from the UI"))
    notify_outcome(backup_database, flow_run({}, subflow=True), Completed(data={"id": "x"}))
    assert [m.text.splitlines()[0] for m in telegram.messages] == [
        "❌ backup-database CRASHED on production",
        "ℹ️ backup-database cancelled on production",  # noqa: RUF001
    ]
    assert "SIGTERM" in telegram.messages[0].text


def test_a_failing_notifier_never_raises(telegram: TelegramSimulator) -> None:
    telegram.fail_next(10, 500)
    notify_outcome(backup_database, flow_run({}), Failed(data=RuntimeError("boom")))
    assert telegram.messages == []
    assert set(telegram.statuses) == {500}
