"""prefect.yaml end to end: `prefect deploy --all`, runs through the worker, notifications
received by the Slack and Telegram simulators, a restore that waits for approval, and
releases of the demo app started from the release deployment as a person would.

The environments `production` and `staging` that prefect.yaml names are written with
`slipway env apply` against this session's PostgreSQL and S3 servers.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.chat_simulators import SlackSimulator, TelegramSimulator
from tests.compose_app import build_images
from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import wait_until
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database
from tests.release_env import save_release_environment

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent


def env_file(
    path: Path, name: str, database_url: str, bucket: str, s3: S3Info, policy: str = ""
) -> Path:
    path.write_text(
        f"""
name: {name}
database: {{url: "{database_url}", password: "${{TEST_DB_PASSWORD}}"}}
store:
  url: s3://{bucket}/backups
  endpoint_url: {s3.endpoint_url}
  region: {s3.region}
  access_key_id: {s3.access_key}
  secret_access_key: "${{TEST_S3_SECRET}}"
target: {{project_directory: {path.parent}}}
policy: {{{policy}}}
notifiers:
  slack: {{webhook_url: "${{TEST_SLACK_WEBHOOK}}"}}
  telegram: {{bot_token: "${{TEST_TELEGRAM_TOKEN}}", chat_ids: "111111111,222222222",
             api_url: "${{TEST_TELEGRAM_API}}"}}
