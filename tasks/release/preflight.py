"""Preflight checks before a release (the runbook's pre-update checklist), all run, all reported.

Each check has a name a person can pass to skip it (`--skip-check disk`); a skipped check is
recorded in the journal and the report. Any failure stops the release before it changes
anything, with every failed check in one line.
"""

from __future__ import annotations

import contextvars
import functools
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from blocks.environment import Environment
from blocks.errors import SlipwayError
from blocks.object_storage import ObjectStorage
from blocks.postgres import PostgresDatabase
from tasks.postgres import connection as pg
from tasks.postgres.catalog import list_backups, utcnow
from tasks.prisma import MigrationStatus, migration_status
from tasks.rollout.base import RolloutTarget

CHECKS = ("disk", "database", "tools", "target", "migrations", "backup")


class PreflightFailed(SlipwayError):
    """One or more preflight checks failed; nothing was changed."""


@dataclass
class Preflight:
    """What preflight found: one line per check, and what the release needs from it."""

    lines: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    migrations: MigrationStatus | None = None
    recent_backup: str | None = None

    @property
    def pending(self) -> list[str]:
        return list(self.migrations.pending) if self.migrations else []


def migrations_dir(environment: Environment, version: str) -> Path:
    """The version's migrations folder: `{version}` in the setting stands for the version."""
    settings = environment.migrations
    directory = Path(str(settings.directory).replace("{version}", version))
    if settings.mode == "cli" and settings.app_directory and not directory.is_absolute():
        return settings.app_directory / directory
    return directory


def run_preflight(
    environment: Environment,
    db: PostgresDatabase,
    store: ObjectStorage,
    target: RolloutTarget,
    version: str,
    skip: list[str],
    flags: dict[str, str] | None = None,
) -> Preflight:
    """Run every check not skipped; raise `PreflightFailed` naming each failure."""
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise PreflightFailed(
            f"unknown check(s) to skip: {', '.join(unknown)}; checks are {', '.join(CHECKS)}"
        )
    if flags and not getattr(environment.target, "flags_configmap", None):
        raise PreflightFailed(
            f"flags given ({', '.join(flags)}) but this environment's target has no flags "
            "ConfigMap: set flags_configmap (kubernetes targets), or drop --flag"
        )
    found = Preflight(skipped=sorted(skip))
    policy = environment.policy

    def disk() -> str:
        free_mb = shutil.disk_usage(Path.cwd()).free // (1024 * 1024)
        if free_mb < policy.min_free_disk_mb:
            raise SlipwayError(
                f"{free_mb} MiB free here, {policy.min_free_disk_mb} MiB needed: free some space"
            )
        return f"{free_mb} MiB free"

    server_lock = threading.Lock()

    @functools.cache
    def _server() -> tuple[str, int]:
        with pg.connect(db) as conn:
            return pg.server_version(conn), pg.server_major(conn)

    def server() -> tuple[str, int]:
        with server_lock:  # asked by two checks at once: one connection
            return _server()

    def database() -> str:
        return f"{db.display()} answers (PostgreSQL {server()[0]})"

    def tools() -> str:
        found = [str(pg.pg_tool(name, server()[1])) for name in ("pg_dump", "pg_restore")]
        if environment.migrations.mode == "cli":
            if not shutil.which("npx"):
                raise SlipwayError("npx not found: install Node.js, or use migrations mode native")
            found.append("npx")
        return ", ".join(found)

    def target_check() -> str:
        report = target.preflight(version)
        return f"{report.target}: " + "; ".join(report.checks)

    def migrations() -> str:
        if environment.migrations.mode == "none":
            return "the app has no migrations"
        status = migration_status(db, migrations_dir(environment, version))
        found.migrations = status
        if status.failed:
            raise SlipwayError(
                f"migration {status.failed[0]} failed earlier and blocks deploys (P3009): fix the "
                f"database, then `slipway migrate resolve --rolled-back {status.failed[0]}`"
            )
        text = f"{len(status.pending)} pending" + (
            f": {', '.join(status.pending)}" if status.pending else ""
        )
        if status.modified:
            text += f"; WARNING edited after being applied: {', '.join(status.modified)}"
        return text

    def backup() -> str:
        limit = timedelta(hours=policy.max_backup_age_hours)
        for entry in list_backups(store.client(), store, db.database):
            age = utcnow() - entry.manifest.created_at
            if entry.verified and age <= limit:
                found.recent_backup = entry.manifest.id
                hours = age.total_seconds() / 3600
                return f"verified backup {entry.manifest.id} is {hours:.1f} h old"
        return (
            f"no verified backup younger than {policy.max_backup_age_hours:g} h: "
            "the pre-release backup is verified before anything changes"
        )

    checks: dict[str, Callable[[], str]] = {
        "disk": disk,
        "database": database,
        "tools": tools,
        "target": target_check,
        "migrations": migrations,
        "backup": backup,
    }
    # The checks wait on different systems (a compose process alone takes about a second
    # with Compose v1): they run side by side, each in a copy of the run's context (its
    # logger), and are reported in their fixed order.
    with ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="preflight") as pool:
        running = {
            name: pool.submit(contextvars.copy_context().run, check)
            for name, check in checks.items()
            if name not in skip
        }
        for name in checks:
            if name not in running:
                found.lines[name] = "SKIPPED by request"
                continue
            try:
                found.lines[name] = running[name].result()
            except SlipwayError as exc:
                found.failures[name] = str(exc)
                found.lines[name] = f"FAILED: {exc}"
    if found.failures:
        raise PreflightFailed(
            f"preflight of {version} failed, nothing changed: "
            + "; ".join(f"{k}: {v}" for k, v in found.failures.items())
        )
    return found
