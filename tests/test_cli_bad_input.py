"""Every failure of every `slipway` command is one line: a table of bad inputs, one row per
command and cause.

Each row runs the real command line against real PostgreSQL, S3 and Prefect (no Docker
engine: DOCKER_HOST points nowhere) and checks: exactly one non-empty line on stderr,
starting `error: `, the right exit status (2 for usage errors, else 1), no traceback, and
nothing changed: the buckets' objects, the server's databases, the app database's tables
and rows, the saved blocks and the files of the test are the same before and after.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.commands import SLIPWAY, run
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database
from tests.release_env import save_release_environment

REPO = Path(__file__).resolve().parent.parent
NO_DOCKER = "unix:///nonexistent/slipway-test-docker.sock"
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens there
SERVICES = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]


@dataclass
class World:
    """What the rows run against; `names` fill the rows' `{placeholders}`."""

    pg: PostgresInfo
    s3: S3Info
    root: Path
    env: dict[str, str]
    names: dict[str, str]

    def fill(self, text: str) -> str:
        return text.format_map(self.names)

    def run(self, args: tuple[str, ...], extra: Mapping[str, str | None]) -> Any:
        env = {**self.env, **{k: self.fill(v) for k, v in extra.items() if v is not None}}
        for name in [k for k, v in extra.items() if v is None]:
            env.pop(name, None)
        return run([*SLIPWAY, *(self.fill(a) for a in args)], env)

    def state(self) -> dict[str, Any]:
        """Everything a failed command must leave as it was."""
        from prefect.client.orchestration import get_client

        client = self.s3.client()
        objects = {}
        for bucket in client.list_buckets()["Buckets"]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
            objects[bucket["Name"]] = sorted(
                (o["Key"], o["ETag"]) for page in pages for o in page.get("Contents", [])
            )
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            databases = sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database"))
        with psycopg.connect(self.pg.url(self.names["db"])) as conn:
            tables = conn.execute(
                "SELECT schemaname, relname, n_live_tup FROM pg_stat_user_tables ORDER BY 1, 2"
            ).fetchall()
            users = conn.execute("SELECT count(*), max(email) FROM app.users").fetchone()
        with get_client(sync_client=True) as prefect:
            blocks = sorted(str(b.name) for b in prefect.read_block_documents())
        files = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))
        return {
            "objects": objects,
            "databases": databases,
            "tables": tables,
            "users": users,
            "blocks": blocks,
            "files": files,
        }


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port something already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def world(
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    busy_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    database = create_database(postgres)
    client = s3.client()
    client.create_bucket(Bucket="bad-input-backups")
    client.create_bucket(Bucket="bad-input-app")
    for key in ("avatars/a.png", "docs/b.txt"):
        client.put_object(Bucket="bad-input-app", Key=key, Body=key.encode())
    environment, _app, _db, _bucket = save_release_environment(root / "release", postgres, s3)
    migrations = root / "migrations" / "20240101000000_init"
    migrations.mkdir(parents=True)
    (migrations / "migration.sql").write_text("CREATE TABLE t (id int);\n")
    (root / "bad.yaml").write_text("name: [unclosed\n")
    (root / "env.yaml").write_text(
        "name: bad-input\n"
        'database: {url: "postgresql://app@db:5432/app", password: "${BAD_INPUT_UNSET}"}\n'
        "store: {url: s3://backups/prod}\n"
        "target: {project_directory: /srv/app, services: [api]}\n"
    )
    (root / "webhook.yaml").write_text(
        "repositories:\n  - repository: acme/shop\n    environment: production\n"
    )
    (root / "tmp").mkdir()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PG", "DATABASE_URL", "SLIPWAY_", "DOCKER_"))
    }
    env = {
        **base,
        **s3.env(),
        **s3.env("SLIPWAY_SOURCE_"),
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_CONFIG_FILE": "/dev/null",
        "DATABASE_URL": postgres.url_without_password(database),
        "PGPASSWORD": postgres.password,
        "SLIPWAY_BACKUP_URL": "s3://bad-input-backups/nightly",
        "SLIPWAY_WEBHOOK_SECRET": "bad-input-secret",
        "PREFECT_API_URL": prefect_server.api_url,
        "DOCKER_HOST": NO_DOCKER,
        "TMPDIR": str(root / "tmp"),
    }
    names = {
        "db": database,
        "pg": f"{postgres.host}:{postgres.port}",
        "host": postgres.host,
        "env": environment,
        "root": str(root),
        "busy_port": str(busy_port),
    }
    made = World(postgres, s3, root, env, names)
    backup = made.run(("backup",), {})
    assert backup.returncode == 0, backup.stderr
    return made


