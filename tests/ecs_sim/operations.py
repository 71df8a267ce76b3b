"""The ECS operations the simulator answers: one function per `X-Amz-Target` operation,
taking the request's JSON object and answering the response's, as in the API reference
(https://docs.aws.amazon.com/AmazonECS/latest/APIReference/). Call with the store's lock
held (the server does)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from tests.ecs_sim.store import ACCOUNT, EcsError, Service, Store, client_error, invalid
from tests.ecs_sim.tagging import (
    initial_tags,
    list_tags_for_resource,
    tag_resource,
    tags_of,
    untag_resource,
)
from tests.ecs_sim.views import cluster_view, service_view, task_view

Operation = Callable[[Store, dict[str, Any]], dict[str, Any]]
DEFAULT_DEPLOYMENT_CONFIGURATION: dict[str, Any] = {
    "deploymentCircuitBreaker": {"enable": False, "rollback": False},
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}
# CreateService fields kept and answered as given (no behaviour behind them).
KEPT_SERVICE_FIELDS = (
    "networkConfiguration",
    "loadBalancers",
    "platformVersion",
    "enableExecuteCommand",
    "propagateTags",
    "tags",
)


def _page(req: dict[str, Any], key: str, items: list[str], default: int) -> dict[str, Any]:
    """One page of a List* answer: `maxResults` (1 to 100; the operation's default) items
    from `nextToken` on, and the next token while more remain."""
    size = int(req.get("maxResults") or default)
    if not 1 <= size <= 100:
        raise invalid("maxResults must be between 1 and 100.")
    token = str(req.get("nextToken") or "")
    try:
        start = int(base64.urlsafe_b64decode(token).decode()) if token else 0
    except ValueError:
        raise invalid("Invalid nextToken.") from None
    answer: dict[str, Any] = {key: items[start : start + size]}
    if start + size < len(items):
        answer["nextToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
    return answer


# clusters
def create_cluster(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    name = req.get("clusterName") or "default"
    found = store.clusters.get(name)
    if found is None or found["status"] != "ACTIVE":
        found = {"clusterArn": store.arn(f"cluster/{name}"), "clusterName": name}
        found["status"] = "ACTIVE"
        store.clusters[name] = found
    return {"cluster": cluster_view(store, found)}


def describe_clusters(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    clusters, failures = [], []
    for ref in req.get("clusters") or ["default"]:
        name = ref.rsplit("/", 1)[-1]
        found = store.clusters.get(name)
        if found is None:
            failures.append({"arn": store.arn(f"cluster/{name}"), "reason": "MISSING"})
        else:
            clusters.append(cluster_view(store, found))
    return {"clusters": clusters, "failures": failures}


# task definitions
def register_task_definition(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    family = req.get("family") or ""
    if not family or not all(c.isalnum() or c in "-_" for c in family) or len(family) > 255:
        raise client_error("Family contains invalid characters.")
    containers = req.get("containerDefinitions") or []
    if not containers:
        raise client_error("Container list cannot be empty.")
    for container in containers:
        if not container.get("name"):
            raise client_error("Container.name should not be null or empty.")
        if not container.get("image"):
            raise client_error("Container.image should not be null or empty.")
    revisions = store.families.setdefault(family, [])
    definition = {
        **{k: v for k, v in req.items() if k != "tags"},
        "taskDefinitionArn": store.arn(f"task-definition/{family}:{len(revisions) + 1}"),
        "family": family,
        "revision": len(revisions) + 1,
        "status": "ACTIVE",
        "compatibilities": ["EC2", "FARGATE"],
        "registeredAt": time.time(),
        "registeredBy": f"arn:aws:iam::{ACCOUNT}:root",
    }
    revisions.append(definition)
    initial_tags(store, definition["taskDefinitionArn"], req.get("tags"))
    return {"taskDefinition": definition, "tags": tags_of(store, definition["taskDefinitionArn"])}


def describe_task_definition(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    found = store.task_definition(str(req.get("taskDefinition") or ""))
    answer: dict[str, Any] = {"taskDefinition": found}
    if "TAGS" in (req.get("include") or []):
        answer["tags"] = tags_of(store, found["taskDefinitionArn"])
    return answer


def list_task_definitions(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    # Despite its name, `familyPrefix` is "the full family name" (API reference).
    wanted = req.get("familyPrefix")
    status = req.get("status") or "ACTIVE"
    arns = [
        d["taskDefinitionArn"]
        for family in sorted(store.families)
        if wanted in (None, family)
        for d in store.families[family]
        if d["status"] == status
    ]
    if req.get("sort") == "DESC":
        arns.reverse()
    return _page(req, "taskDefinitionArns", arns, 100)


def deregister_task_definition(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    ref = str(req.get("taskDefinition") or "")
    name = ref.rsplit("/", 1)[-1]
    if ":" not in name:
        raise client_error("Revision must be specified.")
    found = store.task_definition(ref)
    if found["status"] == "ACTIVE":
        found["status"], found["deregisteredAt"] = "INACTIVE", time.time()
    return {"taskDefinition": found}


# services
def _resolve_task_definition(store: Store, ref: str) -> str:
    try:
        found = store.task_definition(ref)
    except EcsError:
        raise client_error("TaskDefinition not found.") from None
    if found["status"] != "ACTIVE":  # services keep running one; no new use of it
        raise client_error("TaskDefinition is inactive")
    return str(found["taskDefinitionArn"])


def _deployment_configuration(given: dict[str, Any] | None, base: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **(given or {})}
    breaker = merged.get("deploymentCircuitBreaker") or {}
    merged["deploymentCircuitBreaker"] = {
        "enable": bool(breaker.get("enable")),
        "rollback": bool(breaker.get("rollback")),
    }
    return merged


def create_service(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    cluster = store.cluster(req.get("cluster"))["clusterName"]
    name = req.get("serviceName") or ""
    if not name:
        raise invalid("serviceName is required.")
    existing = store.find_service(cluster, name)
    if existing is not None and existing.status != "INACTIVE":
        raise invalid("Creation of service was not idempotent.")
    definition = _resolve_task_definition(store, str(req.get("taskDefinition") or ""))
    desired = int(req.get("desiredCount", 0))
    if desired < 0:
        raise invalid("Desired count must be >= 0.")
    service = Service(
        name=name,
        cluster=cluster,
        arn=store.arn(f"service/{cluster}/{name}"),
        desired_count=desired,
        launch_type=req.get("launchType") or "FARGATE",
        deployment_configuration=_deployment_configuration(
            req.get("deploymentConfiguration"), DEFAULT_DEPLOYMENT_CONFIGURATION
        ),
        extra={k: req[k] for k in KEPT_SERVICE_FIELDS if k in req},
    )
    store.services[(cluster, name)] = service
    initial_tags(store, service.arn, req.get("tags"))
    store.start_deployment(service, definition)
    return {"service": service_view(store, service)}


def update_service(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    cluster = store.cluster(req.get("cluster"))["clusterName"]
    service = store.service(cluster, str(req.get("service") or ""), active=True)
    primary = service.primary
    definition = primary["taskDefinition"]
    if req.get("taskDefinition"):
        definition = _resolve_task_definition(store, str(req["taskDefinition"]))
    if "desiredCount" in req:
        if int(req["desiredCount"]) < 0:
            raise invalid("Desired count must be >= 0.")
        service.desired_count = int(req["desiredCount"])
    if "deploymentConfiguration" in req:
        service.deployment_configuration = _deployment_configuration(
            req["deploymentConfiguration"], service.deployment_configuration
        )
    if definition != primary["taskDefinition"] or req.get("forceNewDeployment"):
        store.start_deployment(service, definition)
    else:  # a new desired count scales the PRIMARY deployment, no new deployment
        primary["desiredCount"], primary["updatedAt"] = service.desired_count, time.time()
    return {"service": service_view(store, service)}


def delete_service(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    cluster = store.cluster(req.get("cluster"))["clusterName"]
    service = store.service(cluster, str(req.get("service") or ""))
    if service.status != "ACTIVE":
        raise EcsError("ServiceNotActiveException", "Service was not ACTIVE.")
    if service.desired_count and not req.get("force"):
        raise invalid("The service cannot be stopped while it is scaled above 0.")
    service.status, service.desired_count = "DRAINING", 0
    for deployment in service.deployments:
        deployment["desiredCount"] = 0
    return {"service": service_view(store, service)}


def describe_services(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    cluster = store.cluster(req.get("cluster"))["clusterName"]
    refs = req.get("services") or []
    if not refs or len(refs) > 10:
        raise invalid("services should have between 1 and 10 items.")
    services, failures = [], []
    for ref in refs:
        found = store.find_service(cluster, str(ref))
        if found is None:
            arn = store.arn(f"service/{cluster}/{str(ref).rsplit('/', 1)[-1]}")
            failures.append({"arn": arn, "reason": "MISSING"})
        else:
            services.append(service_view(store, found))
    return {"services": services, "failures": failures}


def list_services(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    cluster = store.cluster(req.get("cluster"))["clusterName"]
    arns = [s.arn for (c, _), s in store.services.items() if c == cluster and s.status == "ACTIVE"]
    return _page(req, "serviceArns", arns, 10)


# tasks
def list_tasks(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    cluster = store.cluster(req.get("cluster"))["clusterName"]
    wanted = req.get("desiredStatus") or "RUNNING"
    tasks = [t for t in store.tasks.values() if t.cluster == cluster]
    if req.get("serviceName"):
        service = store.service(cluster, str(req["serviceName"]))
        tasks = [t for t in tasks if t.service == service.name]
    if req.get("family"):
        tasks = [t for t in tasks if t.task_definition["family"] == req["family"]]
    if req.get("startedBy"):
        tasks = [t for t in tasks if t.deployment_id == req["startedBy"]]
    return _page(req, "taskArns", [t.arn for t in tasks if t.desired_status == wanted], 100)


def describe_tasks(store: Store, req: dict[str, Any]) -> dict[str, Any]:
    cluster = store.cluster(req.get("cluster"))["clusterName"]
    refs = req.get("tasks") or []
    if not refs or len(refs) > 100:
        raise invalid("tasks should have between 1 and 100 items.")
    by_id = {t.id: t for t in store.tasks.values() if t.cluster == cluster}
    tasks, failures = [], []
    for ref in refs:
        found = by_id.get(str(ref).rsplit("/", 1)[-1])
        if found is None:
            failures.append({"arn": str(ref), "reason": "MISSING"})
        else:
            tasks.append(task_view(store, found))
    return {"tasks": tasks, "failures": failures}


OPERATIONS: dict[str, Operation] = {
    "CreateCluster": create_cluster,
    "DescribeClusters": describe_clusters,
    "RegisterTaskDefinition": register_task_definition,
    "DescribeTaskDefinition": describe_task_definition,
    "ListTaskDefinitions": list_task_definitions,
    "DeregisterTaskDefinition": deregister_task_definition,
    "CreateService": create_service,
    "UpdateService": update_service,
    "DeleteService": delete_service,
    "DescribeServices": describe_services,
    "ListServices": list_services,
    "ListTasks": list_tasks,
    "DescribeTasks": describe_tasks,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}
