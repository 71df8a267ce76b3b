"""An environment (production, staging...) as one Prefect block: what releases, backups and
notifications of that environment use, and the policies they follow.

The database, backup store and notifiers are blocks of their own, referenced by name, so
their secrets stay in blocks made for secrets; `slipway env apply FILE.yaml` writes them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from blocks.base import SlipwayBlock, load_named
from blocks.errors import ConfigError
from blocks.input_checks import check_environment_name
from blocks.rollout import HealthCheck, TargetSettings

if TYPE_CHECKING:
    from blocks.notifiers import NotifierBlock
    from blocks.object_storage import ObjectStorage
    from blocks.postgres import PostgresDatabase


class BucketBackup(BaseModel):
    """One of the app's buckets in the nightly backup."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="The app's bucket: s3://bucket/prefix.")
    mode: Literal["mirror", "snapshot"] = Field(
        default="mirror",
        description="mirror: incremental copy into the store's mirrors/<name>/; "
        "snapshot: one tar + zstd archive per night under buckets/<name>/, with retention.",
    )
    name: str | None = Field(default=None, description="Folder in the store (default: bucket).")
    source_block: str | None = Field(
        default=None, description="ObjectStorage block of the app's storage (default: env)."
    )
    delete: bool = Field(default=False, description="mirror: also remove what the app deleted.")


class MigrationSettings(BaseModel):
    """How the app's Prisma migrations are applied."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["native", "cli", "none"] = Field(
        default="native",
        description="native: Slipway applies prisma/migrations itself (no Node needed); "
        "cli: `npx prisma migrate deploy` in the app's directory; none: the app has none.",
    )
    directory: Path = Field(
        default=Path("prisma/migrations"),
        description="The migrations folder; `{version}` in it stands for the version being "
        "released, e.g. /srv/app/releases/{version}/prisma/migrations.",
    )
    schema_path: Path | None = Field(
        default=None, description="cli mode: the app's schema.prisma (--schema)."
    )
    app_directory: Path | None = Field(
        default=None, description="cli mode: where `npx prisma` runs (has node_modules)."
    )
    stop_app: bool = Field(
        default=True,
        description="Stop the app's services while migrations run, as the runbook does "
        "(then a failed release restores the pre-release backup by default).",
    )


class ReleasePolicy(BaseModel):
    """What releases, rollbacks and restores of this environment may do on their own."""

    model_config = ConfigDict(extra="forbid")

    max_backup_age_hours: float = Field(
        default=24.0,
        gt=0,
        description="Preflight: a verified backup at most this old, else one is taken now.",
    )
    database_rollback: Literal["restore", "never", "ask"] = Field(
        default="restore",
        description="After migrations ran, a rollback restores the pre-release backup "
        "(restore; only when the app was stopped during the migration), never does, "
        "or waits for a person's approval (ask).",
    )
    approve_rollback: bool = Field(
        default=False, description="A manual rollback waits for approval in the Prefect UI."
    )
    approve_restore: bool = Field(
        default=False, description="A restore into this environment waits for approval."
    )
    approval_timeout_minutes: float = Field(
        default=60,
        gt=0,
        description="How long an approval is awaited; no answer counts as a refusal.",
    )
    min_free_disk_mb: int = Field(
        default=1024, ge=0, description="Preflight: free space needed on the release machine."
    )
    lock_wait_seconds: float = Field(
        default=0,
        ge=0,
        description="How long a release waits for the environment's lock (0: refuse at once).",
    )


class Environment(SlipwayBlock):
    """One environment: database, backup store, rollout target, checks, notifiers, policies."""

    _block_type_name = "Slipway Environment"
    _block_type_slug = "slipway-environment"
    _description = "An environment Slipway releases to and backs up (production, staging...)."

    database_block: str = Field(description="Name of its PostgresDatabase block.")
    store_block: str = Field(description="Name of its ObjectStorage block (backups, journal).")
    target: TargetSettings = Field(
        description="Where the app runs, chosen by kind (compose: a docker compose project)."
    )
    health_checks: list[HealthCheck] = Field(
        default_factory=list,
        description="Checks of the whole app after the rollout, e.g. its public URL with "
        "version_field so that the new version is the one answering.",
    )
    migrations: MigrationSettings = Field(default_factory=MigrationSettings)
    policy: ReleasePolicy = Field(default_factory=ReleasePolicy)
    slack_block: str | None = Field(default=None, description="Name of a SlackNotifier block.")
    telegram_block: str | None = Field(
        default=None, description="Name of a TelegramNotifier block."
    )
    buckets: list[BucketBackup] = Field(
        default_factory=list, description="The app's buckets in the nightly backup."
    )

    @classmethod
    def resolve(cls, block_name: str | None) -> Self:
        if not block_name:
            raise ConfigError("no environment given: pass --env NAME (see `slipway env apply`)")
        return super().resolve(check_environment_name(block_name))

    @property
    def block_name(self) -> str:
        """The name this environment was loaded by: what its lock and journal are keyed on."""
        if not self._block_document_name:
            raise ConfigError("this environment is not a saved block: save it, then use its name")
        return self._block_document_name

    def database(self) -> PostgresDatabase:
        from blocks.postgres import PostgresDatabase

        return PostgresDatabase.resolve(self.database_block)

    def store(self) -> ObjectStorage:
        from blocks.object_storage import ObjectStorage

        return ObjectStorage.resolve(self.store_block)

    def notifiers(self) -> list[NotifierBlock]:
        from blocks.notifiers import SlackNotifier, TelegramNotifier

        found: list[NotifierBlock] = []
        if self.slack_block:
            found.append(load_named(SlackNotifier, self.slack_block))
        if self.telegram_block:
            found.append(load_named(TelegramNotifier, self.telegram_block))
        return found