@dataclass(frozen=True)
class Row:
    """One bad input: the command line, the environment's changes (None: unset), the exit
    status and a word the line must hold."""

    args: tuple[str, ...]
    needle: str
    env: Mapping[str, str | None] = field(default_factory=dict)
    status: int = 1


TARGET = "--target-database-url"
OTHER_DB = "postgresql://postgres@{pg}/bad_input_other"
DEAD_DB = "postgresql://postgres@{host}:1/x"  # nothing listens on port 1
S3_DOWN = {"AWS_ENDPOINT_URL_S3": DEAD}
SOURCE_DOWN = {"SLIPWAY_SOURCE_ENDPOINT_URL": DEAD}
PREFECT_DOWN = {"PREFECT_API_URL": f"{DEAD}/api"}
MIGRATIONS = ("--migrations", "{root}/migrations")

ROWS: dict[str, Row] = {
    # backup
    "backup/wrong-db-password": Row(("backup",), "password", {"PGPASSWORD": "wrong"}),
    "backup/db-unreachable": Row(("backup",), "cannot reach PostgreSQL", {"DATABASE_URL": DEAD_DB}),
    "backup/s3-unreachable": Row(("backup",), "cannot reach the S3 endpoint", S3_DOWN),
    "backup/missing-bucket": Row(
        ("backup",), "does not exist", {"SLIPWAY_BACKUP_URL": "s3://bad-input-none/x"}
    ),
    "backup/wrong-s3-credentials": Row(
        ("backup",), "credentials", {"AWS_SECRET_ACCESS_KEY": "wrong"}
    ),
    "backup/malformed-store-url": Row(("backup",), "s3://bucket", {"SLIPWAY_BACKUP_URL": "s3:/x"}),
    "backup/missing-env": Row(("backup",), "DATABASE_URL", {"DATABASE_URL": None}),
    "backup/unknown-option": Row(("backup", "--bogus"), "--bogus", status=2),
    "backup/bad-value": Row(("backup", "--level", "high"), "--level", status=2),
    # verify
    "verify/unknown-backup-id": Row(("verify", "20200101T000000Z-abcd"), "no backup"),
    "verify/s3-unreachable": Row(("verify",), "cannot reach the S3 endpoint", S3_DOWN),
    "verify/wrong-s3-credentials": Row(
        ("verify",), "credentials", {"AWS_SECRET_ACCESS_KEY": "wrong"}
    ),
    # restore
    "restore/missing-argument": Row(("restore",), "missing argument", status=2),
    "restore/missing-option": Row(("restore", "latest"), TARGET, status=2),
    "restore/s3-unreachable": Row(
        ("restore", "latest", TARGET, OTHER_DB), "cannot reach the S3 endpoint", S3_DOWN
    ),
    "restore/unknown-backup-id": Row(
        ("restore", "20200101T000000Z-abcd", TARGET, OTHER_DB), "no backup"
    ),
    "restore/malformed-url": Row(("restore", "latest", TARGET, "mysql://x/y"), "postgresql://"),
    "restore/source-without-backups": Row(
        ("restore", "latest", TARGET, OTHER_DB, "--source-database", "nobody"),
        "backups of '{db}'",
    ),
    "restore/db-unreachable": Row(
        ("restore", "latest", TARGET, DEAD_DB), "cannot reach PostgreSQL"
    ),
    "restore/wrong-db-password": Row(
        ("restore", "latest", TARGET, OTHER_DB), "password", {"PGPASSWORD": "wrong"}
    ),
    # prune
    "prune/bad-policy": Row(("prune", "--keep-last", "-1"), "keep_last"),
    "prune/missing-bucket": Row(
        ("prune",), "does not exist", {"SLIPWAY_BACKUP_URL": "s3://bad-input-none/x"}
    ),
    "prune/s3-unreachable": Row(("prune",), "cannot reach the S3 endpoint", S3_DOWN),
    # mirror
    "mirror/malformed-url": Row(("mirror", "s3:/x", "{root}/mirror"), "malformed S3 URL"),
    "mirror/missing-source-bucket": Row(
        ("mirror", "s3://bad-input-none", "{root}/mirror"), "the source s3://bad-input-none"
    ),
    "mirror/source-unreachable": Row(
        ("mirror", "s3://bad-input-app", "{root}/mirror"), "SLIPWAY_SOURCE_ENDPOINT", SOURCE_DOWN
    ),
    "mirror/missing-argument": Row(("mirror", "s3://bad-input-app"), "missing argument", status=2),
    # snapshot
    "snapshot/missing-bucket": Row(("snapshot", "s3://bad-input-none"), "does not exist"),
    "snapshot/wrong-source-credentials": Row(
        ("snapshot", "s3://bad-input-app"),
        "credentials",
        {"SLIPWAY_SOURCE_SECRET_ACCESS_KEY": "wrong"},
    ),
    "snapshot/malformed-url": Row(("snapshot", "s3:/x"), "malformed S3 URL"),
    # restore-files
    "restore-files/missing-destination-bucket": Row(
        ("restore-files", "app@latest", "s3://bad-input-none"), "destination s3://bad-input-none"
    ),
    "restore-files/unknown-snapshot": Row(
        ("restore-files", "nothing@latest", "s3://bad-input-app"), "no snapshots"
    ),
    "restore-files/destination-unreachable": Row(
        ("restore-files", "app@latest", "s3://bad-input-app"), "cannot reach", SOURCE_DOWN
    ),
    # backups list
    "backups-list/s3-unreachable": Row(
        ("backups", "list"), "cannot reach the S3 endpoint", S3_DOWN
    ),
    "backups-list/missing-bucket": Row(
        ("backups", "list"), "does not exist", {"SLIPWAY_BACKUP_URL": "s3://bad-input-none/x"}
    ),
    "backups-list/missing-env": Row(
        ("backups", "list"), "SLIPWAY_BACKUP_URL", {"SLIPWAY_BACKUP_URL": None}
    ),
    # release, rollback, status, unlock
    "release/bad-version-tag": Row(("release", "v1 beta", "--env", "{env}"), "image tag"),
    "release/unknown-environment": Row(("release", "v1", "--env", "nowhere"), "nowhere"),
    "release/missing-option": Row(("release", "v1"), "--env", status=2),
    "release/prefect-unreachable": Row(
        ("release", "v1", "--env", "{env}"), "Prefect API", PREFECT_DOWN
    ),
    "rollback/bad-version-tag": Row(("rollback", "--env", "{env}", "--to", "v1/x"), "image tag"),
    "rollback/unknown-environment": Row(("rollback", "--env", "nowhere"), "nowhere"),
    "status/unknown-environment": Row(("status", "--env", "nowhere"), "nowhere"),
    "status/docker-unreachable": Row(("status", "--env", "{env}"), "Docker engine"),
    "status/prefect-unreachable": Row(("status", "--env", "{env}"), "Prefect API", PREFECT_DOWN),
    "release/flag-not-key-value": Row(
        ("release", "v1", "--env", "{env}", "--flag", "checkout"), "not KEY=VALUE"
    ),
    "rollback/to-revision-with-to": Row(
        ("rollback", "--env", "{env}", "--to-revision", "2", "--to", "v1"), "goes alone"
    ),
    "k8s-pause/not-kubernetes": Row(("k8s", "pause", "--env", "{env}"), "kubernetes target"),
    "flags-set/not-key-value": Row(("flags", "set", "--env", "{env}", "oops"), "not KEY=VALUE"),
    "unlock/unknown-environment": Row(("unlock", "--env", "nowhere"), "nowhere"),
    "unlock/prefect-unreachable": Row(("unlock", "--env", "{env}"), "Prefect API", PREFECT_DOWN),
    # migrate
    "migrate-status/db-unreachable": Row(
        ("migrate", "status", *MIGRATIONS),
        "cannot reach PostgreSQL",
        {"DATABASE_URL": DEAD_DB},
    ),
    "migrate-status/wrong-db-password": Row(
        ("migrate", "status", *MIGRATIONS), "password", {"PGPASSWORD": "wrong"}
    ),
    "migrate-status/missing-folder": Row(
        ("migrate", "status", "--migrations", "{root}/nowhere"), "not found"
    ),
    "migrate-deploy/password-in-url": Row(
        ("migrate", "deploy", *MIGRATIONS, "--database-url", "postgresql://u:pw@{pg}/x"),
        "password",
    ),
    "migrate-deploy/missing-env": Row(
        ("migrate", "deploy", *MIGRATIONS), "DATABASE_URL", {"DATABASE_URL": None}
    ),
    "migrate-resolve/unknown-migration": Row(
        ("migrate", "resolve", *MIGRATIONS, "--applied", "nothing"), "nothing"
    ),
    "migrate-resolve/unknown-option": Row(("migrate", "resolve", "--bogus"), "--bogus", status=2),
    # env apply
    "env-apply/malformed-yaml": Row(("env", "apply", "{root}/bad.yaml"), "YAML"),
    "env-apply/missing-file": Row(("env", "apply", "{root}/nowhere.yaml"), "not found"),
    "env-apply/unset-variable": Row(("env", "apply", "{root}/env.yaml"), "BAD_INPUT_UNSET"),
    "env-apply/prefect-unreachable": Row(
        ("env", "apply", "{root}/env.yaml"),
        "Prefect API",
        {**PREFECT_DOWN, "BAD_INPUT_UNSET": "secret"},
    ),
    # webhook serve
    "webhook/malformed-yaml": Row(("webhook", "serve", "--config", "{root}/bad.yaml"), "malformed"),
    "webhook/missing-secret": Row(
        ("webhook", "serve", "--config", "{root}/webhook.yaml"),
        "SLIPWAY_WEBHOOK_SECRET",
        {"SLIPWAY_WEBHOOK_SECRET": None},
    ),
    "webhook/port-in-use": Row(
        ("webhook", "serve", "--config", "{root}/webhook.yaml", "--port", "{busy_port}"),
        "{busy_port}",
    ),
    # the command line itself
    "slipway/unknown-command": Row(("undo",), "undo", status=2),
    "slipway/unknown-subcommand": Row(("migrate", "undo"), "slipway migrate", status=2),
}


@pytest.mark.parametrize("name", list(ROWS), ids=list(ROWS))
@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.prefect
def test_one_line_error_and_nothing_changed(world: World, name: str) -> None:
    row = ROWS[name]
    before = world.state()
    proc = world.run(row.args, row.env)
    after = world.state()
    assert proc.returncode == row.status, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert world.fill(row.needle).lower() in lines[0].lower(), lines[0]
    assert after == before


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.prefect
def test_restore_defaults_to_the_database_url_database(world: World) -> None:
    """`restore latest` into another database takes DATABASE_URL's latest backup."""
    target = f"{world.names['db']}_copy"
    proc = world.run(("restore", "latest", TARGET, f"postgresql://postgres@{{pg}}/{target}"), {})
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(world.pg.url(target)) as conn:
        row = conn.execute("SELECT count(*) FROM app.users").fetchone()
    assert row == (500,)
    with psycopg.connect(world.pg.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{target}"')


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.prefect
def test_verbose_shows_the_details(world: World) -> None:
    """-v keeps the one line last and may show what led to it."""
    proc = world.run(("restore", "latest", TARGET, OTHER_DB, "-v"), S3_DOWN)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot reach the S3 endpoint")
