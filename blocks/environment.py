"""An environment (production, staging...) as one Prefect block: what releases, backups and
notifications of that environment use, and the policies they follow.

The database, backup store and notifiers are blocks of their own, referenced by name, so
their secrets stay in blocks made for secrets; `slipway env apply FILE.yaml` writes them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from pydantic import Field

from blocks.base import SlipwayBlock, load_named
from blocks.environment_settings import BucketBackup as BucketBackup
from blocks.environment_settings import MigrationSettings as MigrationSettings
from blocks.environment_settings import ReleasePolicy as ReleasePolicy
from blocks.errors import ConfigError
from blocks.input_checks import check_environment_name
from blocks.rollout import HealthCheck, TargetSettings

if TYPE_CHECKING:
    from blocks.notifiers import NotifierBlock
    from blocks.object_storage import ObjectStorage
    from blocks.postgres import PostgresDatabase


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
    migrations: MigrationSettings = Field(
        default_factory=MigrationSettings, description="How the Prisma migrations are applied."
    )
    policy: ReleasePolicy = Field(
        default_factory=ReleasePolicy,
        description="What releases, rollbacks and restores may do on their own.",
    )
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
