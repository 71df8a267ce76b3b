"""What the migration engine reads and reports: rows, status, deploy report, checksums."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field

from blocks.errors import ConfigError, SlipwayError


class MigrationRow(BaseModel):
    """One row of `_prisma_migrations`: one attempt at one migration."""

    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int


class MigrationStatus(BaseModel):
    """The migrations folder against the database, as `prisma migrate status` sees them."""

    database: str
    migrations_dir: str
    has_migrations_table: bool
    local: list[str] = Field(description="Migration folders, in the order they apply.")
    applied: list[str] = Field(description="Applied (finished, not rolled back), in order.")
    pending: list[str] = Field(description="Local migrations not applied yet.")
    failed: list[str] = Field(description="Unfinished and not rolled back: block deploys.")
    failed_logs: dict[str, str] = Field(description="The recorded logs of each failed one.")
    modified: list[str] = Field(description="Edited after being applied (checksum mismatch).")
    missing_locally: list[str] = Field(description="In the database, not in the folder.")

    @property
    def ok(self) -> bool:
        """Up to date: nothing pending, failed, edited or missing locally."""
        return not (self.pending or self.failed or self.modified or self.missing_locally)

    def summary(self) -> str:
        """Readable lines, `migrate status` style."""
        lines = [
            f"{self.database}: {len(self.local)} migration(s) in {self.migrations_dir}, "
            f"{len(self.applied)} applied"
        ]

        def section(title: str, names: list[str], notes: dict[str, str] | None = None) -> None:
            if names:
                lines.append(f"{title} ({len(names)}):")
                for name in names:
                    note = (notes or {}).get(name)
                    lines.append(f"  {name}" + (f"  -- {note}" if note else ""))

        section("Not yet applied", self.pending)
        errors = {name: database_error_line(logs) for name, logs in self.failed_logs.items()}
        section("Failed, blocking deploys (P3009)", self.failed, errors)
        if self.failed:
            lines.append(
                "  fix the database, then `slipway migrate resolve --rolled-back NAME` "
                "(or `--applied NAME` if you completed it by hand)"
            )
        section("Edited after being applied (checksum mismatch)", self.modified)
        section("Applied to the database but missing locally", self.missing_locally)
        if self.ok:
            lines.append("Database schema is up to date!")
        return "\n".join(lines)


class DeployReport(BaseModel):
    """What a deploy applied, or with dry_run what it would apply."""

    database: str
    dry_run: bool = False
    applied: list[str] = Field(default_factory=list)
    durations: dict[str, float] = Field(
        default_factory=dict, description="Seconds each applied migration took."
    )
    sql: dict[str, str] = Field(
        default_factory=dict, description="Dry run: each pending migration's SQL, in order."
    )
    warnings: list[str] = Field(default_factory=list)


class MigrationFailed(SlipwayError):
    """A migration failed (P3018), or an earlier failure blocks deploys (P3009)."""

    def __init__(self, message: str, migration: str = "", logs: str = "", code: str = "") -> None:
        super().__init__(message)
        self.migration = migration
        self.logs = logs
        self.code = code


@dataclass(frozen=True)
class LocalMigration:
    """A migration folder: its name and its migration.sql."""

    name: str
    script: bytes

    @property
    def checksum(self) -> str:
        return checksum(self.script)

    def text(self) -> str:
        try:
            return self.script.decode()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"migration {self.name}: migration.sql is not UTF-8 (byte {exc.start}): "
                "save it as UTF-8"
            ) from None


def checksum(script: bytes) -> str:
    """Prisma's checksum of a migration script: sha256, lowercase hex."""
    return hashlib.sha256(script).hexdigest()


def checksum_matches(script: bytes, recorded: str) -> bool:
    """Prisma's comparison: LF and CRLF versions match, and so do old unpadded checksums."""
    for variant in (script, script.replace(b"\r\n", b"\n"), script.replace(b"\n", b"\r\n")):
        digest = hashlib.sha256(variant).digest()
        if recorded and len(recorded) != 64:  # before prisma-engines#1887: bytes not zero-padded
            rendered = "".join(f"{byte:x}" for byte in digest)
        else:
            rendered = digest.hex()
        if rendered == recorded:
            return True
    return False


def schema_from_url(url: str) -> str | None:
    """The `?schema=` of a Prisma database URL; None leaves the search_path (normally public)."""
    values = parse_qs(urlsplit(url).query).get("schema")
    return values[0] if values and values[0] else None


def database_error_line(logs: str) -> str:
    """The first line of the database error in Prisma-style logs (else their first line)."""
    lines = logs.strip().splitlines()
    if "Database error:" in lines:
        after = lines[lines.index("Database error:") + 1 :]
        if after:
            return after[0]
    return lines[0] if lines else ""
