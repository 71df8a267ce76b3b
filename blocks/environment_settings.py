"""An environment's plain settings: its buckets, migrations and release policy.

Without Prefect, so that `slipway env apply` checks a whole file before Prefect is
imported; the `Environment` block (blocks/environment.py) holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
