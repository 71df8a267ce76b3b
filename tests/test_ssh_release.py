"""Releases to three real SSH hosts end to end: sshd, PostgreSQL, S3 and Prefect all real.

The environment is written by `slipway env apply` from YAML, its private key in the
`<name>-ssh` block. In order: v1, then v2 with a Prisma migration (every host answers v2);
v3 unhealthy on host 2 (all three end on v2); a host that stops answering during v4 (the
others go back, one line names the host, the journal names the hosts changed; once it
answers again `slipway rollback` finishes the job); a release killed mid-way, then
`slipway rollback` (every host on v2); an unknown host key (refused before anything runs).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from blocks.rollout_ssh import SshTargetSettings
from tests.commands import slipway, start_slipway
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import wait_until
from tests.harness.s3 import S3Info
from tests.harness.ssh_hosts import SshHostsInfo
from tests.journals import release_record
from tests.pg_fixtures import create_database, snapshot
from tests.ssh_app import UNITS, SshApp, create_ssh_app

pytestmark = [pytest.mark.ssh_hosts, pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("v1", "v2", "v3", "v4")
MIGRATIONS = {
    "20240101000000_init": "CREATE TABLE items (id serial PRIMARY KEY, name text);\n",
    "20240201000000_add_price": "ALTER TABLE items ADD COLUMN price integer;\n",
}
SHIPPED = {"v1": 1, "v2": 2, "v3": 2, "v4": 2}  # how many of MIGRATIONS each version ships


@dataclass
class Stage:
    name: str
    app: SshApp
    database: str
    pg: PostgresInfo
    cli_env: dict[str, str]

    def answers(self) -> dict[str, dict[str, str | None]]:
        """What every unit of every host answers on /health (its version, or None)."""
        return {h.name: {u: self.app.answering(h, u) for u in UNITS} for h in self.app.hosts}

    def all_on(self, version: str) -> dict[str, dict[str, str | None]]:
        return {h: dict.fromkeys(UNITS, version) for h in (h.name for h in self.app.hosts)}

    def hook(self, host: str, version: str, script: str) -> None:
        """What the first deploy step runs on that host for that version."""
        (self.app.info.host(host).root / "releases" / version / "hook.sh").write_text(script)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return slipway(*args, env=self.cli_env)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return start_slipway(*args, env=self.cli_env)


def environment_yaml(
    name: str, app: SshApp, pg: PostgresInfo, database: str, s3: S3Info, bucket: str, root: Path
) -> dict[str, Any]:
    target = app.settings(
        deploy_steps=["sh releases/{version}/hook.sh", "ln -sfn releases/{version} current"],
        command_timeout_seconds=8,
        connect_timeout_seconds=3,
    )
    del target["identity_file"]  # the key comes from the credentials block
    return {
        "name": name,
        "database": {"url": pg.url_without_password(database), "password": "${TEST_DB_PASSWORD}"},
        "store": {
            "url": f"s3://{bucket}/backups",
            "endpoint_url": s3.endpoint_url,
            "access_key_id": s3.access_key,
            "secret_access_key": "${TEST_S3_SECRET}",
        },
        "target": target,
        "health_checks": [
            {
                "kind": "http",
                "url": "http://{host}:8080/health",
                "version_field": "version",
                "deadline_seconds": 5,
            }
        ],
        "migrations": {"directory": str(root / "releases" / "{version}" / "prisma" / "migrations")},
        "policy": {"min_free_disk_mb": 1},
        "ssh": {"private_key": "${TEST_DEPLOY_KEY}"},
    }


@pytest.fixture(scope="module")
def stage(
    ssh_hosts: SshHostsInfo,
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp("ssh-release")
    app = create_ssh_app(ssh_hosts, versions=VERSIONS, unhealthy={("v3", "host2", "api")})
    for host in app.hosts:
        for version in VERSIONS:
            (host.root / "releases" / version / "hook.sh").write_text("true\n")
    for version, count in SHIPPED.items():
        for folder, sql in list(MIGRATIONS.items())[:count]:
            path = root / "releases" / version / "prisma" / "migrations" / folder
            path.mkdir(parents=True)
            (path / "migration.sql").write_text(sql)
    name = f"ssh-{secrets.token_hex(3)}"
    database = create_database(postgres, sql="")
    bucket = f"ssh-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    spec = root / "env.yaml"
    spec.write_text(
        yaml.safe_dump(environment_yaml(name, app, postgres, database, s3, bucket, root))
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
    cli_env = base | {"PREFECT_API_URL": prefect_server.api_url}
    secrets_env = {
        "TEST_DB_PASSWORD": postgres.password,
        "TEST_S3_SECRET": s3.secret_key,
        "TEST_DEPLOY_KEY": ssh_hosts.client_key.read_text(),
    }
    stage = Stage(name, app, database, postgres, cli_env)
    applied = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "env", "apply", str(spec)],
        cwd=REPO,
        env=cli_env | secrets_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert f"{name}-ssh" in applied.stdout
    try:
        yield stage
    finally:
        app.remove()


def journal(stage: Stage) -> Any:
    return release_record(stage.name)


def test_1_v1_then_v2_with_a_migration_every_host_answers_v2(stage: Stage) -> None:
    first = stage.cli("release", "v1", "--env", stage.name)
    assert first.returncode == 0, first.stderr
    assert stage.answers() == stage.all_on("v1")

    second = stage.cli("release", "v2", "--env", stage.name)
    assert second.returncode == 0, second.stderr
    assert stage.answers() == stage.all_on("v2")
    status = stage.cli("status", "--env", stage.name)
    assert status.returncode == 0, status.stderr
    hosts = ", ".join(f"{h.address} v2" for h in stage.app.hosts)
    assert f"{stage.name}: live v2 (api v2, worker v2, web v2; hosts {hosts})" in status.stdout
    doctor = stage.cli("doctor", "--env", stage.name, "--json")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "live v2" in doctor.stdout
    record = journal(stage)
    assert (record.status, record.previous_version) == ("succeeded", "v1")
    assert record.migrations_applied == ["20240201000000_add_price"]
    columns = snapshot(stage.pg, stage.database)["columns"]
    assert ("public", "items", "price", "integer", "YES", None) in columns
    # The deploy steps' output is in the journal, per host and step.
    rollout = next(s for s in record.steps if s.name == "rollout")
    assert set(rollout.output) == {
        f"{h.address} deploy step {n}" for h in stage.app.hosts for n in (1, 2)
    }
    # ... and in the release report (the artifact's text), a section per host and step.
    from flows.release import release_report

    report = release_report(record, None)
    assert "## Command output" in report
    assert f"### rollout: {stage.app.hosts[0].address} deploy step 1" in report
    # The key went to a block, never to the environment block or a command line.
    from blocks.environment import Environment

    saved = Environment.resolve(stage.name)
    assert isinstance(saved.target, SshTargetSettings)
    assert saved.target.credentials_block == f"{stage.name}-ssh"
    assert "PRIVATE KEY" not in saved.model_dump_json()


def test_2_v3_unhealthy_on_host2_all_three_end_on_v2(stage: Stage) -> None:
    failed = stage.cli("release", "v3", "--env", stage.name)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    host2 = stage.app.hosts[1].address
    assert f"failed at api: on {host2}" in lines[0]
    assert "rolled back to v2" in lines[0]
    assert stage.answers() == stage.all_on("v2")
    record = journal(stage)
    assert record.status == "rolled_back"


def test_3_a_host_that_stops_answering_the_others_go_back(stage: Stage) -> None:
    host2 = stage.app.hosts[1]
    stage.hook("host2", "v4", "touch ~/v4-started; sleep 4\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "release", "v4", "--env", stage.name],
        cwd=REPO,
        env=stage.cli_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: (host2.root / "v4-started").exists(), timeout=120, what="v4 on host2")
        stage.app.info.cut(host2)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 1
    assert len(lines) == 1, err
    assert host2.address in lines[0]
    others = [h for h in stage.app.hosts if h != host2]
    answers = stage.answers()
    assert {h.name: answers[h.name] for h in others} == {
        h.name: dict.fromkeys(UNITS, "v2") for h in others
    }
    record = journal(stage)
    rollout = next(s for s in record.steps if s.name == "rollout")
    assert rollout.status == "failed"
    changed = rollout.detail.split("hosts changed: ")[1].split(";")[0].split(")")[0]
    assert set(changed.split(", ")) == {h.address for h in stage.app.hosts}
    # The host is back: a rollback finishes the job, every host on v2.
    stage.app.info.heal(host2)
    back = stage.cli("rollback", "--env", stage.name, "--yes")
    assert back.returncode == 0, back.stderr
    assert stage.answers() == stage.all_on("v2")


def test_4_a_killed_release_then_rollback_every_host_on_v2(stage: Stage) -> None:
    stage.hook("host3", "v4", "touch ~/v4-killed; sleep 3\n")
    proc = stage.start("release", "v4", "--env", stage.name)
    host3 = stage.app.hosts[2]
    try:
        wait_until(lambda: (host3.root / "v4-killed").exists(), timeout=120, what="v4 on host3")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    record = journal(stage)
    assert (record.version, record.status) == ("v4", "running")
    back = stage.cli("rollback", "--env", stage.name, "--yes")
    assert back.returncode == 0, back.stderr
    assert stage.answers() == stage.all_on("v2")
    # The killed run's step finished before the rollback's commands ran (the host's lock):
    # the hook's sleep did not outlive it.
    assert stage.app.live(host3) == "v2"


def test_5_an_unknown_host_key_is_refused_before_anything_runs(
    stage: Stage, tmp_path: Path
) -> None:
    from blocks.environment import Environment

    saved = Environment.resolve(stage.name)
    assert isinstance(saved.target, SshTargetSettings)
    host3 = stage.app.hosts[2]
    lines = [ln for ln in saved.target.known_hosts.splitlines() if host3.address not in ln]
    broken = f"{stage.name}-nokey"
    saved.model_copy(
        update={"target": saved.target.model_copy(update={"known_hosts": "\n".join(lines)})}
    ).save(broken, overwrite=True)
    before = [len(stage.app.events(h)) for h in stage.app.hosts]
    refused = stage.cli("release", "v1", "--env", broken)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert f"host key of {host3.address} is unknown" in lines[0]
    assert "SHA256:" in lines[0]
    assert [len(stage.app.events(h)) for h in stage.app.hosts] == before
    assert stage.answers() == stage.all_on("v2")
