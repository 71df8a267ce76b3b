"""Releases of the three-service compose app end to end: real Docker, PostgreSQL, S3, Prefect.

One environment goes through the release story in order: v1, then v2 with a migration
(succeeds), v3 whose health endpoint fails (back on v2, database untouched), v4 whose
second migration fails after its first applied (back on v2, database restored), a release
killed mid-way then `slipway rollback`, two releases at once, and a database rollback that
waits for a person (`database_rollback: ask`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.compose_app import ComposeApp, build_images
from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import wait_until
from tests.harness.s3 import S3Info
from tests.journals import release_record
from tests.pg_fixtures import snapshot
from tests.release_env import save_release_environment

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Stage:
    name: str
    app: ComposeApp
    database: str
    bucket: str
    pg: PostgresInfo
    s3: S3Info
    docker: DockerInfo
    cli_env: dict[str, str]

    def versions(self) -> dict[str, str]:
        """The image tag each service's container runs, read from the engine."""
        return self.app.running_versions(self.docker.client())

    def api_version(self) -> str:
        return str(httpx.get(self.app.api_health_url, timeout=5).json()["version"])

    def web_says(self) -> str:
        return httpx.get(self.app.web_url, timeout=5).text

    def db(self) -> dict[str, Any]:
        return snapshot(self.pg, self.database)

    def start(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """`slipway ARGS` in the background."""
        return subprocess.Popen(
            [sys.executable, "-m", "deployments.cli", *args],
            cwd=REPO,
            env=self.cli_env,
            text=True,
            **popen,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deployments.cli", *args],
            cwd=REPO,
            env=self.cli_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def stage(
    docker_engine: DockerInfo,
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    client = docker_engine.client()
    build_images(client, registry=docker_engine.registry)
    root = tmp_path_factory.mktemp("release")
    # v3's failing health gate waits this long before the rollback starts.
    name, app, database, bucket = save_release_environment(
        root, postgres, s3, health_deadline=8.0, registry=docker_engine.registry
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
    cli_env = base | {"PREFECT_API_URL": prefect_server.api_url, "DOCKER_HOST": docker_engine.host}
    yield Stage(name, app, database, bucket, postgres, s3, docker_engine, cli_env)
    app.remove(client)


def release(stage: Stage, version: str, **kwargs: Any) -> dict[str, Any]:
    from flows.release import release as release_flow

    result: dict[str, Any] = release_flow(version, stage.name, **kwargs)
    return result


def journal(stage: Stage, release_id: str | None = None) -> Any:
    return release_record(stage.name, release_id)


def test_1_first_release_and_v2_with_a_migration(stage: Stage) -> None:
    first = release(stage, "v1", skip_checks=["disk"])
    assert first["previous_version"] is None
    assert first["skipped_checks"] == ["disk"]
    assert stage.versions() == {"api": "v1", "worker": "v1", "web": "v1"}

    second = release(stage, "v2")
    assert second["status"] == "succeeded"
    assert second["previous_version"] == "v1"
    assert second["migrations_applied"] == ["20240201000000_add_price"]
    assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}
    assert stage.api_version() == "v2"
    assert "v2" in stage.web_says()
    db = stage.db()
    assert ("public", "items", "price", "integer", "YES", None) in db["columns"]
    # The pre-release backup is tagged with the release and holds the database before it.
    record = journal(stage)
    assert record.backup_id
    assert [s.name for s in record.steps] == ["backup", "stop", "migrate", "rollout", "health"]
    assert all(s.status == "succeeded" for s in record.steps)


def test_2_dry_run_lists_pending_sql_and_changes_nothing(stage: Stage) -> None:
    before = stage.db()
    plan = stage.cli("release", "v4", "--env", stage.name, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert '"pending_migrations": ["20240301000000_add_stock", "20240401000000_broken"]' in (
        plan.stdout
    )
    assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}
    assert stage.db() == before

    releases_before = journal(stage).id
    missing = stage.cli("release", "v9", "--env", stage.name)
    assert missing.returncode == 1
    (line,) = missing.stderr.strip().splitlines()
    assert line.startswith("error: preflight of v9 failed, nothing changed: target: ")
    # Not in the registry: refused in one line, before anything stops.
    assert f"{stage.docker.registry}/slipway-demo/api:v9 (not local, pull failed" in line
    bad_tag = stage.cli("release", "v9;rm -rf /", "--env", stage.name)
    assert bad_tag.returncode == 1
    assert "cannot be an image tag" in bad_tag.stderr
    assert journal(stage).id == releases_before  # no release was started
    assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}
    assert stage.db() == before


def test_3_failing_health_ends_on_v2_with_the_database_as_before(stage: Stage) -> None:
    from flows.release import ReleaseFailed

    before = stage.db()
    with pytest.raises(ReleaseFailed, match=r"release v3 .* failed: .*rolled back to v2"):
        release(stage, "v3")
    assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}
    assert stage.api_version() == "v2"
    assert stage.db() == before
    record = journal(stage)
    assert record.version == "v3"
    assert record.status == "rolled_back"
    assert record.rollback is not None
    assert record.rollback.status == "succeeded"
    assert record.rollback.to_version == "v2"
    assert not record.rollback.database_restored
    assert record.rollback.metrics is not None
    assert record.rollback.metrics.event == "rollback_success"


def test_4_failing_migration_ends_on_v2_with_the_database_restored(stage: Stage) -> None:
    from flows.release import ReleaseFailed

    with psycopg.connect(stage.pg.url(stage.database), autocommit=True) as conn:
        conn.execute("INSERT INTO items (name, price) VALUES ('kept', 42)")
    before = stage.db()
    with pytest.raises(ReleaseFailed) as failed:
        release(stage, "v4")
    message = str(failed.value)
    assert "20240401000000_broken" in message
    assert "no_such_table" in message
    assert "rolled back to v2; database restored" in message
    assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}
    assert stage.api_version() == "v2"
    # v4's first migration had applied: the restore took it back, row for row.
    assert stage.db() == before
    record = journal(stage)
    assert record.status == "rolled_back"
    assert record.rollback is not None
    assert record.rollback.database_restored