"""
    )
    return path


@pytest.fixture(scope="module")
def chat() -> Iterator[tuple[SlackSimulator, TelegramSimulator]]:
    with SlackSimulator() as slack, TelegramSimulator() as telegram:
        yield slack, telegram


@pytest.fixture(scope="module")
def deployed(
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    chat: tuple[SlackSimulator, TelegramSimulator],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Both environments applied from YAML, then every deployment of prefect.yaml."""
    slack, telegram = chat
    workdir = tmp_path_factory.mktemp("envs")
    bucket = f"deploy-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    database = create_database(postgres)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
    env |= {
        "PREFECT_API_URL": prefect_server.api_url,
        "TEST_DB_PASSWORD": postgres.password,
        "TEST_S3_SECRET": s3.secret_key,
        "TEST_SLACK_WEBHOOK": slack.webhook_url,
        "TEST_TELEGRAM_TOKEN": telegram.bot_token,
        "TEST_TELEGRAM_API": telegram.api_url,
    }
    production = env_file(
        workdir / "production.yaml",
        "production",
        postgres.url_without_password(database),
        bucket,
        s3,
        "approve_restore: true",
    )
    # staging's role does not exist: its nightly backup fails on the password.
    staging = env_file(
        workdir / "staging.yaml",
        "staging",
        f"postgresql://nobody@{postgres.host}:{postgres.port}/{database}",
        bucket,
        s3,
    )
    for path in (production, staging):
        applied = subprocess.run(
            [sys.executable, "-m", "deployments.cli", "env", "apply", str(path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert applied.returncode == 0, applied.stderr
    # prefect.yaml as it is, but on the harness's pool (its worker runs the flows).
    text = (REPO / "prefect.yaml").read_text()
    assert "  work_pool: &pool\n    name: slipway\n" in text
    prefect_file = workdir / "prefect.yaml"
    prefect_file.write_text(
        text.replace("    name: slipway\n", f"    name: {prefect_server.work_pool}\n", 1)
    )
    deploy = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(prefect_file),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    return {"database": database, "bucket": bucket, "deploy_output": deploy.stdout}


def deployments() -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    return {f"{flows[d.flow_id]}/{d.name}": d for d in found}


def arrived(what: Callable[[], bool]) -> None:
    """State hooks run once the final state is recorded: give the messages time to land."""
    wait_until(what, timeout=60, what="notifications", interval=0.3)


def run(name: str, parameters: dict[str, Any] | None = None, timeout: float = 240) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters or {}, timeout=timeout, poll_interval=1)


def test_deploy_all_creates_each_deployment(
    deployed: dict[str, Any], prefect_server: PrefectInfo
) -> None:
    found = deployments()
    for env in ("production", "staging"):
        for flow_name in ("nightly-backup", "restore-database", "release", "rollback"):
            deployment = found[f"{flow_name}/{env}"]
            assert deployment.work_pool_name == prefect_server.work_pool
            assert deployment.parameters == {"env": env}
    release = found["release/production"]
    assert release.global_concurrency_limit is not None
    assert release.global_concurrency_limit.limit == 1
    assert release.concurrency_options is not None
    assert release.concurrency_options.collision_strategy == "ENQUEUE"
    assert "version" in release.parameter_openapi_schema["required"]
    assert "image tag" in release.parameter_openapi_schema["properties"]["version"]["description"]
    nightly = found["nightly-backup/production"]
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "Europe/Paris"


def test_nightly_backup_runs_on_worker_and_notifies(
    deployed: dict[str, Any], chat: tuple[SlackSimulator, TelegramSimulator], s3: S3Info
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    slack, telegram = chat
    slack_before, telegram_before = len(slack.messages), len(telegram.messages)
    flow_run = run("nightly-backup/production")
    assert flow_run.state.is_completed(), flow_run.state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    assert "nightly-report" in {a.key for a in artifacts}
    keys = [
        o["Key"] for o in s3.client().list_objects_v2(Bucket=deployed["bucket"]).get("Contents", [])
    ]
    manifests = [k for k in keys if k.endswith("/manifest.json")]
    assert len(manifests) == 1, keys
    backup_id = manifests[0].split("/")[-2]

    arrived(lambda: len(slack.messages) > slack_before)
    arrived(lambda: len(telegram.messages) >= telegram_before + 2)
    (message,) = slack.messages[slack_before:]
    text = message.visible_text()
    assert "nightly-backup succeeded on production" in message.header()
    assert backup_id in text
    assert flow_run.name in text
    assert any(str(flow_run.id) in link for link in message.links())
    sent = telegram.messages[telegram_before:]
    assert sorted(m.chat_id for m in sent) == ["111111111", "222222222"]
    assert all("nightly-backup succeeded on production" in m.text for m in sent)
    assert all(backup_id in m.text for m in sent)


def test_failed_run_notifies_and_a_failing_notifier_changes_nothing(
    deployed: dict[str, Any], chat: tuple[SlackSimulator, TelegramSimulator]
) -> None:
    slack, telegram = chat
    telegram_before = len(telegram.messages)
    slack_requests = len(slack.requests)
    slack.fail_next(100, 500)  # Slack is down for this whole run
    flow_run = run("nightly-backup/staging")
    assert flow_run.state.is_failed(), flow_run.state
    arrived(lambda: len(telegram.messages) >= telegram_before + 2)
    slack.clear_faults()
    # The run's own error, not the notifier's.
    assert "nobody" in (flow_run.state.message or ""), flow_run.state.message
    assert len(slack.requests) > slack_requests  # it tried, and was retried
    assert all(r.status == 500 for r in slack.requests[slack_requests:])
    sent = telegram.messages[telegram_before:]
    assert len(sent) == 2
    for message in sent:
        assert "nightly-backup FAILED on staging" in message.text
        assert "Failed step" in message.text
        assert "nobody" in message.text


def test_restore_waits_for_approval(
    deployed: dict[str, Any], postgres: PostgresInfo, prefect_server: PrefectInfo
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    database = deployed["database"]
    with psycopg.connect(postgres.url(database), autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM app.users").fetchone()
        conn.execute("INSERT INTO app.users (email) VALUES ('after-backup@example.com')")
    flow_run = run("restore-database/production", {"backup": "latest", "yes": True}, timeout=0)
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 120
        while True:
            state = client.read_flow_run(flow_run.id).state
            assert state is not None
            if state.is_paused():
                break
            assert not state.is_final(), state
            assert time.monotonic() < deadline, f"never paused: {state}"
            time.sleep(1)
        # Paused: nothing restored yet.
        with psycopg.connect(postgres.url(database)) as conn:
            row = conn.execute("SELECT count(*) FROM app.users").fetchone()
        assert row is not None
        assert before is not None
        assert row[0] == before[0] + 1
        resume_flow_run(flow_run.id, run_input={"approve": True, "reason": "test"})
        while True:
            state = client.read_flow_run(flow_run.id).state
            assert state is not None
            if state.is_final():
                break
            assert time.monotonic() < deadline + 120, f"never finished: {state}"
            time.sleep(1)
    assert state.is_completed(), state
    with psycopg.connect(postgres.url(database)) as conn:
        after = conn.execute("SELECT count(*) FROM app.users").fetchone()
    assert after == before


@pytest.mark.docker
def test_release_deployment_runs_on_worker(
    deployed: dict[str, Any],
    postgres: PostgresInfo,
    s3: S3Info,
    docker_engine: DockerInfo,
    tmp_path: Path,
) -> None:
    """What a person does in the UI: run release/production and type a version. The `env`
    parameter, overridden as the UI allows, names the demo app's environment."""
    import httpx

    client = docker_engine.client()
    build_images(client)
    name, app, _, _ = save_release_environment(
        tmp_path, postgres, s3, docker_host=docker_engine.host
    )
    try:
        for version in ("v1", "v2"):
            flow_run = run("release/production", {"version": version, "env": name}, timeout=300)
            assert flow_run.state.is_completed(), flow_run.state
            assert flow_run.parameters == {"version": version, "env": name}
            running = app.running_versions(client)
            assert running == {"api": version, "worker": version, "web": version}
            health = httpx.get(app.api_health_url, timeout=5).json()
            assert health["version"] == version
    finally:
        app.remove(client)
