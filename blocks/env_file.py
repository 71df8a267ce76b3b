"""Environments as code: a YAML file becomes the environment's blocks (`slipway env apply`).

Secrets in the file are `${ENV_VAR}` references, expanded from the environment when it is
applied; a literal secret is refused, so the file can live in git. One file writes:
`<name>-database` (PostgresDatabase), `<name>-store` (ObjectStorage), `<name>-slack`
(SlackNotifier) and `<name>-telegram` (TelegramNotifier) when configured, `<name>-ssh`
(SshCredentials) for an ssh target's key and secret variables, `<name>-aws` (AwsCredentials)
for an ecs target's keys, and the `Environment` block `<name>` that names them.

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
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from blocks.config_check import combined
from blocks.environment_settings import BucketBackup, MigrationSettings, ReleasePolicy
from blocks.errors import ConfigError
from blocks.rollout import EcsTargetSettings, HealthCheck, SshTargetSettings, TargetSettings
from blocks.settings import PostgresSettings

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Where a secret may appear: only as a ${VAR} reference.
SECRET_PATHS = (
    ("database", "password"),
    ("store", "secret_access_key"),
    ("notifiers", "slack", "webhook_url"),
    ("notifiers", "slack", "bot_token"),
    ("notifiers", "telegram", "bot_token"),
    ("ssh", "private_key"),
    ("ssh", "passphrase"),
    ("aws", "secret_access_key"),
    ("aws", "session_token"),
    ("aws", "external_id"),
)


class DatabaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="postgresql://user@host:port/db, without the password.")
    password: str | None = Field(
        default=None, description='The role\'s password, as a reference: "${DB_PASSWORD}".'
    )


class StoreSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="Where backups and the release journal go: s3://bucket/prefix.")
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint, e.g. http://minio:9000 (empty: AWS)."
    )
    region: str | None = Field(default=None, description="Region (AWS); MinIO accepts any.")
    access_key_id: str | None = Field(
        default=None, description="Access key id (empty: boto3's default chain)."
    )
    secret_access_key: str | None = Field(
        default=None, description='Secret access key, as a reference: "${BACKUP_SECRET}".'
    )


class SlackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_url: str | None = Field(
        default=None,
        description='Incoming webhook URL, as a reference: "${SLACK_WEBHOOK_URL}".',
    )
    bot_token: str | None = Field(
        default=None,
        description='Bot token (xoxb-...) instead of a webhook, as a reference: "${SLACK_BOT_TOKEN}".',
    )
    channel: str | None = Field(
        default=None, description="Channel for the bot token: #deploys or its id (C0123...)."
    )
    base_url: str | None = Field(
        default=None, description="Slack Web API base URL (empty: https://slack.com/api/)."
    )


class TelegramSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bot_token: str = Field(
        description='Bot token from @BotFather, as a reference: "${TELEGRAM_BOT_TOKEN}".'
    )
    chat_ids: list[str] | str = Field(
        description="Chat ids to notify (users; groups: -100...), a list or comma-separated."
    )
    api_url: str | None = Field(
        default=None, description="Telegram Bot API base URL (empty: https://api.telegram.org)."
    )


class NotifiersSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slack: SlackSpec | None = Field(default=None, description="A Slack notifier.")
    telegram: TelegramSpec | None = Field(default=None, description="A Telegram notifier.")


class SshSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    private_key: str | None = Field(
        default=None,
        description='The ssh target\'s private key, as a reference: "${DEPLOY_SSH_KEY}" '
        "(empty: the target's identity_file, else the SSH agent).",
    )
    passphrase: str | None = Field(
        default=None, description='Its passphrase, as a reference: "${DEPLOY_SSH_PASSPHRASE}".'
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description='Secret variables remote commands get, as references: {GIT_TOKEN: "${GIT_TOKEN}"}.',
    )

    @field_validator("env")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not VARIABLE.fullmatch(k)]
        if bad:
            raise ConfigError(f"ssh.env: {bad[0]!r} is not a variable name, e.g. GIT_TOKEN")
        return value


class AwsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    access_key_id: str | None = Field(
        default=None, description="The ecs target's access key id (empty: boto3's standard chain)."
    )
    secret_access_key: str | None = Field(
        default=None, description='Its secret, as a reference: "${AWS_SECRET_ACCESS_KEY}".'
    )
    session_token: str | None = Field(
        default=None,
        description='A session token of temporary keys, as a reference: "${AWS_SESSION_TOKEN}".',
    )
    role_arn: str | None = Field(
        default=None, description="A role to assume with these keys (or the standard chain's)."
    )
    external_id: str | None = Field(
        default=None,
        description='The external id the role requires, as a reference: "${AWS_EXTERNAL_ID}".',
    )
    endpoint_url: str | None = Field(
        default=None, description="One endpoint for every AWS API (empty: AWS's)."
    )


class EnvironmentFile(BaseModel):
    """The file's shape: the Environment block's fields plus its sub-blocks inline."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        description="The environment's name (lowercase letters, digits, '-'): its block, "
        "`--env NAME` and the `release/NAME` deployment."
    )
    database: DatabaseSpec = Field(description="The app's PostgreSQL database.")
    store: StoreSpec = Field(description="The backup store (S3 or MinIO).")
    target: TargetSettings = Field(
        description="Where the app runs, chosen by kind (compose: a docker compose project)."
    )
    health_checks: list[HealthCheck] = Field(
        default_factory=list,
        description="Checks of the whole app after the rollout, e.g. its public URL with "
        "version_field.",
    )
    migrations: MigrationSettings = Field(
        default_factory=MigrationSettings, description="How the Prisma migrations are applied."
    )
    policy: ReleasePolicy = Field(
        default_factory=ReleasePolicy,
        description="What releases, rollbacks and restores may do on their own.",
    )
    notifiers: NotifiersSpec = Field(
        default_factory=NotifiersSpec, description="Where outcomes are announced."
    )
    ssh: SshSpec | None = Field(
        default=None, description="Secrets of an ssh target, kept in the `<name>-ssh` block."
    )
    buckets: list[BucketBackup] = Field(
        default_factory=list, description="The app's buckets in the nightly backup."
    )
    aws: AwsSpec | None = Field(
        default=None, description="Keys of an ecs target, kept in the `<name>-aws` block."
    )


