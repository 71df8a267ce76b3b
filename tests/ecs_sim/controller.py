"""The service scheduler: rolling deployments and the deployment circuit breaker.

On each tick, for each service: account for tasks that stopped (a failure adds to its
deployment's `failedTasks`), stop unhealthy tasks ("Task failed container health
checks"), start tasks of the PRIMARY deployment up to the desired count (after a failure,
not before `retry_delay`), stop older deployments' tasks as the PRIMARY's become healthy,
and at once those that do not serve (pending or unhealthy) ("Scaling activity initiated by
(deployment ...)", as with minimumHealthyPercent 100 and maximumPercent 200), drop
deployments left with no task, and mark the PRIMARY COMPLETED
once it alone runs the desired count, healthy. With `deploymentCircuitBreaker.enable`,
the PRIMARY fails once `failedTasks` reaches the threshold (min 3, max 200, half the
desired count rounded up; or the simulator's `breaker_threshold`): `rolloutState` FAILED,
no more tasks for it, and with `rollback` a new deployment of the last COMPLETED
deployment's task definition. Without the breaker, failing tasks are retried forever.
"""

from __future__ import annotations

import math
import time
from typing import Any

from tests.ecs_sim.store import Service, Task

SCHEDULER = "ServiceSchedulerInitiated"


def _task_list(tasks: list[Task]) -> str:
    return " ".join(f"(task {t.id})" for t in tasks)


