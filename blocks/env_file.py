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
            access_key_id: "${BACKUP_KEY_ID}", secret_access_key: "${BACKUP_SECRET}",
            encryption_recipients: [age1...], encryption_identity: "${BACKUP_AGE_IDENTITY}"}
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
from pydantic import SecretStr, ValidationError

from blocks.config_check import combined
from blocks.env_file_spec import AwsSpec, EnvironmentFile
from blocks.errors import ConfigError
from blocks.rollout import EcsTargetSettings, SshTargetSettings
from blocks.settings import PostgresSettings

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
# Where a secret may appear: only as a ${VAR} reference.
SECRET_PATHS = (
    ("database", "password"),
    ("store", "secret_access_key"),
    ("store", "encryption_identity"),
    ("notifiers", "slack", "webhook_url"),
    ("notifiers", "slack", "bot_token"),
    ("notifiers", "telegram", "bot_token"),
    ("ssh", "private_key"),
    ("ssh", "passphrase"),
    ("aws", "secret_access_key"),
    ("aws", "session_token"),
    ("aws", "external_id"),
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
        encryption_recipients=spec.store.encryption_recipients,
        encryption_identity=SecretStr(spec.store.encryption_identity)
        if spec.store.encryption_identity
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
