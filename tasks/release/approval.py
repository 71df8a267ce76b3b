"""A person's approval in the Prefect UI before a dangerous step (`pause_flow_run`)."""

from __future__ import annotations

import contextlib
import threading

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from pydantic import Field

from blocks.errors import SlipwayError

# Prefect fails a run whose pause outlives its timeout, and such a run cannot go on. The
# pause is given this much more than the approval's own deadline, at which the run
# resumes itself with "no answer", so the flow decides what silence means.
PAUSE_MARGIN_SECONDS = 600


class Approval(RunInput):
    """The form a person fills in the UI to let the run go on."""

    approve: bool = Field(default=False, description="Tick to let the run go on.")
    reason: str = Field(default="", description="Why (recorded in the run's logs).")


def ask_approval(what: str, timeout_minutes: float) -> Approval:
    """Pause this flow run until someone answers about `what` in the UI.

    Nobody answering within `timeout_minutes` counts as a refusal, with that reason.
    """
    logger = get_run_logger()
    logger.warning("waiting for approval in the Prefect UI: %s", what)
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise SlipwayError(f"{what}: an approval needs a flow run to pause")
    flow_run_id = context.flow_run.id
    timeout = timeout_minutes * 60
    silence = f"no answer within {timeout_minutes:g} min"

    def give_up() -> None:
        # Fails harmlessly when a person answered meanwhile (the run is no longer paused).
        with contextlib.suppress(Exception):
            resume_flow_run(flow_run_id, run_input={"approve": False, "reason": silence})

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        form = Approval.with_initial_data(description=f"**Approve:** {what}", approve=False)
        answer = pause_flow_run(
            wait_for_input=form,
            timeout=int(timeout) + PAUSE_MARGIN_SECONDS,
            poll_interval=max(1, min(5, int(timeout / 4))),
        )
    finally:
        timer.cancel()
    verdict = "approved" if answer.approve else "refused"
    logger.info("%s: %s (%s)", verdict, what, answer.reason or "no reason given")
    return answer


def wait_for_approval(what: str, timeout_minutes: float) -> Approval:
    """`ask_approval`, raising when the answer is not a yes (nothing done meanwhile)."""
    answer = ask_approval(what, timeout_minutes)
    if not answer.approve:
        raise SlipwayError(f"{what}: not approved ({answer.reason or 'no reason given'})")
    return answer
