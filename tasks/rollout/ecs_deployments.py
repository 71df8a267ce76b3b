"""Waiting on one ECS deployment by its id, not on the service's steady state.

botocore's `services_stable` waiter succeeds when a service has one deployment and running
equals desired, which is also the state after the deployment circuit breaker rolled a failed
deployment back (aws-actions/amazon-ecs-deploy-task-definition #191, #494). Slipway takes
its deployment's id from `UpdateService`'s answer and follows that one: success only when it
is PRIMARY, COMPLETED and running equals desired; failed when its `rolloutState` is FAILED,
or when it is gone or no longer PRIMARY (rolled back); otherwise waited on until Slipway's
own deadline. A failure says why: the rollout state reason, the service's events since the
update and the stopped tasks' reasons.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from blocks.errors import SlipwayError
from blocks.text import one_line
from tasks.rollout.ecs_api import AwsApi
from tasks.rollout.ecs_task_definitions import name

LIVE = ("PRIMARY", "ACTIVE")  # INACTIVE deployments are gone, whatever the list still shows
EVENTS_SHOWN = 3
STOPPED_SHOWN = 3


@dataclass(frozen=True)
class Verdict:
    """One reading of a deployment: done, failed for good, or still going (`detail`)."""

    done: bool
    detail: str
    failed: bool = False


def live_deployments(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's PRIMARY and ACTIVE deployments, PRIMARY first."""
    found = [d for d in service.get("deployments", []) if d.get("status") in LIVE]
    return sorted(found, key=lambda d: d.get("status") != "PRIMARY")


def primary(service: dict[str, Any]) -> dict[str, Any] | None:
    return next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), None)


def describe(deployment: dict[str, Any]) -> str:
    """`ecs-svc/1 PRIMARY COMPLETED api:3, 2/2 running` (one `slipway status` line)."""
    state = deployment.get("rolloutState") or "-"
    failed = deployment.get("failedTasks") or 0
    return (
        f"{deployment.get('id')} {deployment.get('status')} {state} "
        f"{name(str(deployment.get('taskDefinition', '?')))}, "
        f"{deployment.get('runningCount', 0)}/{deployment.get('desiredCount', 0)} running"
        + (f", {failed} failed tasks" if failed else "")
    )


def verdict(service: dict[str, Any], deployment_id: str) -> Verdict:
    """What a `DescribeServices` answer's service says of deployment `deployment_id`."""
    ours = next((d for d in service.get("deployments", []) if d.get("id") == deployment_id), None)
    now = primary(service)
    on = f" (the service is on {name(str(now['taskDefinition']))})" if now else ""
    if ours is None or ours.get("status") == "INACTIVE":
        return Verdict(
            False,
            f"the deployment circuit breaker rolled {deployment_id} back: it is gone{on}",
            failed=True,
        )
    if ours.get("rolloutState") == "FAILED":
        reason = one_line(str(ours.get("rolloutStateReason") or "no reason given"), 200)
        return Verdict(False, f"deployment {deployment_id} failed: {reason}", failed=True)
    if ours.get("status") != "PRIMARY":
        return Verdict(
            False,
            f"the deployment circuit breaker rolled {deployment_id} back: it is no longer "
            f"PRIMARY{on}",
            failed=True,
        )
    running, desired = ours.get("runningCount", 0), ours.get("desiredCount", 0)
    state = ours.get("rolloutState")
    # No rolloutState (a Classic Load Balancer's service): ours is alone and at full count.
    settled = state == "COMPLETED" or (state is None and len(live_deployments(service)) == 1)
    if settled and running == desired:
        return Verdict(True, f"{deployment_id} completed, {running}/{desired} running")
    return Verdict(False, describe(ours))


class Deployments:
    """Reads and waits on an ecs target's deployments."""

    def __init__(
        self,
        api: AwsApi,
        *,
        poll_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.sleep = sleep

    @property
    def cluster(self) -> str:
        return self.api.settings.cluster

    def service(self, service: str) -> dict[str, Any]:
        """The service's description; a one-line error when it is missing."""
        answer = self.api.ecs("DescribeServices", cluster=self.cluster, services=[service])
        found = answer.get("services") or []
        if not found:
            raise SlipwayError(
                f"service {service} not found in cluster {self.cluster}: check services (or "
                "create it)"
            )
        described: dict[str, Any] = found[0]
        return described

    def update(self, service: str, **changes: Any) -> tuple[str, datetime | None]:
        """`UpdateService`; the id of the deployment it started, and when."""
        answer = self.api.ecs("UpdateService", cluster=self.cluster, service=service, **changes)
        new = primary(answer["service"]) or answer["service"]["deployments"][0]
        return str(new["id"]), new.get("createdAt")

    def wait(
        self, service: str, deployment_id: str, since: datetime | None, deadline: float
    ) -> str:
        """Wait until deployment `deployment_id` completed; what it reached, else a one-line
        `SlipwayError` saying why it failed (or the state seen at the deadline)."""
        end = self.clock() + deadline
        while True:
            described = self.service(service)
            seen = verdict(described, deployment_id)
            if seen.done:
                return seen.detail
            if seen.failed:
                raise SlipwayError(seen.detail + self.why(described, deployment_id, since))
            if self.clock() >= end:
                raise SlipwayError(
                    f"deployment {deployment_id} did not complete within {deadline:g} s "
                    f"(rollout_timeout_seconds): {seen.detail}"
                    + self.why(described, deployment_id, since)
                )
            self.sleep(self.poll_seconds)

    def why(self, described: dict[str, Any], deployment_id: str, since: datetime | None) -> str:
        """The events since the update and the stopped tasks' reasons, as a line's tail."""
        events = [
            one_line(str(e.get("message", "")), 160)
            for e in described.get("events", [])
            if since is None or e.get("createdAt") is None or e["createdAt"] >= since
        ][:EVENTS_SHOWN]
        parts = []
        stopped = self.stopped_reasons(deployment_id)
        if stopped:
            parts.append("stopped tasks: " + "; ".join(stopped))
        if events:
            parts.append("events: " + " | ".join(events))
        return ("; " + "; ".join(parts)) if parts else ""

    def stopped_reasons(self, deployment_id: str) -> list[str]:
        """Why the deployment's stopped tasks stopped, with their containers' exit codes."""
        try:
            arns = self.api.ecs(
                "ListTasks", cluster=self.cluster, startedBy=deployment_id, desiredStatus="STOPPED"
            ).get("taskArns", [])[:STOPPED_SHOWN]
            if not arns:
                return []
            tasks = self.api.ecs("DescribeTasks", cluster=self.cluster, tasks=arns)["tasks"]
        except SlipwayError as exc:  # the failure matters more than its details
            return [f"(not read: {exc})"]
        reasons = []
        for task in tasks:
            text = one_line(str(task.get("stoppedReason") or "stopped"), 160)
            exits = [
                f"{c['name']} exit {c['exitCode']}"
                for c in task.get("containers", [])
                if c.get("exitCode") is not None
            ]
            reasons.append(text + (f" ({', '.join(exits)})" if exits else ""))
        return sorted(set(reasons), key=reasons.index)