def _secret_problems(data: dict[str, Any], path: Path) -> list[str]:
    problems = []
    for keys in SECRET_PATHS:
        node: Any = data
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and not (isinstance(node, str) and REFERENCE.fullmatch(node)):
            problems.append(
                f'{".".join(keys)} in {path} is a literal secret: write "${{SOME_VAR}}" and '
                "export SOME_VAR where you run `slipway env apply`"
            )
    ssh = data.get("ssh")
    variables = ssh.get("env") if isinstance(ssh, dict) else None
    for key, value in (variables or {}).items() if isinstance(variables, dict) else ():
        if not (isinstance(value, str) and REFERENCE.fullmatch(value)):
            problems.append(
                f'ssh.env.{key} in {path} is a literal secret: write "${{SOME_VAR}}" and '
                "export SOME_VAR where you run `slipway env apply`"
            )
    database = data.get("database")
    url = database.get("url") if isinstance(database, dict) else None
    if isinstance(url, str) and re.match(r"[a-z]+://[^/@]*:[^/@]*@", url):
        problems.append(
            f"database.url in {path} holds a password: remove it and use database.password "
            '"${DB_PASSWORD}"'
        )
    return problems


def _expand(node: Any, unset: dict[str, None]) -> Any:
    """`${VAR}` references replaced by their values; the names of unset ones go to `unset`."""
    if isinstance(node, dict):
        return {k: _expand(v, unset) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, unset) for v in node]
    if isinstance(node, str):

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                unset[name] = None
                return ""
            return os.environ[name]

        return REFERENCE.sub(value, node)
    return node