class Controller:
    """Moves every service of `sim.store` one step; call `sync_all` with the lock held."""

    def __init__(self, sim: Any) -> None:
        self.sim, self.store = sim, sim.store
        self._next_launch: dict[str, float] = {}  # service ARN -> earliest next start

    def threshold(self, service: Service) -> int:
        """Failed tasks that trip the circuit breaker."""
        if self.sim.breaker_threshold is not None:
            return int(self.sim.breaker_threshold)
        return min(200, max(3, math.ceil(0.5 * service.desired_count)))

    def sync_all(self) -> None:
        for service in list(self.store.services.values()):
            if service.status != "INACTIVE":
                self.sync(service)

    def sync(self, service: Service) -> None:
        tasks = self.store.service_tasks(service)
        self._account(service, tasks)
        live = [t for t in tasks if t.desired_status == "RUNNING" and t.last_status != "STOPPED"]
        primary = service.primary
        if primary["desiredCount"] != service.desired_count:
            primary["desiredCount"], primary["updatedAt"] = service.desired_count, time.time()
        self._breaker(service, live)
        primary = service.primary  # a rollback makes a new one
        mine = [t for t in live if t.deployment_id == primary["id"]]
        if primary["rolloutState"] != "FAILED":
            self._scale(service, primary, mine)
            mine = [t for t in mine if t.desired_status == "RUNNING"]
        healthy = [t for t in mine if t.last_status == "RUNNING" and self.healthy(t)]
        self._drain_old(service, live, len(healthy))
        alive = {t.deployment_id for t in tasks if t.last_status != "STOPPED"}
        self._drop_drained(service, alive)
        if (
            primary["rolloutState"] == "IN_PROGRESS"
            and len(service.deployments) == 1
            and len(healthy) == len(mine) == service.desired_count
        ):
            self._complete(service, primary)
        if service.status == "DRAINING" and not live:
            service.status = "INACTIVE"

    def healthy(self, task: Task) -> bool:
        """HEALTHY, or not health-checked at all (its healthStatus stays UNKNOWN)."""
        checked = "healthCheck" in task.essential or bool(self.sim.health_path)
        return task.health == "HEALTHY" or not checked

    def _account(self, service: Service, tasks: list[Task]) -> None:
        by_id = {d["id"]: d for d in service.deployments}
        for task in tasks:
            if task.last_status == "STOPPED" and not task.counted:
                task.counted = True
                deployment = by_id.get(task.deployment_id)
                if task.failed and deployment is not None:
                    deployment["failedTasks"] += 1
                    deployment["updatedAt"] = time.time()
                    self._next_launch[service.arn] = time.time() + self.sim.retry_delay
            elif (
                task.last_status == "RUNNING"
                and task.desired_status == "RUNNING"
                and task.health == "UNHEALTHY"
            ):
                task.stop("Task failed container health checks", SCHEDULER, failed=True)
                service.event(
                    f"(service {service.name}) (task {task.id}) failed container health checks."
                )

    def _breaker(self, service: Service, live: list[Task]) -> None:
        primary = service.primary
        breaker = service.breaker()
        if not breaker["enable"] or primary["rolloutState"] != "IN_PROGRESS":
            return
        if primary["failedTasks"] < self.threshold(service):
            return
        primary["rolloutState"] = "FAILED"
        primary["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
        primary["updatedAt"] = time.time()
        service.event(
            f"(service {service.name}) (deployment {primary['id']}) deployment failed: "
            "tasks failed to start."
        )
        target = service.last_completed
        # A failed rollback (to the very task definition) is not rolled back again.
        if not breaker["rollback"] or target is None:
            return
        if target["taskDefinition"] == primary["taskDefinition"]:
            return
        rollback = self.store.start_deployment(service, target["taskDefinition"])
        for task in live:
            if task.deployment_id == primary["id"]:
                task.stop(f"Scaling activity initiated by (deployment {rollback['id']})", SCHEDULER)
        service.event(f"(service {service.name}) rolling back to deployment {rollback['id']}.")

    def _scale(self, service: Service, primary: dict[str, Any], mine: list[Task]) -> None:
        missing = service.desired_count - len(mine)
        if missing < 0:
            extra = sorted(mine, key=lambda t: (t.last_status == "RUNNING", t.created_at))
            for task in extra[:-missing]:
                task.stop(f"Scaling activity initiated by (deployment {primary['id']})", SCHEDULER)
            service.event(
                f"(service {service.name}) has stopped {-missing} running tasks: "
                f"{_task_list(extra[:-missing])}."
            )
            return
        if missing == 0 or time.time() < self._next_launch.get(service.arn, 0.0):
            return
        definition = self.store.task_definition(primary["taskDefinition"])
        started = [
            Task(
                arn=self.store.task_arn(service.cluster),
                cluster=service.cluster,
                service=service.name,
                deployment_id=primary["id"],
                task_definition=definition,
            )
            for _ in range(missing)
        ]
        for task in started:
            self.store.tasks[task.arn] = task
            self.sim.run_task(task)
        service.event(
            f"(service {service.name}) has started {missing} tasks: {_task_list(started)}."
        )

    def _drain_old(self, service: Service, live: list[Task], healthy: int) -> None:
        """Keep older deployments' healthy running tasks while the PRIMARY has fewer healthy
        ones than desired (newest deployments' first); stop all their other tasks."""
        primary_id = service.primary["id"]
        age = {d["id"]: n for n, d in enumerate(service.deployments)}
        old = [t for t in live if t.deployment_id != primary_id and t.desired_status == "RUNNING"]
        serving = sorted(
            (t for t in old if t.last_status == "RUNNING" and self.healthy(t)),
            key=lambda t: age.get(t.deployment_id, len(age)),
        )
        kept = {t.arn for t in serving[: max(0, service.desired_count - healthy)]}
        stopped = [t for t in old if t.arn not in kept]
        for task in stopped:
            task.stop(f"Scaling activity initiated by (deployment {primary_id})", SCHEDULER)
        if stopped:
            service.event(
                f"(service {service.name}) has stopped {len(stopped)} running tasks: "
                f"{_task_list(stopped)}."
            )

    def _drop_drained(self, service: Service, alive: set[str]) -> None:
        """Older deployments with no task left go INACTIVE, and out of the list."""
        for deployment in service.deployments[1:]:
            if deployment["id"] not in alive:
                deployment["status"] = "INACTIVE"
        service.deployments[1:] = [d for d in service.deployments[1:] if d["status"] != "INACTIVE"]

    def _complete(self, service: Service, primary: dict[str, Any]) -> None:
        primary["rolloutState"] = "COMPLETED"
        primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
        primary["updatedAt"] = time.time()
        service.last_completed = dict(primary)
        service.event(
            f"(service {service.name}) (deployment {primary['id']}) deployment completed."
        )
        service.event(f"(service {service.name}) has reached a steady state.")
