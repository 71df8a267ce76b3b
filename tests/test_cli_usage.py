"""The command line reads well: flags shown as flags, every option described, `backups list`
with headers and an empty-store line, and --json output that parses on every command that
prints a result."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from deployments.cli import app
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database
from tests.test_backup_restore import slipway


def commands(command: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every group and command under `command`, the root first."""
    command = command or typer.main.get_command(app)
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def leaf(path: tuple[str, ...]) -> Any:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


ALL = list(commands())


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) or "slipway" for p in ALL])
def test_help_shows_flags_as_flags(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help " in result.output


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) or "slipway" for p in ALL])
def test_every_parameter_is_described(path: tuple[str, ...]) -> None:
    command = leaf(path)
    assert command.help, f"slipway {' '.join(path)} has no description"
    for param in command.params:
        assert isinstance(param, TyperOption | TyperArgument)
        assert param.help, f"slipway {' '.join(path)}: {param.name} has no help text"


def test_a_flag_takes_no_value() -> None:
    """`--globals true` is refused as a usage error, as a flag shown as a flag suggests."""
    result = CliRunner().invoke(app, ["backup", "--globals", "true"])
    assert result.exit_code == 2


@pytest.fixture
def env(
    postgres: PostgresInfo, s3: S3Info, prefect_server: PrefectInfo, tmp_path: Path
) -> dict[str, str]:
    bucket = f"usage-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PG", "DATABASE_URL", "SLIPWAY_", "PREFECT_API"))
    }
    return {
        **base,
        **s3.env(),
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "DATABASE_URL": postgres.url_without_password(create_database(postgres)),
        "PGPASSWORD": postgres.password,
        "SLIPWAY_BACKUP_URL": f"s3://{bucket}/backups",
        "PREFECT_API_URL": prefect_server.api_url,
        "TMPDIR": str(tmp_path),
    }


def out(*args: str, env: dict[str, str]) -> str:
    proc = slipway(*args, env=env)
    assert proc.returncode == 0, f"slipway {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def as_json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(out(*args, "--json", env=env))


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.prefect
def test_backups_list_and_json_everywhere(
    env: dict[str, str], postgres: PostgresInfo, tmp_path: Path
) -> None:
    assert as_json("version", env=env)["version"]
    database = env["DATABASE_URL"].rsplit("/", 1)[1]

    # An empty store says so, in one line; JSON gives an empty list.
    empty = out("backups", "list", env=env).splitlines()
    assert len(empty) == 1
    assert empty[0].startswith(f"no backups of {database!r} in s3://"), empty
    assert as_json("backups", "list", env=env) == []

    backup = as_json("backup", env=env)
    listed = out("backups", "list", env=env).splitlines()
    assert listed[0].split() == [
        "ID", "TAKEN", "AT", "(UTC)", "SIZE", "RATIO", "VERIFIED", "ENCRYPTED", "APP", "VERSION"
    ]  # fmt: skip
    assert len(listed) == 2
    row = listed[1].split()
    assert row[0] == backup["id"]
    assert row[-3:] == ["no", "no", "-"]  # not verified yet, not encrypted, no app version
    assert as_json("verify", "latest", env=env)["ok"] is True
    (entry,) = as_json("backups", "list", env=env)
    assert (entry["id"], entry["verified"], entry["encrypted"]) == (backup["id"], True, False)
    assert entry["taken_at"].startswith(backup["started_at"][:19])
    assert out("backups", "list", env=env).splitlines()[1].split()[-3:] == ["yes", "no", "-"]

    assert as_json("prune", "--dry-run", env=env)["delete"] == []
    target = postgres.url_without_password(f"usage_{secrets.token_hex(3)}")
    restored = as_json(
        "restore", "latest", "--target-database-url", target, "--source-database", database,
        env=env,
    )  # fmt: skip
    assert restored["backup"] == backup["id"]

    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("a")
    assert as_json("mirror", str(files), str(tmp_path / "mirror"), env=env)["copied"] == 1
    snap = as_json("snapshot", str(files), "--name", "files", env=env)
    assert snap["object_count"] == 1
    back = as_json("restore-files", "files@latest", str(tmp_path / "back"), env=env)
    assert back["restored"] == 1

    migrations = tmp_path / "migrations"
    (migrations / "20260101000000_init").mkdir(parents=True)
    (migrations / "20260101000000_init" / "migration.sql").write_text("CREATE TABLE t (i int);")
    where = ["--migrations", str(migrations)]
    marked = as_json("migrate", "resolve", *where, "--applied", "20260101000000_init", env=env)
    assert marked == {"migration": "20260101000000_init", "marked": "applied"}
    assert as_json("migrate", "status", *where, env=env)["ok"] is True
    assert as_json("migrate", "deploy", *where, env=env)["applied"] == []

    name = f"usage-{secrets.token_hex(3)}"
    spec = tmp_path / "env.yaml"
    spec.write_text(
        f"name: {name}\n"
        f'database: {{url: "{env["DATABASE_URL"]}", password: "${{PGPASSWORD}}"}}\n'
        f'store: {{url: "{env["SLIPWAY_BACKUP_URL"]}", endpoint_url: '
        f'"{env["AWS_ENDPOINT_URL_S3"]}", access_key_id: "{env["AWS_ACCESS_KEY_ID"]}", '
        'secret_access_key: "${AWS_SECRET_ACCESS_KEY}"}\n'
        f"target: {{project_directory: {tmp_path}, services: [api]}}\n"
    )
    saved = as_json("env", "apply", str(spec), env=env)["saved"]
    assert saved == [f"{name}-database", f"{name}-store", name]
    assert as_json("unlock", "--env", name, env=env) == {"environment": name, "ended": None}
