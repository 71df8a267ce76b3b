"""Rollout to AWS ECS services through boto3 (no AWS CLI needed).

Each service in order: its live task definition (the PRIMARY deployment's) copied with only
the named containers' image tags changed, an identical ACTIVE revision reused rather than a
new one registered (`ecs_task_definitions`); `UpdateService` to it, and a wait on the
deployment id that call answered, not on the service's steady state (`ecs_deployments`);
then the service's health checks. A rollback puts the task definitions recorded before the
release back (`restore_state`), waited on the same way; revisions beyond the newest
`keep_revisions` are deregistered only after a release succeeded (`prune`).

    with EcsTarget(settings) as target:
        target.deploy("v2")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blocks.errors import SlipwayError
from blocks.health_check import HealthCheck
from blocks.rollout_ecs import EcsTargetSettings
from tasks.rollout import ecs_preflight
from tasks.rollout.base import (
    OrderedRollout,
    PreflightReport,
    RolloutFailed,
    RolloutReport,
)
from tasks.rollout.ecs_api import AwsApi
from tasks.rollout.ecs_deployments import (
    Deployments,
    describe,
    live_deployments,
    primary,
    verdict,
)
from tasks.rollout.ecs_task_definitions import TaskDefinitions, family_of, name, versions
from tasks.rollout.health import Observation, logger

STOPPED = "slipway.dev/stopped-count"  # the service tag keeping its count while stopped


class EcsTarget(OrderedRollout):
    """A `RolloutTarget` for ECS services (see `EcsTargetSettings`)."""

    independent_services = True

    def __init__(self, settings: EcsTargetSettings) -> None:
        self.settings = settings
        self.services = settings.service_names
        self.api = AwsApi(settings)
        self.definitions = TaskDefinitions(self.api)
        self.deployments = Deployments(self.api, poll_seconds=settings.poll_seconds)

    def describe(self) -> str:
        s = self.settings
        return f"ECS cluster {s.cluster} in {s.region} ({', '.join(self.services)})"

    def close(self) -> None:
        self.api.close()

    # -- what the target implements ---------------------------------------------------------

    def preflight(self, version: str | None = None) -> PreflightReport:
        return PreflightReport(
            self.describe(), ecs_preflight.check(self.api, self.definitions, version)
        )

    def service_versions(self, service: str) -> list[str]:
        answer = self.api.ecs("DescribeServices", cluster=self.settings.cluster, services=[service])
        found = [s for s in answer.get("services", []) if s.get("status") == "ACTIVE"]
        if not found:
            return []
        containers = self.settings.containers(service)
        # Every live deployment counts: a service mid-deployment runs two versions.
        return sorted(
            {
                v
                for d in live_deployments(found[0])
                for v in versions(self.definitions.describe(str(d["taskDefinition"])), containers)
            }
        )

    def start_service(self, service: str, version: str) -> None:
        described = self.deployments.service(service)
        live = primary(described)
        current = str((live or described)["taskDefinition"])
        arn, action = self.definitions.for_version(
            current, self.settings.containers(service), version
        )
        changes: dict[str, Any] = {}
        if arn != current:
            changes["taskDefinition"] = arn
        if described.get("desiredCount") == 0:
            count = self._stopped_count(described)
            if count:
                changes["desiredCount"] = count
        if not changes:
            if live is not None and not verdict(described, str(live["id"])).done:
                self._wait(service, str(live["id"]), None)  # a deployment still under way
            return
        deployment, since = self.deployments.update(service, **changes)
        logger().info("%s: %s, deployment %s started", service, action, deployment)
        reached = self._wait(service, deployment, since)
        logger().info("%s: %s", service, reached)
        if "desiredCount" in changes:
            self.api.ecs("UntagResource", resourceArn=described["serviceArn"], tagKeys=[STOPPED])

    def _wait(self, service: str, deployment: str, since: Any) -> str:
        return self.deployments.wait(
            service, deployment, since, self.settings.rollout_timeout_seconds
        )

    def _stopped_count(self, described: dict[str, Any]) -> int:
        answer = self.api.ecs("ListTagsForResource", resourceArn=described["serviceArn"]).get(
            "tags", []
        )
        found = [t.get("value") for t in answer if t.get("key") == STOPPED]
        return int(found[0]) if found and str(found[0]).isdigit() else 0

    def stop_service(self, service: str) -> None:
        described = self.deployments.service(service)
        count = int(described.get("desiredCount", 0))
        if count:
            self.api.ecs(
                "TagResource",
                resourceArn=described["serviceArn"],
                tags=[{"key": STOPPED, "value": str(count)}],
            )
            deployment, since = self.deployments.update(service, desiredCount=0)
            self._wait(service, deployment, since)

    def gate(self, service: str) -> list[HealthCheck]:
        rollout = HealthCheck(
            kind="rollout",
            service=service,
            deadline_seconds=self.settings.rollout_timeout_seconds,
            interval_seconds=self.settings.poll_seconds,
            max_interval_seconds=self.settings.poll_seconds,
        )
        return [rollout, *self.settings.health_checks.get(service, [])]

    def readiness(self, check: HealthCheck) -> Observation | None:
        if check.kind != "rollout" or check.service is None:
            return None
        described = self.deployments.service(check.service)
        if described.get("desiredCount") == 0:
            return Observation(
                False, f"service {check.service} is stopped (desired count 0)", final=True
            )
        live = primary(described)
        if live is None:
            return Observation(False, f"service {check.service} has no PRIMARY deployment")
        seen = verdict(described, str(live["id"]))
        others = len(live_deployments(described)) - 1
        if seen.done and others:
            return Observation(False, f"{seen.detail}, {others} older deployments draining")
        return Observation(seen.done, seen.detail, final=seen.failed)

    def wait_ready(self, version: str) -> RolloutReport:
        # First the deployments under way settle (a circuit breaker's rollback, say): until
        # then a service runs two versions, which the shared gate would call a failure.
        for i, service in enumerate(self.services):
            first = self.gate(service)[:1]
            self._passes(service, version, first, self.services[:i], self.services[i + 1 :])
        return super().wait_ready(version)

    def start_check(self, service: str) -> str:
        return f"rollout {service}"  # the gate's first check: the wait is part of the start

    # -- what a release saves, and drops after it succeeded ---------------------------------

    def save_state(self, release_id: str, flags: dict[str, str]) -> dict[str, Any]:
        super().save_state(release_id, flags)  # refuses flags
        record = {}
        for service in self.services:
            described = self.deployments.service(service)
            live = primary(described) or described
            record[service] = {
                "task_definition": str(live["taskDefinition"]),
                "deployment": str(live.get("id", "")),
            }
        return record

    def restore_state(self, record: dict[str, Any]) -> list[str]:
        restored, failed = [], []
        for service in [s for s in self.services if isinstance(record.get(s), dict)]:
            wanted = str(record[service].get("task_definition", ""))
            try:
                if self.definitions.describe(wanted).get("status") == "INACTIVE":
                    restored.append(
                        f"{service}: task definition {name(wanted)} is deregistered: the "
                        "redeploy of its version registers a copy"
                    )
                    continue
                described = self.deployments.service(service)
                live = primary(described)
                if live is not None and live["taskDefinition"] == wanted:
                    if not verdict(described, str(live["id"])).done:
                        self._wait(service, str(live["id"]), None)
                    continue
                deployment, since = self.deployments.update(service, taskDefinition=wanted)
                self._wait(service, deployment, since)
                restored.append(f"{service}: back on task definition {name(wanted)} ({deployment})")
            except SlipwayError as exc:
                failed.append(f"{service}: {exc}")
        if failed:
            done = f" (restored: {'; '.join(restored)})" if restored else ""
            raise SlipwayError(f"could not restore {'; '.join(failed)}{done}")
        return restored

    def prune(self) -> list[str]:
        in_use: set[str] = set()
        families: list[str] = []
        for service in self.services:
            described = self.deployments.service(service)
            in_use.update(str(d["taskDefinition"]) for d in live_deployments(described))
            live = primary(described)
            family = family_of(str((live or described)["taskDefinition"]))
            if family not in families:
                families.append(family)
        dropped = []
        for family in families:
            dropped += self.definitions.prune(family, self.settings.keep_revisions, in_use)
        return dropped

    def to_revision(self, number: int, services: Sequence[str] | None = None) -> RolloutReport:
        """Task definition revision `number` of each service's family back, in order, each
        waited on and gated; every service's revision is checked before any change."""
        chosen = list(services or self.services)
        unknown = [s for s in chosen if s not in self.services]
        if unknown:
            raise SlipwayError(f"{', '.join(unknown)}: not services of {self.describe()}")
        wanted = {}
        for service in chosen:
            live = self.deployments.service(service)
            family = family_of(str((primary(live) or live)["taskDefinition"]))
            if f"{family}:{number}" not in {name(a) for a in self.definitions.active(family)}:
                raise SlipwayError(
                    f"no ACTIVE revision {number} of task definition family {family} "
                    f"(service {service}): see `slipway status` for the revisions in use"
                )
            wanted[service] = f"{family}:{number}"
        ready = []
        for i, service in enumerate(chosen):
            current = primary(self.deployments.service(service))
            if current is None or name(str(current["taskDefinition"])) != wanted[service]:
                try:
                    deployment, since = self.deployments.update(
                        service, taskDefinition=wanted[service]
                    )
                    self._wait(service, deployment, since)
                except SlipwayError as exc:
                    raise RolloutFailed(
                        wanted[service],
                        service,
                        str(exc),
                        check=f"rollout {service}",
                        done=chosen[:i],
                        untouched=chosen[i + 1 :],
                    ) from exc
            version = "+".join(self.service_versions(service))
            ready.append(self._gated(service, version, chosen[:i], chosen[i + 1 :]))
        return RolloutReport("+".join(sorted({r.version for r in ready})), ready)

    def history(self) -> dict[str, list[str]]:
        found = {}
        for service in self.services:
            described = self.deployments.service(service)
            containers = self.settings.containers(service)
            lines = []
            for deployment in sorted(
                described.get("deployments", []), key=lambda d: str(d.get("createdAt", ""))
            ):
                definition = self.definitions.describe(str(deployment["taskDefinition"]))
                lines.append(
                    f"{describe(deployment)} ({', '.join(versions(definition, containers))})"
                )
            found[service] = lines
        return found