def test_5_killed_release_then_rollback_gives_v2(stage: Stage) -> None:
    proc = stage.start(
        "release",
        "v3",
        "--env",
        stage.name,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # Killed as soon as the api runs v3: the environment is between versions.
        wait_until(lambda: stage.versions().get("api") == "v3", timeout=120, what="api on v3")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert stage.versions()["api"] == "v3"
    record = journal(stage)
    assert (record.version, record.status) == ("v3", "running")

    status = stage.cli("status", "--env", stage.name)
    assert status.returncode == 0, status.stderr
    assert f"unfinished: {record.id}" in status.stdout

    back = stage.cli("rollback", "--env", stage.name, "--yes")
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == f"{stage.name} back on v2; database kept"
    assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}
    assert stage.api_version() == "v2"
    assert journal(stage, record.id).status == "rolled_back"


def test_6_two_releases_at_once_one_is_refused(stage: Stage) -> None:
    from blocks.postgres import PostgresDatabase
    from tasks.postgres import connection as pg
    from tasks.release.lock import lock_holder

    db = PostgresDatabase.resolve(f"{stage.name}-database")
    # The first release holds its lock until this test lets it go: its preflight reads
    # _prisma_migrations, which this transaction locks meanwhile.
    blocker = pg.connect(db)
    try:
        blocker.execute('LOCK TABLE "_prisma_migrations" IN ACCESS EXCLUSIVE MODE')
        first = stage.start(
            "release", "v2", "--env", stage.name, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        wait_until(lambda: lock_holder(db, stage.name) is not None, timeout=120, what="lock")
        second = stage.cli("release", "v2", "--env", stage.name)
    finally:
        blocker.rollback()
        blocker.close()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 1
    assert second.stderr.startswith(f"error: environment {stage.name!r} is busy: 'release v2")
    assert "slipway unlock" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert lock_holder(db, stage.name) is None
    assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}


