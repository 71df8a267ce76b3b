"""Releases to ECS services end to end: the ECS simulator's tasks as real containers of the
demo images, moto's ECR and STS, real PostgreSQL, S3 and Prefect.

One environment goes through the story in order, `slipway release` and `slipway rollback`
run as a user runs them: v1 then v2 with its migration (both services answer v2, and
`slipway status` lists their deployments); v3, whose api fails its container health check,
failed by the deployment circuit breaker, which rolls it back: botocore's `services_stable`
waiter calls that a success, Slipway fails in one line with the reason and both services
are on v2; v2 again registers no new revision, and its success deregisters the revisions
beyond the newest two; a release killed while its api deployment stalls, then `slipway
rollback`; v9, an image in no ECR repository, stopped by preflight before anything changes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from tests.ecs_release_env import (
    SERVICES,
    EcsRelease,
    push_to_moto_ecr,
    save_ecs_release_environment,
)
from tests.ecs_sim import EcsSimulator
from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import wait_until
from tests.harness.s3 import S3Info
from tests.journals import release_record
from tests.release_stage import CliStage

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

ALL_V2 = dict.fromkeys(SERVICES, "v2")


class Stage(CliStage[EcsRelease]):
    def on_v2(self) -> None:
        """Each service's PRIMARY deployment on v2, and its tasks answering v2."""
        assert self.env.primary_versions() == ALL_V2
        wait_until(lambda: self.env.answers() == ALL_V2, timeout=60, what="all answer v2")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def stage(
    docker_engine: DockerInfo,
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    moto_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    from tests.compose_app import build_images

    build_images(docker_engine.client(), ("v1", "v2", "v3"), registry=docker_engine.registry)
    push_to_moto_ecr(moto_url)
    root = tmp_path_factory.mktemp("ecs-release")
    with EcsSimulator(docker_engine, breaker_threshold=2) as sim:
        env = save_ecs_release_environment(root, sim, postgres, s3, moto_url)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
        # No AWS variables: the environment's AwsCredentials block is the only way in.
        cli_env = base | {"PREFECT_API_URL": prefect_server.api_url}
        yield Stage(env, postgres, cli_env)
        assert sim.errors == []


def journal(stage: Stage, release_id: str | None = None) -> Any:
    return release_record(stage.name, release_id)


def test_1_v1_then_v2_with_its_migration_on_both_services(stage: Stage) -> None:
    first = stage.cli("release", "v1", "--env", stage.name)
    assert first.returncode == 0, first.stderr
    assert stage.env.answers() == dict.fromkeys(SERVICES, "v1")

    second = stage.cli("release", "v2", "--env", stage.name)
    assert second.returncode == 0, second.stderr
    assert stage.env.primary_versions() == ALL_V2
    assert stage.env.answers() == ALL_V2
    columns = stage.db()["columns"]
    assert ("public", "items", "price", "integer", "YES", None) in columns
    record = journal(stage)
    assert (record.version, record.status, record.previous_version) == ("v2", "succeeded", "v1")
    assert record.migrations_applied == ["20240201000000_add_price"]
    # What the rollback would put back: each service's task definition before the release.
    assert set(record.target_state) == {stage.env.service(s) for s in SERVICES}

    status = stage.cli("status", "--env", stage.name)
    assert status.returncode == 0, status.stderr
    for service in SERVICES:
        line = next(
            x for x in status.stdout.splitlines() if x.startswith(f"{stage.env.service(service)}: ")
        )
        assert "PRIMARY COMPLETED" in line, status.stdout
        assert "(v2)" in line, status.stdout


def test_2_v3_failed_by_the_circuit_breaker_ends_on_v2_in_one_line(stage: Stage) -> None:
    before = stage.db()
    api = stage.env.service("api")
    line = stage.failed_line("v3")
    assert "circuit breaker" in line, line
    assert "Task failed container health checks" in line, line  # the stopped tasks' reason
    assert "rolled back to v2" in line, line
    stage.on_v2()
    assert stage.db() == before
    assert journal(stage).status == "rolled_back"
    # What Slipway was not fooled by: the waiter AWS users rely on calls this a success.
    stage.env.sim.client().get_waiter("services_stable").wait(
        cluster=stage.env.cluster, services=[api], WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    failed = [d for d in stage.env.described("api")["deployments"] if d["status"] == "PRIMARY"]
    assert failed[0]["rolloutState"] == "COMPLETED"  # v2's, the breaker's rollback


def test_3_v2_again_registers_nothing_and_prunes_to_the_newest_two(stage: Stage) -> None:
    # api: v1 (revision 1), v2 (2) and v3 (3) registered, the failed v3 pruned nothing;
    # web: v1 and v2 only (v3 failed at api, before web).
    assert stage.env.revisions("api") == [1, 2, 3]
    again = stage.cli("release", "v2", "--env", stage.name)
    assert again.returncode == 0, again.stderr
    stage.on_v2()
    # v2's revision reused; the success kept the newest two (3 and v2's 2, in use).
    assert stage.env.revisions("api") == [2, 3]
    assert stage.env.revisions("api", "INACTIVE") == [1]
    assert stage.env.revisions("web") == [1, 2]


def test_4_a_killed_release_then_rollback_both_services_on_v2(stage: Stage) -> None:
    stage.env.sim.stall_image("api:v3")  # its tasks stay PENDING: the rollout never ends
    proc = stage.start("release", "v3", "--env", stage.name)
    try:
        wait_until(
            lambda: len(stage.env.described("api")["deployments"]) == 2,
            timeout=180,
            what="api's v3 deployment started",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stage.env.sim.stalling.discard("api:v3")
    assert stage.env.primary_versions()["api"] == "v3"
    record = journal(stage)
    assert (record.version, record.status) == ("v3", "running")

    back = stage.cli("rollback", "--env", stage.name, "--yes")
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == f"{stage.name} back on v2; database kept"
    stage.on_v2()
    assert journal(stage, record.id).status == "rolled_back"


def test_5_an_image_in_no_repository_stops_the_release_before_anything_changes(
    stage: Stage,
) -> None:
    before = stage.db()
    revisions = stage.env.revisions("api")
    line = stage.failed_line("v9")
    assert line.startswith("error: "), line
    assert "slipway-demo/api:v9" in line, line
    assert "not found in ECR" in line, line
    stage.on_v2()
    assert stage.db() == before
    assert stage.env.revisions("api") == revisions


def test_6_the_credentials_never_reach_the_store(stage: Stage) -> None:
    from blocks.object_storage import ObjectStorage

    store = ObjectStorage.resolve(f"{stage.name}-store")
    client = store.client()
    listed = client.list_objects_v2(Bucket=store.bucket)
    for item in listed.get("Contents", []):
        body = client.get_object(Bucket=store.bucket, Key=item["Key"])["Body"].read()
        assert b"moto-secret" not in body, item["Key"]
