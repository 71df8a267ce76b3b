"""The ECS API simulator (tests/ecs_sim) cross-checked with botocore's waiters
(`services_stable`, `tasks_running`, `tasks_stopped`): deployments, the circuit breaker
(a rolled-back failure that `services_stable` calls a success), failures retried and
stalls, on in-process tasks; then tasks as real containers on the harness's Docker engine
(health checks, image pulls, exits, the service's URL answering the new version).
Operations one by one: tests/test_ecs_simulator_api.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import WaiterError

from tests.compose_app import build_images, image
from tests.ecs_sim import EcsSimulator
from tests.ecs_sim.clients import (
    FAST,
    containers,
    deployment,
    messages,
    primary_completed,
    service,
    wait_for,
    waiter_config,
)
from tests.ecs_sim.tasks import LABEL
from tests.harness.docker_engine import DockerInfo


@pytest.fixture
def sim() -> Iterator[EcsSimulator]:
    with EcsSimulator(tick=0.1, retry_delay=0.1) as simulator:
        yield simulator
        assert simulator.errors == []


# ---------------------------------------------------------------- in-process tasks


def test_task_waiters_and_stopped_tasks(sim: EcsSimulator) -> None:
    client = sim.client()
    sim.create_services("prod", {"api": containers("api")}, desired_count=2)
    wait_for(
        "two tasks",
        lambda: len(client.list_tasks(cluster="prod", serviceName="api")["taskArns"]) == 2,
    )
    arns = client.list_tasks(cluster="prod", serviceName="api")["taskArns"]
    client.get_waiter("tasks_running").wait(cluster="prod", tasks=arns, WaiterConfig=FAST)
    task = client.describe_tasks(cluster="prod", tasks=arns)["tasks"][0]
    first = service(client, "api")["deployments"][0]["id"]
    assert (task["lastStatus"], task["desiredStatus"], task["startedBy"]) == (
        "RUNNING",
        "RUNNING",
        first,
    )
    assert task["taskDefinitionArn"].endswith("/api:1")
    assert task["containers"][0]["image"] == "app:v1"

    missing = client.describe_tasks(cluster="prod", tasks=["0" * 32])
    assert missing["failures"][0]["reason"] == "MISSING"
    with pytest.raises(client.exceptions.ServiceNotFoundException):
        client.list_tasks(cluster="prod", serviceName="nope")

    client.update_service(cluster="prod", service="api", forceNewDeployment=True)
    client.get_waiter("tasks_stopped").wait(cluster="prod", tasks=arns, WaiterConfig=FAST)
    stopped = client.describe_tasks(cluster="prod", tasks=arns)["tasks"]
    newest = service(client, "api")["deployments"][0]["id"]
    assert {t["stoppedReason"] for t in stopped} == {
        f"Scaling activity initiated by (deployment {newest})"
    }
    assert {t["stopCode"] for t in stopped} == {"ServiceSchedulerInitiated"}
    listed = client.list_tasks(cluster="prod", serviceName="api", desiredStatus="STOPPED")
    assert set(arns) <= set(listed["taskArns"])


def test_breaker_rollback_fools_services_stable(sim: EcsSimulator) -> None:
    """The known trap: after the breaker rolled our deployment back, `services_stable`
    reports success, though the deployment we started FAILED and is gone."""
    client = sim.client()
    sim.create_services("prod", {"api": containers("api")})
    wait_for(
        "v1 completed",
        primary_completed(client, "api"),
    )
    sim.fail_image("app:v3")
    v3 = client.register_task_definition(family="api", **containers("api", "app:v3"))
    ours = client.update_service(
        cluster="prod", service="api", taskDefinition=v3["taskDefinition"]["taskDefinitionArn"]
    )["service"]["deployments"][0]

    client.get_waiter("services_stable").wait(cluster="prod", services=["api"], WaiterConfig=FAST)

    live = service(client, "api")
    assert ours["id"] not in [d["id"] for d in live["deployments"]]
    assert live["taskDefinition"].endswith("/api:1")
    events = messages(client, "api")
    assert (
        f"(service api) (deployment {ours['id']}) deployment failed: tasks failed to start."
        in events
    )
    assert any(m.startswith("(service api) rolling back to deployment ecs-svc/") for m in events)
    stopped = client.list_tasks(cluster="prod", serviceName="api", desiredStatus="STOPPED")
    reasons = {
        t["stoppedReason"]
        for t in client.describe_tasks(cluster="prod", tasks=stopped["taskArns"])["tasks"]
    }
    assert "Essential container in task exited" in reasons


def test_breaker_without_rollback_and_threshold(sim: EcsSimulator) -> None:
    client = sim.client()
    sim.create_services("prod", {"api": containers("api")}, circuit_breaker=(True, False))
    wait_for(
        "v1 completed",
        primary_completed(client, "api"),
    )
    sim.fail_image("app:v3")
    v3 = client.register_task_definition(family="api", **containers("api", "app:v3"))
    ours = client.update_service(
        cluster="prod", service="api", taskDefinition=v3["taskDefinition"]["taskDefinitionArn"]
    )["service"]["deployments"][0]
    wait_for(
        "FAILED",
        lambda: (deployment(client, "api", ours["id"]) or {}).get("rolloutState") == "FAILED",
    )
    failed = deployment(client, "api", ours["id"])
    assert failed is not None
    assert failed["status"] == "PRIMARY"
    assert failed["failedTasks"] == 3
    assert failed["rolloutStateReason"] == "ECS deployment circuit breaker: tasks failed to start."
    live = service(client, "api")
    assert [d["taskDefinition"].rsplit("/", 1)[1] for d in live["deployments"]] == [
        "api:2",
        "api:1",
    ]
    assert live["runningCount"] == 1  # v1 keeps serving
    with pytest.raises(WaiterError):
        client.get_waiter("services_stable").wait(
            cluster="prod", services=["api"], WaiterConfig=waiter_config(5)
        )


def test_failures_without_breaker_retry_forever_and_stalls(sim: EcsSimulator) -> None:
    client = sim.client()
    sim.create_services(
        "prod", {"api": containers("api"), "web": containers("web")}, circuit_breaker=(False, False)
    )
    for name in ("api", "web"):
        wait_for(f"{name} completed", primary_completed(client, name))
    sim.fail_image("api:v3")
    sim.stall_image("web:v3")
    ids = {}
    for name in ("api", "web"):
        v3 = client.register_task_definition(family=name, **containers(name, f"{name}:v3"))
        ids[name] = client.update_service(
            cluster="prod", service=name, taskDefinition=v3["taskDefinition"]["taskDefinitionArn"]
        )["service"]["deployments"][0]["id"]
    wait_for(
        "5 failed api tasks",
        lambda: (deployment(client, "api", ids["api"]) or {})["failedTasks"] >= 5,
    )
    assert (deployment(client, "api", ids["api"]) or {})["rolloutState"] == "IN_PROGRESS"
    web = deployment(client, "web", ids["web"])
    assert web is not None
    assert (web["rolloutState"], web["pendingCount"], web["failedTasks"]) == ("IN_PROGRESS", 1, 0)
    for name in ("api", "web"):
        assert len(service(client, name)["deployments"]) == 2


def test_rolling_back_a_stall_keeps_serving(sim: EcsSimulator) -> None:
    """A stalled v3 rolled back by hand (UpdateService to v1's revision): the PENDING v3
    task is stopped, v1 keeps a running task all along (minimumHealthyPercent 100), and the
    service ends with one COMPLETED deployment of v1."""
    client = sim.client()
    sim.create_services("prod", {"api": containers("api")}, circuit_breaker=(False, False))
    wait_for("v1", primary_completed(client, "api"))
    v1 = service(client, "api")["taskDefinition"]
    sim.stall_image("app:v3")
    v3 = client.register_task_definition(family="api", **containers("api", "app:v3"))
    stalled = client.update_service(
        cluster="prod", service="api", taskDefinition=v3["taskDefinition"]["taskDefinitionArn"]
    )["service"]["deployments"][0]["id"]
    wait_for("a PENDING v3 task", lambda: service(client, "api")["pendingCount"] == 1)
    back = client.update_service(cluster="prod", service="api", taskDefinition=v1)["service"]
    ours = back["deployments"][0]["id"]
    running = []

    def completed() -> bool:
        live = service(client, "api")
        running.append(live["runningCount"])
        return bool(live["deployments"][0]["rolloutState"] == "COMPLETED")

    wait_for("the rollback", completed)
    assert min(running) >= 1
    live = service(client, "api")
    assert [(d["id"], d["taskDefinition"]) for d in live["deployments"]] == [(ours, v1)]
    gone = client.list_tasks(cluster="prod", startedBy=stalled, desiredStatus="STOPPED")
    reasons = client.describe_tasks(cluster="prod", tasks=gone["taskArns"])["tasks"]
    assert [t["stoppedReason"] for t in reasons] == [
        f"Scaling activity initiated by (deployment {ours})"
    ]


# ---------------------------------------------------------------- real containers


@pytest.fixture(scope="module")
def demo_registry(docker_engine: DockerInfo) -> str:
    build_images(docker_engine.client(), ("v1", "v2", "v3"), registry=docker_engine.registry)
    return docker_engine.registry


ECR = "123456789012.dkr.ecr.eu-west-3.amazonaws.com"


def api_definition(registry: str, version: str, **extra: Any) -> dict[str, Any]:
    health = ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/health || exit 1"]
    return containers(
        "api",
        image("api", version, registry),
        portMappings=[{"containerPort": 8080, "protocol": "tcp"}],
        healthCheck={"command": health, "interval": 5, "timeout": 2, "retries": 2},
        **extra,
    )


def page(url: str) -> str:
    try:
        return httpx.get(url, timeout=3).text
    except httpx.HTTPError:
        return ""


def version_at(url: str) -> str:
    try:
        return str(httpx.get(f"{url}/health", timeout=3).json()["version"])
    except (httpx.HTTPError, ValueError):
        return ""


@pytest.mark.docker
def test_real_rollout_and_breaker(docker_engine: DockerInfo, demo_registry: str) -> None:
    """v1 then v2 for real (the service URL answers v2, the v1 container is gone); then
    v3, whose /health answers 404: its tasks fail their health checks, the breaker rolls
    back, and the URL answers v2 again."""
    engine = docker_engine.client()
    with EcsSimulator(docker_engine, breaker_threshold=2) as sim:
        client = sim.client()
        sim.create_services("prod", {"api": api_definition(demo_registry, "v1")})
        url = sim.service_url("api", cluster="prod")
        wait_for("v1 answers", lambda: version_at(url) == "v1")
        v1_task = client.list_tasks(cluster="prod", serviceName="api")["taskArns"][0]
        task = client.describe_tasks(cluster="prod", tasks=[v1_task])["tasks"][0]
        assert (task["healthStatus"], task["containers"][0]["healthStatus"]) == (
            "HEALTHY",
            "HEALTHY",
        )

        v2 = client.register_task_definition(family="api", **api_definition(demo_registry, "v2"))
        ours = client.update_service(
            cluster="prod", service="api", taskDefinition=v2["taskDefinition"]["taskDefinitionArn"]
        )["service"]["deployments"][0]["id"]
        wait_for(
            "v2 completed",
            lambda: (deployment(client, "api", ours) or {}).get("rolloutState") == "COMPLETED",
        )
        assert version_at(url) == "v2"
        client.get_waiter("tasks_stopped").wait(cluster="prod", tasks=[v1_task], WaiterConfig=FAST)
        running = engine.containers.list(all=True, filters={"label": f"{LABEL}={sim.id}"})
        assert [c.attrs["Config"]["Image"] for c in running] == [image("api", "v2", demo_registry)]

        v3 = client.register_task_definition(family="api", **api_definition(demo_registry, "v3"))
        failing = client.update_service(
            cluster="prod", service="api", taskDefinition=v3["taskDefinition"]["taskDefinitionArn"]
        )["service"]["deployments"][0]["id"]
        client.get_waiter("services_stable").wait(
            cluster="prod", services=["api"], WaiterConfig=FAST
        )
        wait_for(
            "rolled back",
            lambda: failing not in [d["id"] for d in service(client, "api")["deployments"]],
        )
        assert service(client, "api")["taskDefinition"].endswith("/api:2")
        wait_for("v2 answers", lambda: version_at(url) == "v2")
        stopped = client.list_tasks(
            cluster="prod", serviceName="api", startedBy=failing, desiredStatus="STOPPED"
        )
        tasks = client.describe_tasks(cluster="prod", tasks=stopped["taskArns"])["tasks"]
        reasons = [t["stoppedReason"] for t in tasks]
        assert reasons.count("Task failed container health checks") == 2  # the threshold
        assert sim.errors == []
    assert engine.containers.list(all=True, filters={"label": f"{LABEL}={sim.id}"}) == []


@pytest.mark.docker
def test_real_pull_failure_and_exit(docker_engine: DockerInfo, demo_registry: str) -> None:
    """An image missing from the registry: CannotPullContainerError; a container that
    exits: "Essential container in task exited" with its exit code. Both are retried.
    Both name ECR images, run from the harness's registry. And a container with no
    healthCheck, probed on the simulator's `health_path`."""
    with EcsSimulator(docker_engine, health_path="/") as sim:
        client = sim.client()
        missing = image("api", "v99", ECR)
        exits = {"command": ["sh", "-c", "exit 3"]}
        sim.create_services(
            "prod",
            {
                "api": containers("api", missing),
                "web": containers("web", image("web", "v1", ECR), **exits),
                "site": containers(
                    "web", image("web", "v1", ECR), portMappings=[{"containerPort": 8080}]
                ),
            },
            circuit_breaker=(False, False),
        )

        def stopped(name: str) -> list[Any]:
            arns = client.list_tasks(cluster="prod", serviceName=name, desiredStatus="STOPPED")[
                "taskArns"
            ]
            return client.describe_tasks(cluster="prod", tasks=arns)["tasks"] if arns else []

        wait_for("two failed pulls", lambda: len(stopped("api")) >= 2)
        pulled = stopped("api")[0]
        assert pulled["stoppedReason"].startswith("CannotPullContainerError: ")
        assert (pulled["stopCode"], pulled["containers"][0]["reason"]) == (
            "TaskFailedToStart",
            pulled["stoppedReason"],
        )
        wait_for("an exit", lambda: bool(stopped("web")))
        exited = stopped("web")[0]
        assert exited["stoppedReason"] == "Essential container in task exited"
        assert (exited["stopCode"], exited["containers"][0]["exitCode"]) == (
            "EssentialContainerExited",
            3,
        )
        assert exited["containers"][0]["image"] == image("web", "v1", ECR)
        assert service(client, "api")["deployments"][0]["failedTasks"] >= 2
        wait_for(
            "the site answers",
            lambda: "demo web v1" in page(sim.service_url("site", cluster="prod")),
        )
        site = client.list_tasks(cluster="prod", serviceName="site")["taskArns"]
        assert client.describe_tasks(cluster="prod", tasks=site)["tasks"][0]["healthStatus"] == (
            "HEALTHY"
        )
        assert sim.errors == []
