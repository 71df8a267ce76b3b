"""Bad input is refused before anything moves.

4. `--env 'x/../NAME'` used to load NAME's block under another lock.
5. `rollback --to VERSION` used to stop the app and restore the database before the
   redeploy failed on a version that cannot be an image tag.
6. A password inside a database URL on the command line is visible in `ps`.

Real PostgreSQL, S3 and Prefect server; no Docker engine: DOCKER_HOST points nowhere, so
anything that would reach the app's containers fails, and the tests show nothing got there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database, snapshot
from tests.release_env import save_release_environment

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parents[2]
NO_DOCKER = "unix:///nonexistent/slipway-test-docker.sock"


@dataclass
class Stage:
    name: str
    database: str
    postgres: PostgresInfo
    env: dict[str, str]

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deployments.cli", *args],
            cwd=REPO,
            env=self.env | extra,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def store(self) -> Any:
        from blocks.object_storage import ObjectStorage

        return ObjectStorage.resolve(f"{self.name}-store")

    def db(self) -> Any:
        from blocks.postgres import PostgresDatabase

        return PostgresDatabase.resolve(f"{self.name}-database")


@pytest.fixture(scope="module")
def stage(
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Stage:
    root = tmp_path_factory.mktemp("cli-input")
    name, _app, database, _bucket = save_release_environment(root, postgres, s3)
    with psycopg.connect(postgres.url(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders SELECT g, 'row ' || g FROM generate_series(1, 50) g")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
    env = base | {
        "PREFECT_API_URL": prefect_server.api_url,
        "DOCKER_HOST": NO_DOCKER,
        "PGPASSWORD": postgres.password,
    }
    return Stage(name, database, postgres, env)


def one_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- 4. the environment's name -----------------------------------------------------------


def test_env_name_with_a_path_cannot_load_a_locked_environment(stage: Stage) -> None:
    from tasks.release.lock import deploy_lock, lock_holder

    sneaky = f"x/../{stage.name}"
    with deploy_lock(stage.db(), stage.name, "the test's own release"):
        # `unlock` used to load the block and free another lock ("... was not locked").
        for args in (
            ("unlock", "--env", sneaky),
            ("status", "--env", sneaky),
            ("release", "v2", "--env", sneaky),
            ("rollback", "--env", sneaky, "--to", "v1", "--yes"),
        ):
            one_error(stage.cli(*args), repr(sneaky), "lowercase letters, digits and dashes")
            holder = lock_holder(stage.db(), stage.name)
            assert holder is not None
            assert holder.holder == "the test's own release"
    from tasks.release.journal import list_releases

    store = stage.store()
    assert list_releases(store.client(), store, stage.name) == []


@pytest.mark.parametrize("name", ["x/../{name}", "{name}/", "{NAME}", "{name}%2F", " {name}"])
def test_environment_block_loads_by_its_own_name_only(stage: Stage, name: str) -> None:
    """Runs started from a deployment or the UI pass the name to the flows as it is."""
    from blocks.environment import Environment
    from blocks.errors import ConfigError

    spelled = name.format(name=stage.name, NAME=stage.name.upper())
    with pytest.raises(ConfigError, match="lowercase letters, digits and dashes"):
        Environment.resolve(spelled)
    assert Environment.resolve(stage.name).block_name == stage.name


def test_the_release_flow_refuses_another_spelling_under_its_lock(stage: Stage) -> None:
    from blocks.errors import ConfigError
    from flows.release import release
    from tasks.release.lock import deploy_lock, lock_holder

    with deploy_lock(stage.db(), stage.name, "the test's own release"):
        with pytest.raises(ConfigError, match="not a block name"):
            release("v2", f"x/../{stage.name}")
        holder = lock_holder(stage.db(), stage.name)
        assert holder is not None
        assert holder.holder == "the test's own release"


# --- 5. rollback --to ----------------------------------------------------------------------


def failed_release(stage: Stage) -> Any:
    """A journal the rollback would act on: migrations ran with the app stopped, so a
    rollback would stop the app and restore the pre-release backup."""
    from tasks.postgres.catalog import utcnow
    from tasks.release.journal import Journal, StepRecord

    store = stage.store()
    journal = Journal.start(store.client(), store, stage.name, "v3")
    record = journal.record
    now = utcnow()
    record.previous_version = "v2"
    record.backup_id = "20260101T000000Z"
    record.app_stopped = True
    record.steps = [
        StepRecord(name=n, status="succeeded", started_at=now, finished_at=now)
        for n in ("backup", "stop", "migrate")
    ]
    journal.finish("failed", "health check failed")
    return journal


@pytest.mark.parametrize("bad", ["v2 final", "-v2", "v2;rm", "x" * 129])
def test_rollback_to_a_bad_version_touches_nothing(stage: Stage, bad: str) -> None:
    journal = failed_release(stage)
    saved = journal.reload().record.model_dump()
    rows = snapshot(stage.postgres, stage.database)

    proc = stage.cli("rollback", "--env", stage.name, "--to", bad, "--yes")
    one_error(proc, "--to version", "cannot be an image tag")

    from flows.rollback import rollback

    # A run from the rollback deployment (or the UI) gets the same check, in the flow.
    with pytest.raises(Exception, match="cannot be an image tag"):
        rollback(env=stage.name, to_version=bad, yes=True)

    assert journal.reload().record.model_dump() == saved  # no rollback was even started
    assert snapshot(stage.postgres, stage.database) == rows


# --- 6. a password in a database URL -------------------------------------------------------


def test_password_in_the_restore_target_url_is_refused(stage: Stage, s3: S3Info) -> None:
    target = create_database(
        stage.postgres, sql="CREATE TABLE kept (id int); INSERT INTO kept VALUES (1);"
    )
    before = snapshot(stage.postgres, target)
    url = stage.postgres.url(target)  # user:password@host
    proc = stage.cli(
        "restore",
        "latest",
        "--target-database-url",
        url,
        "--yes",
        SLIPWAY_BACKUP_URL=f"s3://{stage.name}/nowhere",
        **s3.env(),
    )
    line = one_error(proc, "--target-database-url holds a password", "PGPASSWORD")
    assert stage.postgres.password not in line
    assert snapshot(stage.postgres, target) == before


def test_password_in_the_migrate_database_url_is_refused(stage: Stage, tmp_path: Path) -> None:
    folder = tmp_path / "migrations" / "20260101000000_init"
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text("CREATE TABLE made_by_migrate (id int);\n")
    target = create_database(stage.postgres, sql="")
    for command in ("deploy", "status"):
        proc = stage.cli(
            "migrate",
            command,
            "--migrations",
            str(tmp_path / "migrations"),
            "--database-url",
            stage.postgres.url(target),
        )
        line = one_error(proc, "--database-url holds a password", "PGPASSWORD")
        assert stage.postgres.password not in line
    assert snapshot(stage.postgres, target)["rows"] == {}