def set_policy(stage: Stage, **changes: Any) -> None:
    from blocks.environment import Environment

    environment = Environment.resolve(stage.name)
    environment.policy = environment.policy.model_copy(update=changes)
    environment.save(stage.name, overwrite=True)


def paused_rollback(stage: Stage, timeout: float = 180) -> Any:
    """The rollback run of this stage that waits for approval."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    found: list[Any] = []

    def waiting() -> bool:
        with get_client(sync_client=True) as client:
            found[:] = [
                r
                for r in client.read_flow_runs(flow_run_filter=paused)
                if r.parameters.get("env") == stage.name
            ]
        return bool(found)

    wait_until(waiting, timeout=timeout, what="a paused rollback")
    return found[0]


def has_stock_column(stage: Stage) -> bool:
    with psycopg.connect(stage.pg.url(stage.database)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'items' AND column_name = 'stock'"
        ).fetchone()
    return bool(row and row[0])


def test_7_database_rollback_ask_waits_for_a_person(stage: Stage) -> None:
    """Runs last: the unanswered case leaves v4's failed migration in the database."""
    from prefect.flow_runs import resume_flow_run

    before = stage.db()
    assert not has_stock_column(stage)
    set_policy(stage, database_rollback="ask", approval_timeout_minutes=5)
    try:
        # Approved: v4 fails as in test 4, and the restore waits for a person's yes.
        proc = stage.start(
            "release", "v4", "--env", stage.name, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        waiting = paused_rollback(stage)
        assert has_stock_column(stage), "paused: v4's first migration is still there"
        resume_flow_run(waiting.id, run_input={"approve": True, "reason": "test says yes"})
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        assert "rolled back to v2; database restored" in err
        assert stage.db() == before

        # Nobody answers: that is a refusal. v2 comes back on the database as v4 left it.
        set_policy(stage, approval_timeout_minutes=0.1)
        failed = stage.cli("release", "v4", "--env", stage.name)
        assert failed.returncode == 1
        message = failed.stderr.strip()
        assert len(message.splitlines()) == 1
        assert "rolled back to v2; database NOT restored: restore of backup" in message
        assert "refused (no answer within 0.1 min)" in message
        assert stage.versions() == {"api": "v2", "worker": "v2", "web": "v2"}
        assert stage.api_version() == "v2"
        assert has_stock_column(stage)
        record = journal(stage)
        assert record.status == "rolled_back"
        assert record.rollback is not None
        assert not record.rollback.database_restored
        skipped = next(s for s in record.rollback.steps if s.name == "restore-database")
        assert skipped.status == "skipped"
        assert "no answer within 0.1 min" in (skipped.detail or "")
    finally:
        set_policy(stage, database_rollback="restore", approval_timeout_minutes=60)


def test_8_a_manual_rollback_waits_for_approval_and_a_no_changes_nothing(stage: Stage) -> None:
    from prefect.flow_runs import resume_flow_run

    versions, releases, data = stage.versions(), journal(stage), stage.db()
    set_policy(stage, approve_rollback=True)
    try:
        proc = stage.start(
            "rollback", "--env", stage.name, "--yes", stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        waiting = paused_rollback(stage)
        resume_flow_run(waiting.id, run_input={"approve": False, "reason": "not tonight"})
        _, err = proc.communicate(timeout=300)
    finally:
        set_policy(stage, approve_rollback=False)
    assert proc.returncode == 1
    assert err.strip() == f"error: roll back {stage.name}: not approved (not tonight)"
    assert stage.versions() == versions
    assert journal(stage) == releases
    assert stage.db() == data
