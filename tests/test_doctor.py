"""`slipway doctor` against real services: a good configuration passes every check, and each
broken part (password, bucket, write permission, Prefect API, notifier token, a host that
never answers, a target's service) fails its own row, with nothing left in the store."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chat_simulators import SlackSimulator, TelegramSimulator
from tests.commands import SLIPWAY, run
from tests.compose_app import build_images
from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database
from tests.release_env import save_release_environment

REPO = Path(__file__).resolve().parent.parent


def doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`slipway doctor ARGS` with exactly this environment; prints how long it took (-s)."""
    started = time.monotonic()
    proc = run([*SLIPWAY, "doctor", *args], env)
    print(f"slipway doctor {' '.join(args)}: {time.monotonic() - started:.1f} s")
    return proc


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment without any Slipway, AWS, PostgreSQL or notifier setting,
    and a Prefect home of its own (no local API runs there)."""
    drop = ("SLIPWAY_", "AWS_", "PG", "SLACK_", "TELEGRAM_", "ADMIN_TELEGRAM", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("PREFECT_API_URL", None)
    return env | {"PREFECT_HOME": str(tmp_path / "prefect-home")}


def rows(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The --json report by check name."""
    return {row["check"]: row for row in json.loads(proc.stdout)}


def statuses(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {name: row["status"] for name, row in rows(proc).items()}


def table_row(proc: subprocess.CompletedProcess[str], check: str) -> str:
    """The table's line for `check`."""
    found = [line for line in proc.stdout.splitlines() if line.startswith(f"{check}  ")]
    assert len(found) == 1, proc.stdout
    return found[0]


def doctor_objects(s3: S3Info, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listed.get("Contents", [])]


@pytest.fixture
def configured(
    postgres: PostgresInfo, s3: S3Info, base_env: dict[str, str]
) -> tuple[dict[str, str], str]:
    """(variables of a good configuration, its bucket), notifiers not included."""
    database = create_database(postgres, sql="")
    bucket = f"doc-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    env = base_env | s3.env()
    env |= {
        "DATABASE_URL": postgres.url_without_password(database),
        "PGPASSWORD": postgres.password,
        "SLIPWAY_BACKUP_URL": f"s3://{bucket}/backups",
    }
    return env, bucket


def with_notifiers(
    env: dict[str, str], slack: SlackSimulator, telegram: TelegramSimulator
) -> dict[str, str]:
    return env | {
        "SLACK_WEBHOOK_URL": slack.webhook_url,
        "TELEGRAM_BOT_TOKEN": telegram.bot_token,
        "ADMIN_TELEGRAM_IDS": ",".join(telegram.chat_ids),
        "TELEGRAM_API_URL": telegram.api_url,
    }


@pytest.mark.postgres
@pytest.mark.s3
def test_a_good_configuration_passes_every_check(
    configured: tuple[dict[str, str], str],
    s3: S3Info,
    slack: SlackSimulator,
    telegram: TelegramSimulator,
) -> None:
    env, bucket = configured
    proc = doctor("--send-test", "--json", env=with_notifiers(env, slack, telegram))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no Prefect log
    home = Path(env["PREFECT_HOME"])
    assert not (home / "prefect.db").exists()  # no temporary or local API server started
    assert not (home / "slipway-api.json").exists()
    assert statuses(proc) == {
        "configuration": "ok",
        "prefect api": "skip",  # not set: nothing to check
        "database": "ok",
        "pg_dump/pg_restore": "ok",
        "backup store": "ok",
        "notifier slack": "ok",
        "notifier telegram": "ok",
        "rollout target": "skip",  # only with --env
        "migrations": "skip",
    }
    assert "PostgreSQL 15" in rows(proc)["database"]["detail"]
    assert "written, read back and deleted" in rows(proc)["backup store"]["detail"]
    assert doctor_objects(s3, bucket) == []
    assert ["Slipway doctor: test message" in m.header() for m in slack.messages] == [True]
    assert len(telegram.messages) == len(telegram.chat_ids)
    for secret in (env["PGPASSWORD"], env["AWS_SECRET_ACCESS_KEY"], slack.webhook_secret):
        assert secret not in proc.stdout


@pytest.mark.postgres
@pytest.mark.s3
def test_without_send_test_no_message_is_sent(
    configured: tuple[dict[str, str], str], slack: SlackSimulator, telegram: TelegramSimulator
) -> None:
    env, _ = configured
    proc = doctor(env=with_notifiers(env, slack, telegram))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "configured" in table_row(proc, "notifier slack")
    assert slack.requests == []
    assert telegram.requests == []


@pytest.mark.postgres
@pytest.mark.s3
def test_each_broken_part_fails_its_own_row(
    configured: tuple[dict[str, str], str],
    s3: S3Info,
    slack: SlackSimulator,
    telegram: TelegramSimulator,
) -> None:
    env, _ = configured
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    missing = f"doc-missing-{secrets.token_hex(3)}"
    wrong_token = f"{TelegramSimulator.BOT_ID}:AA{secrets.token_urlsafe(32)[:33]}"
    broken = with_notifiers(env, slack, telegram) | {
        "PGPASSWORD": "not-the-password",
        "SLIPWAY_BACKUP_URL": f"s3://{missing}/backups",
        "PREFECT_API_URL": f"http://127.0.0.1:{closed.getsockname()[1]}/api",
        "SLACK_WEBHOOK_URL": f"{slack.url}/services/T0/B0/revoked",
        "TELEGRAM_BOT_TOKEN": wrong_token,
    }
    try:
        proc = doctor("--send-test", env=broken)
    finally:
        closed.close()

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert "FAIL" not in table_row(proc, "configuration")
    expected = {
        "database": "rejected the password",
        "backup store": "does not exist",
        "prefect api": "does not answer",
        "notifier slack": "does not accept this webhook",
        "notifier telegram": "rejected the bot token",
    }
    for check, says in expected.items():
        line = table_row(proc, check)
        assert "  FAIL  " in line, line
        assert says in line, line
    assert "not compared" in table_row(proc, "pg_dump/pg_restore")
    assert wrong_token not in proc.stdout
    assert "not-the-password" not in proc.stdout
    assert missing not in [b["Name"] for b in s3.client().list_buckets()["Buckets"]]


@pytest.mark.postgres
@pytest.mark.s3
def test_a_bucket_the_key_cannot_write_fails_and_keeps_nothing(
    configured: tuple[dict[str, str], str], s3: S3Info
) -> None:
    env, bucket = configured
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:PutObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    s3.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    proc = doctor("--json", env=env)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    store = rows(proc)["backup store"]
    assert store["status"] == "FAIL"
    assert "cannot write" in store["detail"]
    assert "s3:PutObject" in store["detail"]
    assert statuses(proc)["database"] == "ok"
    assert doctor_objects(s3, bucket) == []


@pytest.mark.postgres
@pytest.mark.s3
def test_a_host_that_never_answers_fails_after_the_timeout(
    configured: tuple[dict[str, str], str],
) -> None:
    env, _ = configured
    silent = socket.socket()  # accepts connections (backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        port = silent.getsockname()[1]
        proc = doctor(
            "--timeout", "2", env=env | {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}
        )
    finally:
        silent.close()

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no answer within 2 s" in table_row(proc, "backup store")
    assert "  ok  " in table_row(proc, "database")


def test_every_configuration_problem_is_named_at_once(base_env: dict[str, str]) -> None:
    proc = doctor(env=base_env | {"TELEGRAM_BOT_TOKEN": "123:abc"})

    assert proc.returncode == 1
    line = table_row(proc, "configuration")
    for needle in ("DATABASE_URL", "SLIPWAY_BACKUP_URL", "ADMIN_TELEGRAM_IDS"):
        assert needle in line, line
    assert "skip" in table_row(proc, "database")


def test_bad_options_are_one_line(base_env: dict[str, str]) -> None:
    proc = doctor("--env", "Not/A/Name", env=base_env)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("error: environment name")


@pytest.mark.docker
@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.prefect
def test_an_environment_its_target_and_migrations(
    docker_engine: DockerInfo,
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path: Path,
    base_env: dict[str, str],
) -> None:
    from blocks.environment import Environment
    from tasks.rollout import open_target

    client = docker_engine.client()
    build_images(client, versions=("v1",))
    name, app, _, bucket = save_release_environment(tmp_path, postgres, s3)
    env = base_env | {
        "PREFECT_API_URL": prefect_server.api_url,
        "DOCKER_HOST": docker_engine.host,
        "DOCKER_CONFIG": str(docker_engine.docker_config),
    }
    try:
        fresh = doctor("--env", name, "--json", env=env)
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert "nothing deployed yet" in rows(fresh)["rollout target"]["detail"]
        assert statuses(fresh)["migrations"] == "skip"  # its folder is per version

        with open_target(app.settings) as target:
            target.deploy("v1")
        good = doctor("--env", name, "--json", env=env)
        assert good.returncode == 0, good.stdout + good.stderr
        assert good.stderr == ""
        assert statuses(good) == {
            "configuration": "ok",
            "prefect api": "ok",
            "database": "ok",
            "pg_dump/pg_restore": "ok",
            "backup store": "ok",
            "notifiers": "skip",  # the environment has none
            "rollout target": "ok",
            "migrations": "ok",
        }
        assert "live v1" in rows(good)["rollout target"]["detail"]
        assert "1 migrations" in rows(good)["migrations"]["detail"]
        assert doctor_objects(s3, bucket) == []

        app.containers(client)["web"].remove(force=True)
        gone = doctor("--env", name, env=env)
        assert gone.returncode == 1, gone.stdout + gone.stderr
        line = table_row(gone, "rollout target")
        assert "  FAIL  " in line, line
        assert "services web are not deployed" in line, line

        environment = Environment.resolve(name)
        services = [*environment.target.services, "queue"]
        environment.target = environment.target.model_copy(update={"services": services})
        environment.save(name, overwrite=True)
        unknown = doctor("--env", name, env=env)
        assert unknown.returncode == 1, unknown.stdout + unknown.stderr
        line = table_row(unknown, "rollout target")
        assert "  FAIL  " in line, line
        assert "service 'queue' is not in the compose file" in line, line
        assert "skip" in table_row(unknown, "migrations")
    finally:
        app.remove(client)


def test_an_environment_needs_a_prefect_server(base_env: dict[str, str]) -> None:
    proc = doctor("--env", "production", "--json", env=base_env)

    assert proc.returncode == 1
    assert "set PREFECT_API_URL" in rows(proc)["configuration"]["detail"]
    assert statuses(proc)["rollout target"] == "skip"
