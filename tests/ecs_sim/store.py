"""The simulator's state: clusters, task definitions, services with their deployments and
events, and tasks, under one lock. Objects are kept in the API's shapes (camelCase keys,
epoch-second timestamps) so the operations answer them nearly as they are."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "123456789012"
MAX_EVENTS = 100


class EcsError(Exception):
    """An error answered as the service does: HTTP 400, `{"__type": kind, "message": ...}`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message = kind, message


def client_error(message: str) -> EcsError:
    return EcsError("ClientException", message)


def invalid(message: str) -> EcsError:
    return EcsError("InvalidParameterException", message)


@dataclass
class Task:
    """One task: its API fields, plus what the runner and the controller need."""

    arn: str
    cluster: str
    service: str
    deployment_id: str
    task_definition: dict[str, Any]
    created_at: float = field(default_factory=time.time)
    last_status: str = "PROVISIONING"
    desired_status: str = "RUNNING"
    health: str = "UNKNOWN"  # HEALTHY | UNHEALTHY | UNKNOWN
    started_at: float | None = None
    stopping_at: float | None = None
    stopped_at: float | None = None
    stopped_reason: str = ""
    stop_code: str = ""
    exit_code: int | None = None
    container_reason: str = ""
    failed: bool = False  # stopped by a failure (counts in the deployment's failedTasks)
    counted: bool = False  # the controller has accounted for its stop
    container_id: str = ""
    host_ports: dict[int, int] = field(default_factory=dict)  # container port -> 127.0.0.1

    @property
    def id(self) -> str:
        return self.arn.rsplit("/", 1)[1]

    @property
    def essential(self) -> dict[str, Any]:
        """The container the simulator runs: the first essential one."""
        containers = self.task_definition["containerDefinitions"]
        return next((c for c in containers if c.get("essential", True)), containers[0])

    def stop(self, reason: str, code: str, *, failed: bool = False) -> None:
        if self.desired_status == "STOPPED":
            return
        self.desired_status, self.stopping_at = "STOPPED", time.time()
        self.stopped_reason, self.stop_code, self.failed = reason, code, failed


@dataclass
class Service:
    name: str
    cluster: str
    arn: str
    desired_count: int
    launch_type: str
    deployment_configuration: dict[str, Any]
    created_at: float = field(default_factory=time.time)
    status: str = "ACTIVE"
    deployments: list[dict[str, Any]] = field(default_factory=list)  # PRIMARY first
    events: list[dict[str, Any]] = field(default_factory=list)  # newest first
    last_completed: dict[str, Any] | None = None  # the last COMPLETED deployment
    extra: dict[str, Any] = field(default_factory=dict)  # other CreateService fields, kept

    @property
    def primary(self) -> dict[str, Any]:
        return self.deployments[0]

    def event(self, message: str) -> None:
        self.events.insert(
            0, {"id": str(uuid.uuid4()), "createdAt": time.time(), "message": message}
        )
        del self.events[MAX_EVENTS:]

    def breaker(self) -> dict[str, Any]:
        found = self.deployment_configuration.get("deploymentCircuitBreaker") or {}
        return {"enable": bool(found.get("enable")), "rollback": bool(found.get("rollback"))}


class Store:
    """Everything the simulator knows; hold `lock` to read or change it."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.lock = threading.RLock()
        self.clusters: dict[str, dict[str, Any]] = {}
        self.families: dict[str, list[dict[str, Any]]] = {}  # revision N at index N-1
        self.services: dict[tuple[str, str], Service] = {}  # (cluster, name)
        self.tasks: dict[str, Task] = {}  # arn -> task, in creation order
        self.tags: dict[str, dict[str, str]] = {}  # resource arn -> its tags
        self._deployment_ids = itertools.count(int(time.time() * 1000) % 10**13 * 10**3)

    # ARNs and ids
    def arn(self, resource: str) -> str:
        return f"arn:aws:ecs:{self.region}:{ACCOUNT}:{resource}"

    def deployment_id(self) -> str:
        return f"ecs-svc/{next(self._deployment_ids) * 1000 + secrets.randbelow(1000):019d}"

    def task_arn(self, cluster: str) -> str:
        return self.arn(f"task/{cluster}/{secrets.token_hex(16)}")

    # lookups
    def cluster(self, ref: str | None) -> dict[str, Any]:
        """The ACTIVE cluster by name or ARN (default "default")."""
        name = (ref or "default").rsplit("/", 1)[-1]
        found = self.clusters.get(name)
        if found is None or found["status"] != "ACTIVE":
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        return found

    def find_service(self, cluster: str, ref: str) -> Service | None:
        return self.services.get((cluster, ref.rsplit("/", 1)[-1]))

    def service(self, cluster: str, ref: str, *, active: bool = False) -> Service:
        found = self.find_service(cluster, ref)
        if found is None:
            raise EcsError("ServiceNotFoundException", "Service not found.")
        if active and found.status != "ACTIVE":
            raise EcsError("ServiceNotActiveException", "Service was not ACTIVE.")
        return found

    def task_definition(self, ref: str) -> dict[str, Any]:
        """By `family`, `family:revision` or ARN; a family alone is its latest ACTIVE one."""
        name = ref.rsplit("/", 1)[-1] if ref.startswith("arn:") else ref
        family, _, revision = name.partition(":")
        revisions: list[dict[str, Any]] = self.families.get(family, [])
        if revision:
            if revision.isdigit() and 0 < int(revision) <= len(revisions):
                return revisions[int(revision) - 1]
        else:
            active = [d for d in revisions if d["status"] == "ACTIVE"]
            if active:
                return active[-1]
        raise client_error("Unable to describe task definition.")

    def service_tasks(self, service: Service) -> list[Task]:
        return [
            t
            for t in self.tasks.values()
            if (t.cluster, t.service) == (service.cluster, service.name)
        ]

    def start_deployment(self, service: Service, task_definition_arn: str) -> dict[str, Any]:
        """A new PRIMARY deployment of `service`; the former PRIMARY becomes ACTIVE."""
        for old in service.deployments:
            old["status"] = "ACTIVE"
        ident, stamp = self.deployment_id(), time.time()
        deployment = {
            "id": ident,
            "status": "PRIMARY",
            "taskDefinition": task_definition_arn,
            "desiredCount": service.desired_count,
            "pendingCount": 0,
            "runningCount": 0,
            "failedTasks": 0,
            "createdAt": stamp,
            "updatedAt": stamp,
            "launchType": service.launch_type,
            "rolloutState": "IN_PROGRESS",
            "rolloutStateReason": f"ECS deployment {ident} in progress.",
        }
        service.deployments.insert(0, deployment)
        return deployment
