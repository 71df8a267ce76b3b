"""A person's approval in the Prefect UI before a dangerous step (`pause_flow_run`)."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from blocks.errors import SlipwayError


class Approval(RunInput):
    """The form a person fills in the UI to let the run go on."""

    approve: bool = Field(default=False, description="Tick to let the run go on.")
    reason: str = Field(default="", description="Why (recorded in the run's logs).")


def wait_for_approval(what: str, timeout_minutes: int) -> Approval:
    """Pause this flow run until someone approves `what` in the UI; refuse when they do not."""
    logger = get_run_logger()
    logger.warning("waiting for approval in the Prefect UI: %s", what)
    form = Approval.with_initial_data(description=f"**Approve:** {what}", approve=False)
    answer = pause_flow_run(wait_for_input=form, timeout=timeout_minutes * 60, poll_interval=5)
    if not answer.approve:
        raise SlipwayError(f"{what}: not approved ({answer.reason or 'no reason given'})")
    logger.info("approved: %s (%s)", what, answer.reason or "no reason given")
    return answer
