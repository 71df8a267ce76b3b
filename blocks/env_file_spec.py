"""The environment file's shape (`slipway env apply`): the Environment block's fields, with
its sub-blocks (database, store, notifiers, ssh and aws keys) inline. Secrets here are the
`${VAR}` references' values, expanded by `blocks.env_file` before these models read them."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pyrage import IdentityError, RecipientError, x25519

from blocks.environment_settings import BucketBackup, MigrationSettings, ReleasePolicy
from blocks.errors import ConfigError
from blocks.rollout import HealthCheck, TargetSettings

VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    encryption_recipients: list[str] = Field(
        default_factory=list,
        description="age recipients (age1..., public keys: a list or comma-separated) that "
        "backups and snapshots are encrypted to (empty: SLIPWAY_BACKUP_RECIPIENTS).",
    )
    encryption_identity: str | None = Field(
        default=None,
        description="age identities that drills and restores decrypt with, as a reference: "
        '"${BACKUP_AGE_IDENTITY}" (one AGE-SECRET-KEY-1... a line; keep it off backup hosts).',
    )

    @field_validator("encryption_recipients", mode="before")
    @classmethod
    def _recipients(cls, value: object) -> object:
        if not isinstance(value, str | list):
            return value  # the field's own type error
        keys = [str(v).strip() for v in (value.split(",") if isinstance(value, str) else value)]
        for key in filter(None, keys):
            if key.upper().startswith("AGE-SECRET-KEY-"):
                raise ValueError(
                    "an identity (a secret key) is not a recipient: give its public key, "
                    "age1... (`age-keygen -y FILE` prints it)"
                )
            try:
                x25519.Recipient.from_str(key)
            except RecipientError:
                raise ValueError(
                    f"{key[:80]!r} is not an age recipient: give X25519 public keys, age1..., "
                    "as age-keygen or `slipway keygen` prints them"
                ) from None
        return [k for k in keys if k]

    @field_validator("encryption_identity")
    @classmethod
    def _identities(cls, value: str | None) -> str | None:
        lines = [x.strip() for x in (value or "").splitlines()]
        for number, line in enumerate(lines, 1):
            if line and not line.startswith("#"):
                try:
                    x25519.Identity.from_str(line)
                except IdentityError:
                    # Never the value: it is a secret.
                    raise ValueError(
                        f"line {number} of the identity is not an age identity "
                        "(AGE-SECRET-KEY-1...): give the key file's contents"
                    ) from None
        return value


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
