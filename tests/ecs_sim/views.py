"""The API's shapes of clusters, services, deployments and tasks, counted from the tasks
at the time of the call (as the real service reports them)."""

from __future__ import annotations

from typing import Any

from tests.ecs_sim.store import Service, Store, Task


def _counts(tasks: list[Task]) -> tuple[int, int]:
    """(running, pending) of the tasks ECS still wants running."""
    wanted = [t for t in tasks if t.desired_status == "RUNNING"]
    running = sum(t.last_status == "RUNNING" for t in wanted)
    pending = sum(t.last_status in ("PROVISIONING", "PENDING", "ACTIVATING") for t in wanted)
    return running, pending


def cluster_view(store: Store, cluster: dict[str, Any]) -> dict[str, Any]:
    name = cluster["clusterName"]
    tasks = [t for t in store.tasks.values() if t.cluster == name]
    running = sum(t.last_status == "RUNNING" for t in tasks)
    pending = sum(t.last_status in ("PROVISIONING", "PENDING") for t in tasks)
    services = sum(s.status == "ACTIVE" for (c, _), s in store.services.items() if c == name)
    return {
        **cluster,
        "runningTasksCount": running,
        "pendingTasksCount": pending,
        "activeServicesCount": services,
        "registeredContainerInstancesCount": 0,
    }


def deployment_view(store: Store, service: Service, deployment: dict[str, Any]) -> dict[str, Any]:
    mine = [t for t in store.service_tasks(service) if t.deployment_id == deployment["id"]]
    running, pending = _counts(mine)
    return {**deployment, "runningCount": running, "pendingCount": pending}


def service_view(store: Store, service: Service) -> dict[str, Any]:
    running, pending = _counts(store.service_tasks(service))
    primary = service.primary if service.deployments else {}
    return {
        **service.extra,
        "serviceArn": service.arn,
        "serviceName": service.name,
        "clusterArn": store.arn(f"cluster/{service.cluster}"),
        "status": service.status,
        "desiredCount": service.desired_count,
        "runningCount": running,
        "pendingCount": pending,
        "launchType": service.launch_type,
        "taskDefinition": primary.get("taskDefinition", ""),
        "deploymentConfiguration": service.deployment_configuration,
        "deployments": [deployment_view(store, service, d) for d in service.deployments],
        "events": list(service.events),
        "createdAt": service.created_at,
        "schedulingStrategy": "REPLICA",
        "deploymentController": {"type": "ECS"},
    }


def task_view(store: Store, task: Task) -> dict[str, Any]:
    definition = task.task_definition
    service = store.find_service(task.cluster, task.service)
    containers = []
    for container in definition["containerDefinitions"]:
        runs = container is task.essential
        item: dict[str, Any] = {
            "containerArn": store.arn(f"container/{task.cluster}/{task.id}/{container['name']}"),
            "taskArn": task.arn,
            "name": container["name"],
            "image": container.get("image", ""),
            "lastStatus": task.last_status
            if task.last_status in ("RUNNING", "STOPPED")
            else "PENDING",
            "healthStatus": task.health if runs and "healthCheck" in container else "UNKNOWN",
            "networkBindings": [
                {"bindIP": "127.0.0.1", "containerPort": port, "hostPort": host, "protocol": "tcp"}
                for port, host in task.host_ports.items()
            ]
            if runs
            else [],
        }
        if runs and task.exit_code is not None:
            item["exitCode"] = task.exit_code
        if runs and task.container_reason:
            item["reason"] = task.container_reason
        containers.append(item)
    found: dict[str, Any] = {
        "taskArn": task.arn,
        "clusterArn": store.arn(f"cluster/{task.cluster}"),
        "taskDefinitionArn": definition["taskDefinitionArn"],
        "group": f"service:{task.service}",
        "startedBy": task.deployment_id,
        "lastStatus": task.last_status,
        "desiredStatus": task.desired_status,
        "healthStatus": task.health,
        "containers": containers,
        "createdAt": task.created_at,
        "launchType": service.launch_type if service else "FARGATE",
        "version": 1,
    }
    for key, value in (
        ("startedAt", task.started_at),
        ("stoppingAt", task.stopping_at),
        ("stoppedAt", task.stopped_at),
    ):
        if value is not None:
            found[key] = value
    if task.stopped_reason:
        found["stoppedReason"] = task.stopped_reason
    if task.stop_code:
        found["stopCode"] = task.stop_code
    return found
