"""Releases to Kubernetes Deployments end to end: the API simulator's pods as real containers
of the demo images (harness registry), real PostgreSQL, S3 and Prefect.

One environment goes through the story in order, `slipway release` and `slipway rollback`
run as a user runs them: v1 then v2 with its migration (every Deployment answers v2); v3
whose api never gets ready, so its rollout stalls until the progress deadline (back on v2's
own ReplicaSets); v4 whose second migration fails (v2, the database restored row for row);
a release killed mid-way, then `slipway rollback`; v5 whose api crash-loops (the one-line
error names CrashLoopBackOff and the exit code).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import wait_until
from tests.harness.s3 import S3Info
from tests.journals import release_record, release_records
from tests.k8s_sim import KubeSimulator
from tests.kube_app import SERVICES
from tests.kube_release_env import (
    CRASH_CODE,
    CRASHING,
    KubeRelease,
    build_crashing_version,
    save_kube_release_environment,
)
from tests.release_stage import CliStage

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent
ALL_V2 = dict.fromkeys(SERVICES, "v2")


class Stage(CliStage[KubeRelease]):
    def on_v2(self) -> None:
        """Every template on v2, every Deployment's pods answering v2."""
        assert self.env.templates() == ALL_V2
        wait_until(lambda: self.env.answers() == ALL_V2, timeout=30, what="all answer v2")


@pytest.fixture(scope="module")
def stage(
    docker_engine: DockerInfo,
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    from tests.compose_app import build_images

    client = docker_engine.client()
    build_images(client, registry=docker_engine.registry)
    build_crashing_version(client, docker_engine.registry)
    root = tmp_path_factory.mktemp("kube-release")
    # A slower crash-loop backoff than the default: fewer restarts within the progress
    # deadline, so fewer moments where the crashing pod shows "running", not its reason.
    with KubeSimulator(docker_engine.host, backoff_base=2.0, backoff_cap=10.0) as sim:
        env = save_kube_release_environment(root, sim, postgres, s3, docker_engine.registry)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
        # The engine preflight asks whether each new image is in the registry.
        cli_env = base | {
            "PREFECT_API_URL": prefect_server.api_url,
            "DOCKER_HOST": docker_engine.host,
        }
        yield Stage(env, postgres, cli_env)
        assert sim.errors == []


def journal(stage: Stage, release_id: str | None = None) -> Any:
    return release_record(stage.name, release_id)


def test_1_v1_then_v2_with_its_migration_on_the_three_deployments(stage: Stage) -> None:
    first = stage.cli("release", "v1", "--env", stage.name)
    assert first.returncode == 0, first.stderr
    assert stage.env.answers() == dict.fromkeys(SERVICES, "v1")

    second = stage.cli("release", "v2", "--env", stage.name)
    assert second.returncode == 0, second.stderr
    assert stage.env.templates() == ALL_V2
    assert stage.env.answers() == ALL_V2
    columns = stage.db()["columns"]
    assert ("public", "items", "price", "integer", "YES", None) in columns
    record = journal(stage)
    assert (record.version, record.status, record.previous_version) == ("v2", "succeeded", "v1")
    assert record.migrations_applied == ["20240201000000_add_price"]
    rollout = next(s for s in record.steps if s.name == "rollout")
    assert rollout.status == "succeeded"
    # In order, each Deployment's own rollout waited for (then its Service's check).
    found = [rollout.detail.find(f"{s}: rollout {s}: rolled out") for s in SERVICES]
    assert -1 not in found, rollout.detail
    assert found == sorted(found), rollout.detail


def test_2_v3_stalls_until_its_progress_deadline_and_v2_stays(stage: Stage) -> None:
    v2_sets = stage.env.live_replica_sets()
    assert all(len(names) == 1 for names in v2_sets.values()), v2_sets
    before = stage.db()
    line = stage.failed_line("v3")
    assert "failed at api" in line, line
    assert "deployment api exceeded its progress deadline" in line, line
    assert "rolled back to v2" in line, line
    stage.on_v2()
    # The rollback brought v2's own ReplicaSets back: no new ones, v3's scaled to zero.
    wait_until(lambda: stage.env.live_replica_sets() == v2_sets, timeout=30, what="v2's sets")
    assert stage.db() == before
    record = journal(stage)
    assert (record.version, record.status) == ("v3", "rolled_back")


def test_3_v4_whose_migration_fails_ends_on_v2_with_the_database_restored(stage: Stage) -> None:
    with psycopg.connect(stage.pg.url(stage.env.database), autocommit=True) as conn:
        conn.execute("INSERT INTO items (name, price) VALUES ('kept', 42)")
    before = stage.db()
    line = stage.failed_line("v4")
    assert "20240401000000_broken" in line, line
    assert "no_such_table" in line, line
    assert "rolled back to v2; database restored" in line, line
    stage.on_v2()
    # v4's first migration had applied: the restore took it back, row for row.
    assert stage.db() == before
    record = journal(stage)
    assert record.status == "rolled_back"
    assert record.rollback is not None
    assert record.rollback.database_restored


def test_4_a_killed_release_then_rollback_every_deployment_on_v2(stage: Stage) -> None:
    proc = stage.start("release", "v3", "--env", stage.name)
    try:
        # Killed as soon as api's template is v3: its rollout is stalled, the rest on v2.
        wait_until(lambda: stage.env.template("api") == "v3", timeout=120, what="api on v3")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert stage.env.template("api") == "v3"
    record = journal(stage)
    assert (record.version, record.status) == ("v3", "running")

    back = stage.cli("rollback", "--env", stage.name, "--yes")
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == f"{stage.name} back on v2; database kept"
    stage.on_v2()
    assert journal(stage, record.id).status == "rolled_back"


def test_5_a_crash_looping_pod_is_named_with_its_exit_code(stage: Stage) -> None:
    line = stage.failed_line(CRASHING)
    assert "failed at api" in line, line
    assert "CrashLoopBackOff" in line, line
    assert f"last exit {CRASH_CODE}" in line, line
    assert "rolled back to v2" in line, line
    stage.on_v2()


def test_6_an_image_never_pushed_stops_the_release_before_anything_changes(stage: Stage) -> None:
    before = stage.db()
    releases = len(release_records(stage.name))
    line = stage.failed_line("v9")
    assert line.startswith("error: "), line
    assert "/slipway-demo/api:v9" in line, line
    assert "is in no registry: push it" in line, line
    assert stage.env.templates() == ALL_V2
    assert stage.db() == before
    assert len(release_records(stage.name)) == releases  # preflight: no release was started
