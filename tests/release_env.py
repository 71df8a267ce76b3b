"""An environment of the demo compose app on the harness's services, for tests and the bench.

Saves the blocks a release needs (database, store, Environment) on the current Prefect API
and writes each version's Prisma migrations under `releases/<version>/prisma/migrations`,
as an operations machine holding each release's checkout would.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from tests.compose_app import VERSIONS, ComposeApp, create_app, migrations_for
from tests.harness.postgres import PostgresInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database


def write_migrations(releases_dir: Path) -> None:
    for version in VERSIONS:
        folder = releases_dir / version / "prisma" / "migrations"
        for name, sql in migrations_for(version).items():
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / "migration.sql").write_text(sql)


def save_environment_blocks(
    name: str,
    postgres: PostgresInfo,
    database: str,
    s3: S3Info,
    target: Any,
    releases_dir: Path,
    **environment: Any,
) -> str:
    """`<name>-database`, `<name>-store` (a fresh bucket, its name returned) and the
    Environment `name` releasing to `target`, with the migrations of `releases_dir`."""
    from blocks.environment import Environment, MigrationSettings, ReleasePolicy
    from blocks.object_storage import ObjectStorage
    from blocks.postgres import PostgresDatabase

    bucket = f"{name.split('-')[0]}-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    PostgresDatabase.from_url(postgres.url(database)).save(f"{name}-database", overwrite=True)
    ObjectStorage(**s3.storage(bucket, "backups").model_dump()).save(
        f"{name}-store", overwrite=True
    )
    Environment(
        database_block=f"{name}-database",
        store_block=f"{name}-store",
        target=target,
        migrations=MigrationSettings(
            directory=releases_dir / "{version}" / "prisma" / "migrations"
        ),
        policy=ReleasePolicy(min_free_disk_mb=1),
        **environment,
    ).save(name, overwrite=True)
    return bucket


def save_release_environment(
    root: Path,
    postgres: PostgresInfo,
    s3: S3Info,
    *,
    health_deadline: float = 15.0,
    docker_host: str | None = None,
    registry: str | None = None,
) -> tuple[str, ComposeApp, str, str]:
    """(environment name, app, database, bucket) of a new environment of the demo app.

    `docker_host` goes into the target's settings, for runs (a worker's) that do not get
    DOCKER_HOST from the test; with `registry`, the app's images are pulled from it.
    """
    from blocks.rollout import HealthCheck

    releases_dir = root / "releases"
    write_migrations(releases_dir)
    app = create_app(root / "app", deadline_seconds=health_deadline, registry=registry)
    name = f"rel-{secrets.token_hex(3)}"
    database = create_database(postgres, sql="")
    bucket = save_environment_blocks(
        name,
        postgres,
        database,
        s3,
        app.settings.model_copy(update={"docker_host": docker_host}),
        releases_dir,
        health_checks=[
            HealthCheck(
                kind="http",
                url=app.api_health_url,
                version_field="version",
                deadline_seconds=health_deadline,
                interval_seconds=0.2,
                successes=2,
            )
        ],
    )
    return name, app, database, bucket
