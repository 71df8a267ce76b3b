"""The ecs target against the ECS simulator (tests/ecs_sim) and moto's ECR and STS.

Tasks run in-process here, except the docker-marked test where they are real containers
whose service URL answers the version for real. moto serves ECR and STS (server mode),
reached through AWS_ENDPOINT_URL as any AWS SDK user would point boto3 elsewhere; the
target's ECS client goes to the simulator through its endpoint_url.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from blocks.env_file import apply_environment, load_environment_file
from blocks.errors import SlipwayError
from blocks.rollout_ecs import EcsTargetSettings
from tasks.rollout import MixedVersions, RolloutFailed, open_target
from tasks.rollout.ecs import EcsTarget
from tests.compose_app import build_images, image
from tests.ecs_app import ECR, REGION, EcsApp, create_ecs_app, next_name, task_definition
from tests.ecs_sim import EcsSimulator
from tests.harness.docker_engine import DockerInfo
from tests.harness.prefect_server import PrefectInfo

# -- against the simulator (tasks in-process) and moto (ECR, STS) ---------------------------


@pytest.fixture(scope="module")
def aws() -> Iterator[str]:
    """moto's ECR and STS in server mode; this process's AWS clients point at it (the ECS
    target's ECS client at the simulator: its endpoint_url)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", url)
        patch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLETESTING00")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "moto-secret")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.delenv("AWS_PROFILE", raising=False)
        yield url
    server.stop()


@pytest.fixture(scope="module")
def sim(aws: str) -> Iterator[EcsSimulator]:
    del aws
    with EcsSimulator(breaker_threshold=2, tick=0.1, retry_delay=0.1) as simulator:
        yield simulator
        assert simulator.errors == []


@pytest.fixture
def app(sim: EcsSimulator) -> EcsApp:
    return create_ecs_app(sim)


def test_a_second_release_of_a_version_registers_nothing(app: EcsApp) -> None:
    with app.target() as t:
        t.wait_ready("v1")
        report = t.deploy("v2")
        assert [s.service for s in report.services] == [app.api, app.web]
        assert report.services[0].health.results[0].check == f"rollout {app.api}"
        assert t.current_version() == "v2"
        assert app.revisions(app.api) == [1, 2]
        t.deploy("v2")
        assert app.revisions(app.api) == [1, 2]  # already on it: nothing registered
        t.deploy("v1")
        assert app.revisions(app.api) == [1, 2]  # api:1 is identical: reused
        assert t.current_version() == "v1"
        definition = t.definitions.describe(f"{app.api}:1")
        assert [c["image"] for c in definition["containerDefinitions"]] == [
            app.image("api", "v1"),
            "envoyproxy/envoy:v1.29",  # not named: left as it is
        ]
        history = t.history()[app.api]
    assert len(history) == 1
    assert " PRIMARY COMPLETED " in history[0]
    assert history[0].endswith(f"{app.api}:1, 1/1 running (v1)")


def test_the_breaker_rolled_back_and_slipway_is_not_fooled(app: EcsApp) -> None:
    sim = app.sim
    sim.fail_image(app.image("api", "v3"))
    with app.target() as t:
        t.deploy("v2")
        with pytest.raises(RolloutFailed) as failed:
            t.deploy("v3")
        assert t.current_version() == "v2"
    message = str(failed.value)
    assert "\n" not in message
    assert failed.value.check == f"rollout {app.api}"
    assert message.startswith(f"rollout of v3 failed at {app.api}: ")
    assert "circuit breaker" in message
    assert "Essential container in task exited" in message  # the stopped tasks' reason
    assert message.endswith(f"; not touched: {app.web}")
    ours = re.search(r"ecs-svc/\d+", message)
    assert ours is not None
    # botocore's waiter calls this a success: one deployment, running == desired.
    sim.client().get_waiter("services_stable").wait(
        cluster=app.cluster, services=[app.api], WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    service = sim.client().describe_services(cluster=app.cluster, services=[app.api])
    deployments = service["services"][0]["deployments"]
    assert ours.group(0) not in [d["id"] for d in deployments if d["status"] == "PRIMARY"]


def test_a_breaker_without_rollback_fails_and_slipway_rolls_back_itself(
    sim: EcsSimulator,
) -> None:
    app = create_ecs_app(sim, breaker=(True, False))
    sim.fail_image(app.image("api", "v3"))
    with app.target() as t:
        t.deploy("v2")
        with pytest.raises(RolloutFailed) as failed:
            t.deploy("v3")
        assert (
            "failed: ECS deployment circuit breaker: tasks failed to start.; stopped tasks: "
            "Essential container in task exited (api exit 1)"
        ) in str(failed.value)
        assert t.service_versions(app.api) == ["v2", "v3"]  # FAILED stays PRIMARY
        report = t.deploy("v2", keep_going=True)  # what a rollback does
        assert [s.service for s in report.services] == [app.api, app.web]
        assert t.current_version() == "v2"
        assert app.revisions(app.api) == [1, 2, 3]  # api:2 reused, nothing registered


def test_a_stalled_deployment_ends_at_the_deadline_and_the_record_restores(
    sim: EcsSimulator,
) -> None:
    app = create_ecs_app(sim, breaker=(False, False))
    sim.stall_image(app.image("api", "v3"))
    with app.target() as t:
        t.deploy("v2")
        record = t.save_state("r1", {})
        assert record[app.api]["task_definition"].endswith(f"task-definition/{app.api}:2")
        assert record[app.api]["deployment"].startswith("ecs-svc/")
        with app.target(rollout_timeout_seconds=3) as short, pytest.raises(RolloutFailed) as failed:
            short.deploy("v3")
        message = str(failed.value)
        assert "did not complete within 3 s (rollout_timeout_seconds)" in message
        assert "IN_PROGRESS" in message
        with pytest.raises(MixedVersions):
            t.current_version()  # v2's tasks still run beside v3's pending ones
        restored = t.restore_state(record)
        assert len(restored) == 1
        assert restored[0].startswith(f"{app.api}: back on task definition {app.api}:2 (ecs-svc/")
        assert t.current_version() == "v2"
        assert t.restore_state(record) == []  # already there
        with pytest.raises(SlipwayError, match="no feature flags"):
            t.save_state("r2", {"beta": "on"})


def test_prune_keeps_the_newest_and_those_in_use(app: EcsApp) -> None:
    with app.target(keep_revisions=1) as t:
        for version in ("v2", "v4", "v1"):  # api:2, api:3, then api:1 reused
            t.deploy(version)
        assert app.revisions(app.api) == [1, 2, 3]
        dropped = t.prune()
        assert dropped == [
            f"deregistered task definition {app.api}:2",
            f"deregistered task definition {app.web}:2",
        ]
        assert app.revisions(app.api) == [1, 3]  # 3 the newest, 1 in use
        assert app.revisions(app.api, "INACTIVE") == [2]
        assert t.prune() == []
        t.deploy("v4")  # api:3 again
        assert t.prune() == [
            f"deregistered task definition {app.api}:1",
            f"deregistered task definition {app.web}:1",
        ]


def test_a_kept_revision_comes_back(app: EcsApp) -> None:
    with app.target() as t:
        t.deploy("v2")
        with pytest.raises(
            SlipwayError, match=f"no ACTIVE revision 9 of task definition family {app.api} "
        ):
            t.to_revision(9)
        report = t.to_revision(1, [app.api])
        assert report.version == "v1"
        assert t.live_versions().services == {app.api: ["v1"], app.web: ["v2"]}


def test_preflight_says_what_is_wrong_in_one_line(
    app: EcsApp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with app.target() as t:
        checks = t.preflight("v2").checks
    assert checks[0] == "credentials: arn:aws:sts::123456789012:user/moto"
    assert f"cluster {app.cluster} is ACTIVE" in checks
    assert f"image {app.image('api', 'v2')}: not in ECR, not checked" in checks

    def fails(target: EcsTarget, message: str, version: str | None = "v2") -> None:
        with target, pytest.raises(SlipwayError) as raised:
            target.preflight(version)
        assert re.search(message, str(raised.value)), str(raised.value)
        assert "\n" not in str(raised.value)

    fails(app.target(cluster="nowhere"), f"cluster nowhere not found in {REGION}: check cluster")
    ghost = [app.api, "ghost"]
    fails(app.target(services=ghost), f"service ghost not found in cluster {app.cluster}")
    fails(
        app.target(services=[{"name": app.api, "containers": ["sidecar"]}]),
        f"task definition {app.api}:1 has no container sidecar: fix",
    )
    app.sim.deny("DescribeClusters")
    try:
        fails(app.target(), "ecs:DescribeClusters: access denied .*allow ecs:DescribeClusters")
    finally:
        app.sim.api.denied.clear()
    for name_ in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name_)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    fails(app.target(), "sts:GetCallerIdentity: no AWS credentials found: set the target's")


def test_preflight_checks_ecr_images_and_asks_iam(sim: EcsSimulator, aws: str) -> None:
    # Its own repository: moto keeps one state per process, shared with other modules.
    repository = f"preflight-{next_name()}/api"
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName=repository)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + "1" * 64,
        },
        "layers": [],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag="v1")
    app = create_ecs_app(sim, api_image=f"{ECR}/{repository}:v1")
    with app.target(check_permissions=True) as t:
        checks = t.preflight("v1").checks
        assert f"image {ECR}/{repository}:v1 exists" in checks
        # moto's IAM has no policy simulator: noted, not a failure
        assert checks[-1].startswith("write permissions not checked: iam:SimulatePrincipalPolicy")
        with pytest.raises(SlipwayError) as raised:
            t.preflight("v2")
    assert str(raised.value) == (
        f"image {ECR}/{repository}:v2 of service {app.api}: image not found in ECR: push "
        f"{repository}:v2 first"
    )
    del aws


