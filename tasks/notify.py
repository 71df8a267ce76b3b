"""Tell people what happened: state hooks that turn a flow run's outcome into a notice.

Every Slipway flow carries `NOTIFY_HOOKS` (completed, failed, crashed, cancelled). Only
runs started on their own notify: a subflow's outcome is part of its parent's message.
The rollback subflow is the exception: people must hear of it, and of its failure first.

A notifier that fails is logged and never changes the flow's result or hides its error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from blocks.errors import SlipwayError

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun, State

    from blocks.notifiers import Notice, NotifierBlock

Level = Literal["success", "failure", "emergency", "info"]

logger = logging.getLogger("slipway.notify")

# Runs of these flows notify even as subflows.
ALWAYS_NOTIFY = frozenset({"rollback"})
ERROR_LIMIT = 600
NOTIFIER_VARIABLES = (
    "SLIPWAY_SLACK_BLOCK",
    "SLIPWAY_TELEGRAM_BLOCK",
    "SLACK_WEBHOOK_URL",
    "SLACK_BOT_TOKEN",
    "TELEGRAM_BOT_TOKEN",
)


class Emergency(SlipwayError):
    """A failure people must act on now: a rollback that itself failed."""


def configured_notifiers(env: str | None = None) -> list[NotifierBlock]:
    """The notifiers of the environment (its block), else those the process environment names.

    SLIPWAY_SLACK_BLOCK / SLIPWAY_TELEGRAM_BLOCK name saved blocks; without them the runbooks'
    variables apply: SLACK_WEBHOOK_URL (or SLACK_BOT_TOKEN + SLACK_CHANNEL), TELEGRAM_BOT_TOKEN
    + ADMIN_TELEGRAM_IDS.
    """
    if env:
        from blocks.environment import Environment

        return Environment.resolve(env).notifiers()
    if not any(os.environ.get(v) for v in NOTIFIER_VARIABLES):
        return []  # spares every command the notifiers' imports
    from blocks.base import load_named
    from blocks.notifiers import SlackNotifier, TelegramNotifier

    found: list[NotifierBlock] = []
    for cls, variable in (
        (SlackNotifier, "SLIPWAY_SLACK_BLOCK"),
        (TelegramNotifier, "SLIPWAY_TELEGRAM_BLOCK"),
    ):
        name = os.environ.get(variable)
        notifier = load_named(cls, name) if name else cls.from_env()
        if notifier is not None:
            found.append(notifier)
    return found


def send_all(notice: Notice, notifiers: Iterable[NotifierBlock]) -> None:
    """Send to each notifier; failures are logged, never raised."""
    for notifier in notifiers:
        try:
            notifier.send(notice)
        except Exception as exc:
            kind = type(notifier).__name__
            text = str(exc) if isinstance(exc, SlipwayError) else type(exc).__name__
            logger.warning("%s could not deliver the %s notice: %s", kind, notice.level, text)


def _duration(flow_run: FlowRun) -> str:
    spent = flow_run.total_run_time
    if not spent and flow_run.start_time:
        spent = datetime.now(UTC) - flow_run.start_time
    seconds = int(spent.total_seconds()) if isinstance(spent, timedelta) else 0
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _error(state: State[Any]) -> tuple[str, BaseException | None]:
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:
        text = str(exc) if isinstance(exc, SlipwayError) else f"{type(exc).__name__}: {exc}"
        return text[:ERROR_LIMIT], exc
    return (state.message or state.name or "unknown")[:ERROR_LIMIT], None


def _failed_step(flow_run: FlowRun) -> str | None:
    """The first task or subflow of this run that failed, by name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(
                    type=TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED])
                )
            ),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=1,
        )
    return runs[0].name if runs else None


SUBJECTS = (("version", "Version"), ("to_version", "Version"), ("backup", "Backup"))


def _subject(flow_run: FlowRun, state: State[Any]) -> tuple[str, str] | None:
    """The release's version or the backup's id, labelled: what the run was about."""
    params = flow_run.parameters or {}
    for key, label in SUBJECTS:
        if params.get(key) and params[key] != "latest":
            return label, str(params[key])
    if state.is_completed():
        try:
            result = state.result(raise_on_failure=False)
        except Exception:
            return None
        if isinstance(result, dict):
            for key, label in (*SUBJECTS, ("id", "Backup")):
                if result.get(key):
                    return label, str(result[key])
    return None


def notice_for(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> Notice:
    """The message for this outcome, in the spirit of the runbooks' templates."""
    from prefect.utilities.urls import url_for

    from blocks.notifiers import Notice

    env = (flow_run.parameters or {}).get("env") or os.environ.get("SLIPWAY_ENV")
    fields: list[tuple[str, str]] = [("Flow", flow.name), ("Run", flow_run.name)]
    if env:
        fields.append(("Environment", str(env)))
    subject = _subject(flow_run, state)
    if subject:
        fields.append(subject)
    fields.append(("Time", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")))
    fields.append(("Duration", _duration(flow_run)))
    level: Level
    if state.is_completed():
        level, title = "success", f"{flow.name} succeeded"
    elif state.is_cancelled() or state.is_cancelling():
        level, title = "info", f"{flow.name} cancelled"
        fields.append(("State", state.message or "cancelled by a person or the API"))
    else:
        error, exc = _error(state)
        emergency = isinstance(exc, Emergency) or flow.name in ALWAYS_NOTIFY
        level = "emergency" if emergency else "failure"
        title = f"{flow.name} {'CRASHED' if state.is_crashed() else 'FAILED'}"
        try:
            step = _failed_step(flow_run)
        except Exception:
            step = None
        if step:
            fields.append(("Failed step", step))
        fields.append(("Error", error))
        if emergency:
            fields.append(("Next step", "act now: the environment may not be on a known version"))
    if env:
        title += f" on {env}"
    link = None
    try:
        link = url_for(flow_run)
    except Exception:
        link = None
    return Notice(level=level, title=title, fields=fields, link=link)


def notify_outcome(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """State hook: send the run's outcome to every configured notifier; never raises."""
    if flow_run.parent_task_run_id is not None and flow.name not in ALWAYS_NOTIFY:
        return
    try:
        notifiers = configured_notifiers((flow_run.parameters or {}).get("env"))
        if notifiers:
            send_all(notice_for(flow, flow_run, state), notifiers)
    except Exception as exc:
        text = str(exc) if isinstance(exc, SlipwayError) else f"{type(exc).__name__}: {exc}"
        logger.warning("notification of %s skipped: %s", flow_run.name, text)


HOOKS: dict[str, Any] = {
    "on_completion": [notify_outcome],
    "on_failure": [notify_outcome],
    "on_crashed": [notify_outcome],
    "on_cancellation": [notify_outcome],
}
