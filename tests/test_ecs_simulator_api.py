"""The ECS API simulator (tests/ecs_sim) cross-checked with boto3: each operation's round
trip (request and answer fields as in the API reference) and its errors as botocore
raises them, on in-process tasks. Deployments, waiters, the circuit breaker and real
containers: tests/test_ecs_simulator.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ecs_sim import EcsSimulator
from tests.ecs_sim.clients import (
    FAST,
    containers,
    deployment,
    messages,
    primary_completed,
    service,
    wait_for,
)


@pytest.fixture
def sim() -> Iterator[EcsSimulator]:
    with EcsSimulator(tick=0.1, retry_delay=0.1) as simulator:
        yield simulator
        assert simulator.errors == []


def test_clusters_and_task_definitions(sim: EcsSimulator) -> None:
    client = sim.client()
    made = client.create_cluster(clusterName="prod")["cluster"]
    assert made["clusterArn"] == "arn:aws:ecs:eu-west-3:123456789012:cluster/prod"
    assert client.create_cluster(clusterName="prod")["cluster"]["clusterArn"] == made["clusterArn"]
    found = client.describe_clusters(clusters=["prod", "nope"])
    assert [c["status"] for c in found["clusters"]] == ["ACTIVE"]
    assert found["failures"] == [
        {"arn": "arn:aws:ecs:eu-west-3:123456789012:cluster/nope", "reason": "MISSING"}
    ]

    health = {"command": ["CMD-SHELL", "true"], "interval": 5, "retries": 3}
    first = client.register_task_definition(
        family="api",
        **containers(
            "api",
            portMappings=[{"containerPort": 8080, "protocol": "tcp"}],
            environment=[{"name": "A", "value": "1"}],
            healthCheck=health,
        ),
    )["taskDefinition"]
    second = client.register_task_definition(family="api", **containers("api", "app:v2"))[
        "taskDefinition"
    ]
    client.register_task_definition(family="worker", **containers("worker"))
    client.register_task_definition(family="api-admin", **containers("admin"))
    assert first["taskDefinitionArn"].endswith(":task-definition/api:1")
    assert (second["revision"], second["status"]) == (2, "ACTIVE")
    kept = first["containerDefinitions"][0]
    assert kept["healthCheck"] == health
    assert kept["environment"] == [{"name": "A", "value": "1"}]
    assert kept["portMappings"] == [{"containerPort": 8080, "protocol": "tcp"}]
    assert first["registeredAt"].year >= 2024

    for ref in ("api", "api:2", second["taskDefinitionArn"]):
        assert (
            client.describe_task_definition(taskDefinition=ref)["taskDefinition"]["revision"] == 2
        )
    listed = client.list_task_definitions(familyPrefix="api")["taskDefinitionArns"]
    assert [a.rsplit("/", 1)[1] for a in listed] == ["api:1", "api:2"]
    desc = client.list_task_definitions(sort="DESC")["taskDefinitionArns"]
    assert [a.rsplit("/", 1)[1] for a in desc] == ["worker:1", "api-admin:1", "api:2", "api:1"]

    gone = client.deregister_task_definition(taskDefinition="api:2")["taskDefinition"]
    assert gone["status"] == "INACTIVE"
    assert client.describe_task_definition(taskDefinition="api:2")["taskDefinition"]["status"] == (
        "INACTIVE"
    )
    assert client.describe_task_definition(taskDefinition="api")["taskDefinition"]["revision"] == 1
    inactive = client.list_task_definitions(familyPrefix="api", status="INACTIVE")
    assert [a.rsplit("/", 1)[1] for a in inactive["taskDefinitionArns"]] == ["api:2"]
    pages = client.get_paginator("list_task_definitions").paginate(
        status="ACTIVE", PaginationConfig={"PageSize": 2}
    )
    assert [len(p["taskDefinitionArns"]) for p in pages] == [2, 1]

    with pytest.raises(client.exceptions.ClientException, match="Unable to describe"):
        client.describe_task_definition(taskDefinition="api:9")
    with pytest.raises(client.exceptions.ClientException):
        client.register_task_definition(family="bad family", **containers("x"))
    assert sim.errors == []


def test_services_deployments_and_errors(sim: EcsSimulator) -> None:
    client = sim.client()
    with pytest.raises(client.exceptions.ClusterNotFoundException):
        client.describe_services(cluster="prod", services=["api"])
    sim.create_services("prod", {"api": containers("api")}, desired_count=2)
    client.get_waiter("services_stable").wait(cluster="prod", services=["api"], WaiterConfig=FAST)
    wait_for(
        "v1 completed",
        primary_completed(client, "api"),
    )

    live = service(client, "api")
    first = live["deployments"][0]
    assert (live["runningCount"], live["desiredCount"]) == (2, 2)
    assert first["rolloutStateReason"] == f"ECS deployment {first['id']} completed."
    assert first["id"].startswith("ecs-svc/")
    assert first["id"][8:].isdigit()
    assert messages(client, "api")[0] == "(service api) has reached a steady state."
    assert live["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": True,
    }

    v2 = client.register_task_definition(family="api", **containers("api", "app:v2"))
    updated = client.update_service(
        cluster="prod", service="api", taskDefinition=v2["taskDefinition"]["taskDefinitionArn"]
    )["service"]
    ours = updated["deployments"][0]
    assert (ours["status"], ours["rolloutState"], ours["taskDefinition"]) == (
        "PRIMARY",
        "IN_PROGRESS",
        v2["taskDefinition"]["taskDefinitionArn"],
    )
    assert ours["rolloutStateReason"] == f"ECS deployment {ours['id']} in progress."
    assert [d["status"] for d in updated["deployments"]] == ["PRIMARY", "ACTIVE"]
    client.get_waiter("services_stable").wait(cluster="prod", services=["api"], WaiterConfig=FAST)
    wait_for(
        "v2 completed",
        lambda: (deployment(client, "api", ours["id"]) or {}).get("rolloutState") == "COMPLETED",
    )
    assert service(client, "api")["taskDefinition"].endswith("/api:2")

    forced = client.update_service(cluster="prod", service="api", forceNewDeployment=True)
    assert forced["service"]["deployments"][0]["id"] != ours["id"]
    scaled = client.update_service(cluster="prod", service="api", desiredCount=1)["service"]
    assert len({d["id"] for d in scaled["deployments"]}) == len(forced["service"]["deployments"])
    client.get_waiter("services_stable").wait(cluster="prod", services=["api"], WaiterConfig=FAST)

    arns = client.list_services(cluster="prod")["serviceArns"]
    assert arns == ["arn:aws:ecs:eu-west-3:123456789012:service/prod/api"]
    both = client.describe_services(cluster="prod", services=["api", "nope"])
    assert both["failures"] == [
        {"arn": "arn:aws:ecs:eu-west-3:123456789012:service/prod/nope", "reason": "MISSING"}
    ]
    with pytest.raises(client.exceptions.InvalidParameterException, match="not idempotent"):
        client.create_service(cluster="prod", serviceName="api", taskDefinition="api")
    with pytest.raises(client.exceptions.ServiceNotFoundException):
        client.update_service(cluster="prod", service="nope", forceNewDeployment=True)
    with pytest.raises(client.exceptions.ClientException, match="TaskDefinition not found"):
        client.update_service(cluster="prod", service="api", taskDefinition="api:7")
    client.deregister_task_definition(taskDefinition="api:1")
    with pytest.raises(client.exceptions.ClientException, match="inactive"):
        client.update_service(cluster="prod", service="api", taskDefinition="api:1")

    sim.deny("UpdateService")
    with pytest.raises(client.exceptions.AccessDeniedException, match="ecs:UpdateService"):
        client.update_service(cluster="prod", service="api", forceNewDeployment=True)

    client.delete_service(cluster="prod", service="api", force=True)
    with pytest.raises(client.exceptions.ServiceNotActiveException):
        client.delete_service(cluster="prod", service="api", force=True)
    client.get_waiter("services_inactive").wait(cluster="prod", services=["api"], WaiterConfig=FAST)


def test_list_pages(sim: EcsSimulator) -> None:
    """ListServices answers 10 services a page by default (nextToken for the others)."""
    client = sim.client()
    sim.create_services(
        "prod", {f"svc-{n:02}": containers("x") for n in range(12)}, desired_count=0
    )
    first = client.list_services(cluster="prod")
    assert len(first["serviceArns"]) == 10
    rest = client.list_services(cluster="prod", nextToken=first["nextToken"])
    assert len(rest["serviceArns"]) == 2
    assert "nextToken" not in rest
    pages = client.get_paginator("list_services").paginate(cluster="prod")
    assert sum(len(p["serviceArns"]) for p in pages) == 12
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.list_services(cluster="prod", nextToken="!!")


def test_tags_on_services_and_task_definitions(sim: EcsSimulator) -> None:
    client = sim.client()
    client.create_cluster(clusterName="tagged")
    registered = client.register_task_definition(
        family="tagged-api",
        containerDefinitions=[{"name": "api", "image": "api:v1"}],
        tags=[{"key": "team", "value": "shop"}],
    )["taskDefinition"]
    arn = registered["taskDefinitionArn"]
    described = client.describe_task_definition(taskDefinition=arn, include=["TAGS"])
    assert described["tags"] == [{"key": "team", "value": "shop"}]
    service = client.create_service(
        cluster="tagged", serviceName="api", taskDefinition=arn, desiredCount=0
    )["service"]["serviceArn"]
    client.tag_resource(resourceArn=service, tags=[{"key": "a", "value": "1"}])
    client.tag_resource(resourceArn=service, tags=[{"key": "b", "value": "2"}])
    client.untag_resource(resourceArn=service, tagKeys=["a"])
    assert client.list_tags_for_resource(resourceArn=service)["tags"] == [
        {"key": "b", "value": "2"}
    ]
    with pytest.raises(client.exceptions.InvalidParameterException):
        client.list_tags_for_resource(resourceArn=service + "-gone")