def test_a_rollback_brings_back_every_service_it_can(app: EcsApp) -> None:
    app.sim.fail_image(app.image("api", "v4"))
    with app.target() as t:
        with pytest.raises(RolloutFailed) as failed:
            t.deploy("v4", keep_going=True)
        assert failed.value.service == app.api
        assert failed.value.done == [app.web]
        assert t.live_versions().services[app.web] == ["v4"]  # went on after api failed
        assert t.service_versions(app.api) == ["v1"]


def test_a_credentials_block_from_the_environment_file_assumes_its_role(
    app: EcsApp,
    aws: str,
    prefect_server: PrefectInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del prefect_server
    from blocks.environment import Environment

    monkeypatch.setenv("DB_PASSWORD", "pg-secret")
    monkeypatch.setenv("DEPLOY_SECRET", "deploy-secret")
    path = tmp_path / "ecs.yaml"
    path.write_text(
        f"""
name: ecs-block
database: {{url: "postgresql://app@db:5432/app", password: "${{DB_PASSWORD}}"}}
store: {{url: s3://backups/ecs}}
target:
  kind: ecs
  cluster: {app.cluster}
  region: {REGION}
  endpoint_url: "{app.sim.endpoint_url}"
  services: [{{name: {app.api}, containers: [api]}}, {app.web}]
  check_permissions: false
aws:
  access_key_id: AKIADEPLOYEXAMPLE000
  secret_access_key: "${{DEPLOY_SECRET}}"
  role_arn: "arn:aws:iam::123456789012:role/deploy"
  endpoint_url: "{aws}"
"""
    )
    assert "ecs-block-aws" in apply_environment(load_environment_file(path))
    target = Environment.resolve("ecs-block").target
    assert isinstance(target, EcsTargetSettings)
    assert target.credentials_block == "ecs-block-aws"
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(variable)  # only the block's keys and endpoint remain
    with open_target(target) as t:
        checks = t.preflight().checks
        assert t.current_version() == "v1"
    assert checks[0] == "credentials: arn:aws:sts::123456789012:assumed-role/deploy/slipway"


# -- tasks as real containers: the services answer for real ---------------------------------

HEALTH = {
    "api": "wget -q -O /dev/null http://127.0.0.1:8080/health || exit 1",  # v3 has none
    "web": "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1",
}


@pytest.fixture(scope="module")
def docker_sim(docker_engine: DockerInfo, aws: str) -> Iterator[EcsSimulator]:
    del aws
    build_images(docker_engine.client(), ("v1", "v2", "v3"))
    with EcsSimulator(docker_engine, breaker_threshold=2) as simulator:
        yield simulator
        assert simulator.errors == []


def create_container_app(sim: EcsSimulator) -> tuple[EcsApp, EcsTarget]:
    n = next_name()
    app = EcsApp(sim, f"shop-{n}", f"api-{n}", f"web-{n}", "")
    definitions = {}
    for service, name_ in (("api", app.api), ("web", app.web)):
        definition = task_definition(service, image(service, "v1"))
        definition["containerDefinitions"][0]["healthCheck"] = {
            "command": ["CMD-SHELL", HEALTH[service]],
            "interval": 5,
            "retries": 2,
        }
        definitions[name_] = definition
    sim.create_services(app.cluster, definitions)
    checks = {
        app.api: [
            {
                "kind": "http",
                "url": sim.service_url(app.api, cluster=app.cluster) + "/health",
                "version_field": "version",
                "deadline_seconds": 30,
                "interval_seconds": 0.2,
            }
        ],
        app.web: [{"kind": "http", "url": sim.service_url(app.web, cluster=app.cluster) + "/"}],
    }
    return app, app.target(health_checks=checks, poll_seconds=0.25)


def answering(url: str) -> str:
    return str(httpx.get(url + "/health", timeout=5).json()["version"])


@pytest.mark.docker
def test_v1_then_v2_then_a_breaker_rollback_with_real_tasks(docker_sim: EcsSimulator) -> None:
    app, t = create_container_app(docker_sim)
    api_url = docker_sim.service_url(app.api, cluster=app.cluster)
    with t:
        t.wait_ready("v1")
        assert answering(api_url) == "v1"
        report = t.deploy("v2")
        assert [s.service for s in report.services] == [app.api, app.web]
        assert "version v2" in report.services[0].health.summary()
        assert answering(api_url) == "v2"
        with pytest.raises(RolloutFailed) as failed:
            t.deploy("v3")  # v3's api has no /health: its tasks turn unhealthy
        assert "circuit breaker" in str(failed.value)
        assert "\n" not in str(failed.value)
        assert "Task failed container health checks" in str(failed.value)  # stoppedReason
        t.wait_ready("v2")  # the breaker's rollback completes
        assert t.current_version() == "v2"
        assert answering(api_url) == "v2"
    docker_sim.client().get_waiter("services_stable").wait(
        cluster=app.cluster, services=[app.api], WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