def load_environment_file(path: Path) -> EnvironmentFile:
    """Read, check (no literal secrets) and expand an environment file; one error names
    every problem found."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"environment file {path} not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping with name, database, store and target")
    problems = _secret_problems(data, path)
    unset: dict[str, None] = {}
    expanded = _expand(data, unset)
    problems += [f"{path} refers to ${{{name}}}, which is not set: export it" for name in unset]
    spec = None
    try:
        spec = EnvironmentFile.model_validate(expanded)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            problems.append(f"{path}: {where}: {error['msg']}")
    name = spec.name if spec else expanded.get("name")
    if isinstance(name, str) and not NAME.fullmatch(name):
        problems.append(
            f"environment name {name!r} in {path}: use lowercase letters, digits and '-'"
        )
    if spec is not None:
        problems += _url_problems(spec, path)
        if spec.ssh is not None and spec.target.kind != "ssh":
            problems.append(
                f"ssh in {path} is for an ssh target; this target is {spec.target.kind}"
            )
        if spec.aws is not None and spec.target.kind != "ecs":
            problems.append(
                f"aws in {path} is for an ecs target; this target is {spec.target.kind}"
            )
    if problems or spec is None:
        raise combined(problems, str(path))
    return spec


def _url_problems(spec: EnvironmentFile, path: Path) -> list[str]:
    """The database and store URLs, read as `apply_environment` reads them."""
    problems = []
    try:
        PostgresSettings.from_url(spec.database.url)
    except (ConfigError, ValueError):
        problems.append(f"database.url in {path} must look like postgresql://user@host:5432/dbname")
    try:
        parts = urlsplit(spec.store.url)
        good = parts.scheme == "s3" and bool(parts.netloc)
    except ValueError:  # an unclosed [IPv6 bracket, say
        good = False
    if not good:
        problems.append(f"store.url {spec.store.url!r} in {path} must look like s3://bucket/prefix")
    return problems


def apply_environment(spec: EnvironmentFile) -> list[str]:
    """Create or update the environment's blocks; return the names written."""
    from blocks.environment import Environment
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
    target = spec.target
    if spec.ssh is not None and isinstance(target, SshTargetSettings):
        from blocks.ssh_credentials import SshCredentials

        ssh = spec.ssh
        SshCredentials(
            private_key=SecretStr(ssh.private_key) if ssh.private_key else None,
            passphrase=SecretStr(ssh.passphrase) if ssh.passphrase else None,
            env={k: SecretStr(v) for k, v in ssh.env.items()},
        ).save(f"{name}-ssh", overwrite=True)
        written.append(f"{name}-ssh")
        if target.credentials_block is None:
            target = target.model_copy(update={"credentials_block": f"{name}-ssh"})
    if spec.aws is not None and isinstance(target, EcsTargetSettings):
        written.append(_save_aws(spec.aws, f"{name}-aws"))
        if target.credentials_block is None:
            target = target.model_copy(update={"credentials_block": f"{name}-aws"})
    Environment(
        database_block=f"{name}-database",
        store_block=f"{name}-store",
        target=target,
        health_checks=spec.health_checks,
        migrations=spec.migrations,
        policy=spec.policy,
        slack_block=slack_name,
        telegram_block=telegram_name,
        buckets=spec.buckets,
    ).save(name, overwrite=True)
    written.append(name)
    return written


def _save_aws(aws: AwsSpec, block_name: str) -> str:
    from blocks.aws_credentials import AwsCredentials

    def secret(value: str | None) -> SecretStr | None:
        return SecretStr(value) if value else None

    AwsCredentials(
        access_key_id=aws.access_key_id or None,
        secret_access_key=secret(aws.secret_access_key),
        session_token=secret(aws.session_token),
        role_arn=aws.role_arn or None,
        external_id=secret(aws.external_id),
        endpoint_url=aws.endpoint_url or None,
    ).save(block_name, overwrite=True)
    return block_name
