"""Environments as code: a YAML file becomes the environment's blocks (`slipway env apply`).

Secrets in the file are `${ENV_VAR}` references, expanded from the environment when it is
applied; a literal secret is refused, so the file can live in git. One file writes:
`<name>-database` (PostgresDatabase), `<name>-store` (ObjectStorage), `<name>-slack`
(SlackNotifier) and `<name>-telegram` (TelegramNotifier) when configured, and the
`Environment` block `<name>` that names them.

    name: production
    database: {url: "postgresql://app@db:5432/app", password: "${DB_PASSWORD}"}
    store: {url: "s3://backups/prod", endpoint_url: "http://minio:9000",
            access_key_id: "${BACKUP_KEY_ID}", secret_access_key: "${BACKUP_SECRET}"}
    target: {kind: compose, project_directory: /srv/app, services: [api, worker, web]}
    health_checks: [{kind: http, url: "http://localhost:3000/health", version_field: version}]
    migrations: {mode: native, directory: /srv/app/prisma/migrations}
    policy: {max_backup_age_hours: 24, database_rollback: restore, approve_restore: true}
    notifiers:
      slack: {webhook_url: "${SLACK_WEBHOOK_URL}"}
      telegram: {bot_token: "${TELEGRAM_BOT_TOKEN}", chat_ids: "${ADMIN_TELEGRAM_IDS}"}
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from blocks.environment import BucketBackup, Environment, MigrationSettings, ReleasePolicy
from blocks.errors import ConfigError
from blocks.rollout import HealthCheck, TargetSettings

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
# Where a secret may appear: only as a ${VAR} reference.
SECRET_PATHS = (
    ("database", "password"),
    ("store", "secret_access_key"),
    ("notifiers", "slack", "webhook_url"),
    ("notifiers", "slack", "bot_token"),
    ("notifiers", "telegram", "bot_token"),
)


class DatabaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="postgresql://user@host:port/db, without the password.")
    password: str | None = None


class StoreSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="s3://bucket/prefix")
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


class SlackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_url: str | None = None
    bot_token: str | None = None
    channel: str | None = None
    base_url: str | None = None


class TelegramSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bot_token: str
    chat_ids: list[str] | str
    api_url: str | None = None


class NotifiersSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slack: SlackSpec | None = None
    telegram: TelegramSpec | None = None


class EnvironmentFile(BaseModel):
    """The file's shape: the Environment block's fields plus its sub-blocks inline."""

    model_config = ConfigDict(extra="forbid")
    name: str
    database: DatabaseSpec
    store: StoreSpec
    target: TargetSettings
    health_checks: list[HealthCheck] = Field(default_factory=list)
    migrations: MigrationSettings = Field(default_factory=MigrationSettings)
    policy: ReleasePolicy = Field(default_factory=ReleasePolicy)
    notifiers: NotifiersSpec = Field(default_factory=NotifiersSpec)
    buckets: list[BucketBackup] = Field(default_factory=list)


def _check_secrets(data: dict[str, Any], path: Path) -> None:
    for keys in SECRET_PATHS:
        node: Any = data
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and not (isinstance(node, str) and REFERENCE.fullmatch(node)):
            raise ConfigError(
                f'{".".join(keys)} in {path} is a literal secret: write "${{SOME_VAR}}" and '
                "export SOME_VAR where you run `slipway env apply`"
            )
    database = data.get("database")
    url = database.get("url") if isinstance(database, dict) else None
    if isinstance(url, str) and re.match(r"[a-z]+://[^/@]*:[^/@]*@", url):
        raise ConfigError(
            f"database.url in {path} holds a password: remove it and use database.password "
            '"${DB_PASSWORD}"'
        )


def _expand(node: Any, path: Path) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, path) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, path) for v in node]
    if isinstance(node, str):

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{path} refers to ${{{name}}}, which is not set: export it")
            return os.environ[name]

        return REFERENCE.sub(value, node)
    return node


def load_environment_file(path: Path) -> EnvironmentFile:
    """Read, check (no literal secrets) and expand an environment file."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"environment file {path} not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping with name, database, store and target")
    _check_secrets(data, path)
    try:
        spec = EnvironmentFile.model_validate(_expand(data, path))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from exc
    if not NAME.fullmatch(spec.name):
        raise ConfigError(
            f"environment name {spec.name!r} in {path}: use lowercase letters, digits and '-'"
        )
    return spec


def apply_environment(spec: EnvironmentFile) -> list[str]:
    """Create or update the environment's blocks; return the names written."""
    from blocks.notifiers import SlackNotifier, TelegramNotifier
    from blocks.object_storage import ObjectStorage
    from blocks.postgres import PostgresDatabase

    name = spec.name
    database = PostgresDatabase.from_url(spec.database.url)
    # The file's password or none: not the applying shell's PGPASSWORD.
    database.password = SecretStr(spec.database.password) if spec.database.password else None
    parts = urlsplit(spec.store.url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"store.url {spec.store.url!r} must look like s3://bucket/prefix")
    # Only what the file says: the applying shell's AWS_* variables must not leak in.
    store = ObjectStorage(
        bucket=parts.netloc,
        prefix=parts.path.strip("/"),
        endpoint_url=spec.store.endpoint_url,
        region=spec.store.region,
        access_key_id=spec.store.access_key_id,
        secret_access_key=SecretStr(spec.store.secret_access_key)
        if spec.store.secret_access_key
        else None,
    )
    written = []
    database.save(f"{name}-database", overwrite=True)
    store.save(f"{name}-store", overwrite=True)
    written += [f"{name}-database", f"{name}-store"]
    slack_name = telegram_name = None
    if spec.notifiers.slack:
        slack = SlackNotifier(**spec.notifiers.slack.model_dump(exclude_none=True))
        slack_name = f"{name}-slack"
        slack.save(slack_name, overwrite=True)
        written.append(slack_name)
    if spec.notifiers.telegram:
        telegram = TelegramNotifier(**spec.notifiers.telegram.model_dump(exclude_none=True))
        telegram_name = f"{name}-telegram"
        telegram.save(telegram_name, overwrite=True)
        written.append(telegram_name)
    Environment(
        database_block=f"{name}-database",
        store_block=f"{name}-store",
        target=spec.target,
        health_checks=spec.health_checks,
        migrations=spec.migrations,
        policy=spec.policy,
        slack_block=slack_name,
        telegram_block=telegram_name,
        buckets=spec.buckets,
    ).save(name, overwrite=True)
    written.append(name)
    return written
