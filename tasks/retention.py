"""Which backups to keep: grandfather-father-son retention, like restic/borg `forget`.

Pure logic, no I/O: `plan_retention` turns a list of backups and a `RetentionPolicy` into a
`RetentionPlan` that says, for every backup, whether to keep it and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups each rule keeps; a backup kept by any rule is kept."""

    keep_last: int = 7  # the N newest backups
    keep_daily: int = 7  # newest backup of each of the N most recent UTC days that have backups
    keep_weekly: int = 4  # newest backup of each of the N most recent ISO weeks that have backups
    keep_monthly: int = 6  # newest backup of each of the N most recent months that have backups
    min_keep: int = 3  # never keep fewer than this many (fill with the newest not yet kept)

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            # bool is an int subclass, but `keep_last: true` in a config is a mistake.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"RetentionPolicy.{field.name} must be a non-negative integer, got {value!r}"
                )


@dataclass(frozen=True)
class BackupRef:
    """One existing backup, as far as retention is concerned."""

    id: str  # sortable id like "20261121T221503Z-3f9a"
    created_at: datetime  # timezone-aware UTC
    verified: bool


@dataclass(frozen=True)
class RetentionPlan:
    """Every backup exactly once: kept (with the reasons why) or deleted, newest first."""

    keep: tuple[tuple[BackupRef, tuple[str, ...]], ...]
    delete: tuple[BackupRef, ...]

    def render(self) -> str:
        """One line per backup, newest first: `keep  <id>  <reasons>` or `delete <id>`."""
        lines = [(b, f"keep  {b.id}  {', '.join(reasons)}") for b, reasons in self.keep]
        lines += [(b, f"delete {b.id}") for b in self.delete]
        lines.sort(key=lambda line: _newest_first_key(line[0]), reverse=True)
        return "\n".join(text for _, text in lines)


def _newest_first_key(backup: BackupRef) -> tuple[datetime, str]:
    return backup.created_at, backup.id


def _day(utc: datetime) -> str:
    return f"{utc:%Y-%m-%d}"


def _iso_week(utc: datetime) -> str:
    # The ISO year, not the calendar one: 2027-01-01 belongs to 2026-W53.
    year, week, _ = utc.isocalendar()
    return f"{year}-W{week:02d}"


def _month(utc: datetime) -> str:
    return f"{utc:%Y-%m}"


def plan_retention(backups: Sequence[BackupRef], policy: RetentionPolicy) -> RetentionPlan:
    """Decide which backups to keep under `policy`; the result does not depend on input order.

    Raises ValueError for duplicate ids or naive `created_at` datetimes.
    """
    _validate(backups)
    ordered = sorted(backups, key=_newest_first_key, reverse=True)
    reasons: dict[str, list[str]] = {b.id: [] for b in ordered}

    for backup in ordered[: policy.keep_last]:
        reasons[backup.id].append(f"last {policy.keep_last}")

    bucket_rules: tuple[tuple[str, int, Callable[[datetime], str]], ...] = (
        ("daily", policy.keep_daily, _day),
        ("weekly", policy.keep_weekly, _iso_week),
        ("monthly", policy.keep_monthly, _month),
    )
    for name, count, bucket_of in bucket_rules:
        seen: set[str] = set()
        # Newest first, buckets only move back in time: the first backup seen in a bucket is its
        # newest, and the first `count` buckets seen are the most recent ones.
        for backup in ordered:
            if len(seen) >= count:
                break
            bucket = bucket_of(backup.created_at.astimezone(UTC))
            if bucket not in seen:
                seen.add(bucket)
                reasons[backup.id].append(f"{name} {bucket}")

    newest_verified = next((b for b in ordered if b.verified), None)
    if newest_verified is not None:
        reasons[newest_verified.id].append("newest verified")

    kept = sum(1 for b in ordered if reasons[b.id])
    for backup in ordered:
        if kept >= policy.min_keep:
            break
        if not reasons[backup.id]:
            reasons[backup.id].append("minimum count")
            kept += 1

    return RetentionPlan(
        keep=tuple((b, tuple(reasons[b.id])) for b in ordered if reasons[b.id]),
        delete=tuple(b for b in ordered if not reasons[b.id]),
    )


def _validate(backups: Sequence[BackupRef]) -> None:
    seen: set[str] = set()
    for backup in backups:
        if backup.id in seen:
            raise ValueError(f"duplicate backup id {backup.id!r}")
        seen.add(backup.id)
        if backup.created_at.utcoffset() is None:
            raise ValueError(f"backup {backup.id!r} has a naive created_at {backup.created_at}")
