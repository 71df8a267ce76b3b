"""Retention planning: hand-computed GFS cases, edge cases and properties over random sets."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest

from tasks.retention import BackupRef, RetentionPlan, RetentionPolicy, plan_retention

NOTHING = RetentionPolicy(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=0)


def _ref(created_at: datetime, verified: bool = True, suffix: str | None = None) -> BackupRef:
    stamp = f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    if suffix is None:
        suffix = f"{zlib.crc32(stamp.encode()) & 0xFFFF:04x}"
    return BackupRef(id=f"{stamp}-{suffix}", created_at=created_at, verified=verified)


def _at(spec: str) -> datetime:
    return datetime.fromisoformat(spec).replace(tzinfo=UTC)


def _kept(plan: RetentionPlan) -> list[tuple[str, tuple[str, ...]]]:
    return [(b.id, reasons) for b, reasons in plan.keep]


def _kept_stamps(plan: RetentionPlan) -> list[tuple[str, tuple[str, ...]]]:
    return [(b.id.split("-")[0], reasons) for b, reasons in plan.keep]


# --- A hand-computed history: 400 days, 2025-10-18 .. 2026-11-21 -----------------------------

SINGLE = (time(2, 0),)
TRIPLE = (time(2, 0), time(10, 0), time(22, 15, 3))
# ISO week 2026-W45 (Mon 2026-11-02 .. Sun 2026-11-08) and 2026-11-19 have no backups.
GAP_DAYS = {date(2026, 11, d) for d in range(2, 9)} | {date(2026, 11, 19)}
TRIPLE_DAYS = {date(2026, 11, 21), date(2026, 11, 18)}
# Backups from 2026-11-10 on are not verified yet, so the newest verified one is 2026-11-09.
VERIFIED_BEFORE = _at("2026-11-10T00:00:00")


def _history() -> list[BackupRef]:
    """Daily backups with gaps (all of 2026-08, every 13th, W45, 11-19), triples on 1st/15th."""
    backups = []
    for offset in range(400):
        day = date(2025, 10, 18) + timedelta(days=offset)
        if (day.year, day.month) == (2026, 8) or day.day == 13 or day in GAP_DAYS:
            continue
        times = TRIPLE if day.day in (1, 15) or day in TRIPLE_DAYS else SINGLE
        for t in times:
            created = datetime.combine(day, t, tzinfo=UTC)
            backups.append(_ref(created, verified=created < VERIFIED_BEFORE))
    return backups


def test_history_generator_is_what_the_expectations_assume() -> None:
    backups = _history()
    # 400 days - 51 gap days = 349 days, 26 of them with 3 backups.
    assert len(backups) == 349 + 2 * 26
    assert backups[-1].id.startswith("20261121T221503Z-")


def test_default_policy_on_history() -> None:
    plan = plan_retention(_history(), RetentionPolicy())

    assert _kept_stamps(plan) == [
        ("20261121T221503Z", ("last 7", "daily 2026-11-21", "weekly 2026-W47", "monthly 2026-11")),
        ("20261121T100000Z", ("last 7",)),
        ("20261121T020000Z", ("last 7",)),
        ("20261120T020000Z", ("last 7", "daily 2026-11-20")),
        ("20261118T221503Z", ("last 7", "daily 2026-11-18")),
        ("20261118T100000Z", ("last 7",)),
        ("20261118T020000Z", ("last 7",)),
        ("20261117T020000Z", ("daily 2026-11-17",)),
        ("20261116T020000Z", ("daily 2026-11-16",)),
        ("20261115T221503Z", ("daily 2026-11-15", "weekly 2026-W46")),
        ("20261114T020000Z", ("daily 2026-11-14",)),
        ("20261109T020000Z", ("newest verified",)),
        # 2026-W45 has no backups, so the fourth week is W43.
        ("20261101T221503Z", ("weekly 2026-W44",)),
        ("20261031T020000Z", ("monthly 2026-10",)),
        ("20261025T020000Z", ("weekly 2026-W43",)),
        ("20260930T020000Z", ("monthly 2026-09",)),
        # 2026-08 has no backups, so the sixth month is 2026-05.
        ("20260731T020000Z", ("monthly 2026-07",)),
        ("20260630T020000Z", ("monthly 2026-06",)),
        ("20260531T020000Z", ("monthly 2026-05",)),
    ]
    assert len(plan.delete) == 401 - 19
    assert plan.delete[0].id.startswith("20261115T100000Z-")
    assert plan.delete[-1].id.startswith("20251018T020000Z-")


def test_monthly_only_on_history_reaches_into_previous_year() -> None:
    policy = RetentionPolicy(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=12, min_keep=0)
    plan = plan_retention(_history(), policy)

    assert _kept_stamps(plan) == [
        ("20261121T221503Z", ("monthly 2026-11",)),
        ("20261109T020000Z", ("newest verified",)),
        ("20261031T020000Z", ("monthly 2026-10",)),
        ("20260930T020000Z", ("monthly 2026-09",)),
        ("20260731T020000Z", ("monthly 2026-07",)),
        ("20260630T020000Z", ("monthly 2026-06",)),
        ("20260531T020000Z", ("monthly 2026-05",)),
        ("20260430T020000Z", ("monthly 2026-04",)),
        ("20260331T020000Z", ("monthly 2026-03",)),
        ("20260228T020000Z", ("monthly 2026-02",)),
        ("20260131T020000Z", ("monthly 2026-01",)),
        ("20251231T020000Z", ("monthly 2025-12",)),
        ("20251130T020000Z", ("monthly 2025-11",)),
    ]


# --- Edge cases --------------------------------------------------------------------------------


def test_empty_input_gives_empty_plan() -> None:
    plan = plan_retention([], RetentionPolicy())
    assert plan == RetentionPlan(keep=(), delete=())
    assert plan.render() == ""


def test_weekly_buckets_use_the_iso_year() -> None:
    backups = [
        _ref(_at("2026-12-28T09:00:00"), verified=False),  # Monday of 2026-W53
        _ref(_at("2026-12-31T09:00:00"), verified=False),
        _ref(_at("2027-01-01T09:00:00"), verified=False),  # still 2026-W53
        _ref(_at("2027-01-04T09:00:00"), verified=False),  # Monday of 2027-W01
    ]
    policy = RetentionPolicy(keep_last=0, keep_daily=0, keep_weekly=2, keep_monthly=2, min_keep=0)
    plan = plan_retention(backups, policy)

    assert _kept_stamps(plan) == [
        ("20270104T090000Z", ("weekly 2027-W01", "monthly 2027-01")),
        ("20270101T090000Z", ("weekly 2026-W53",)),
        ("20261231T090000Z", ("monthly 2026-12",)),
    ]
    assert [b.id[:16] for b in plan.delete] == ["20261228T090000Z"]


def test_buckets_are_utc_days_whatever_the_offset() -> None:
    plus_five = timezone(timedelta(hours=5))
    late = _ref(datetime(2026, 11, 21, 1, 0, tzinfo=plus_five))  # 2026-11-20T20:00Z
    early = _ref(_at("2026-11-20T10:00:00"))
    policy = RetentionPolicy(keep_last=0, keep_daily=2, keep_weekly=0, keep_monthly=0, min_keep=0)
    plan = plan_retention([early, late], policy)

    assert _kept(plan) == [(late.id, ("daily 2026-11-20", "newest verified"))]
    assert plan.delete == (early,)


def test_same_timestamp_is_ordered_by_id() -> None:
    created = _at("2026-11-21T22:15:03")
    a, b = (_ref(created, verified=False, suffix=s) for s in ("3f9a", "3f9b"))
    policy = RetentionPolicy(keep_last=1, keep_daily=1, keep_weekly=0, keep_monthly=0, min_keep=0)

    plan = plan_retention([a, b], policy)

    assert _kept(plan) == [(b.id, ("last 1", "daily 2026-11-21"))]
    assert plan.delete == (a,)


def test_newest_verified_kept_even_when_every_count_is_zero() -> None:
    backups = [
        _ref(_at("2026-11-21T02:00:00"), verified=False),
        _ref(_at("2026-11-20T02:00:00"), verified=True),
        _ref(_at("2026-11-19T02:00:00"), verified=True),
    ]
    plan = plan_retention(backups, NOTHING)

    assert _kept(plan) == [(backups[1].id, ("newest verified",))]
    assert plan.delete == (backups[0], backups[2])


def test_all_zero_counts_without_verified_keep_exactly_min_keep_newest() -> None:
    backups = [
        _ref(_at("2026-11-01T02:00:00") + timedelta(days=i), verified=False) for i in range(6)
    ]
    policy = RetentionPolicy(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=3)

    plan = plan_retention(backups, policy)

    assert _kept_stamps(plan) == [
        ("20261106T020000Z", ("minimum count",)),
        ("20261105T020000Z", ("minimum count",)),
        ("20261104T020000Z", ("minimum count",)),
    ]
    assert plan.delete == tuple(reversed(backups[:3]))


def test_min_keep_counts_the_newest_verified_and_tops_up_with_the_newest() -> None:
    backups = [
        _ref(_at("2026-11-01T02:00:00") + timedelta(days=i), verified=i == 1) for i in range(5)
    ]
    policy = RetentionPolicy(keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=3)

    plan = plan_retention(backups, policy)

    assert _kept_stamps(plan) == [
        ("20261105T020000Z", ("minimum count",)),
        ("20261104T020000Z", ("minimum count",)),
        ("20261102T020000Z", ("newest verified",)),
    ]


def test_min_keep_larger_than_the_set_keeps_everything() -> None:
    backups = [
        _ref(_at("2026-11-01T02:00:00") + timedelta(hours=i), verified=False) for i in range(2)
    ]
    plan = plan_retention(backups, RetentionPolicy(min_keep=10, keep_last=0))

    assert _kept(plan) == [
        (backups[1].id, ("daily 2026-11-01", "weekly 2026-W44", "monthly 2026-11")),
        (backups[0].id, ("minimum count",)),
    ]
    assert plan.delete == ()


def test_render() -> None:
    backups = [
        BackupRef("20261121T221503Z-3f9a", _at("2026-11-21T22:15:03"), verified=False),
        BackupRef("20261121T020000Z-0b1c", _at("2026-11-21T02:00:00"), verified=True),
        BackupRef("20261120T020000Z-77d0", _at("2026-11-20T02:00:00"), verified=True),
    ]
    policy = RetentionPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=0)

    assert plan_retention(backups, policy).render() == (
        "keep  20261121T221503Z-3f9a  last 1\n"
        "keep  20261121T020000Z-0b1c  newest verified\n"
        "delete 20261120T020000Z-77d0"
    )


# --- Invalid input -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f.name for f in fields(RetentionPolicy)])
def test_policy_rejects_negative_counts(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^RetentionPolicy\.{name} must be") as excinfo:
        RetentionPolicy(**{name: -1})
    assert "\n" not in str(excinfo.value)


def test_policy_rejects_bools() -> None:
    with pytest.raises(ValueError, match=r"RetentionPolicy\.min_keep"):
        RetentionPolicy(min_keep=True)


def test_duplicate_ids_are_rejected() -> None:
    first = _ref(_at("2026-11-21T02:00:00"), suffix="3f9a")
    clash = BackupRef(first.id, _at("2026-11-22T02:00:00"), verified=False)
    with pytest.raises(ValueError, match="duplicate backup id '20261121T020000Z-3f9a'"):
        plan_retention([first, clash], RetentionPolicy())


def test_naive_datetimes_are_rejected() -> None:
    aware = _ref(_at("2026-11-21T02:00:00"))
    naive = BackupRef("20261120T020000Z-3f9a", datetime(2026, 11, 20, 2, 0), verified=True)
    with pytest.raises(ValueError, match="'20261120T020000Z-3f9a' has a naive created_at"):
        plan_retention([aware, naive], RetentionPolicy())


# --- Properties over seeded random sets and policies ------------------------------------------

Case = tuple[int, list[BackupRef], RetentionPolicy]


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible test data, not secrets


def _random_case(seed: int) -> Case:
    rng = _rng(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    span_minutes = rng.choice([3, 30, 400, 1100]) * 24 * 60
    verified_share = rng.choice([0.0, 0.1, 0.5, 1.0])
    backups: list[BackupRef] = []
    for i in range(rng.randint(0, rng.choice([0, 3, 10, 60]))):
        if backups and rng.random() < 0.1:
            created = rng.choice(backups).created_at  # a tie, broken by id
        else:
            created = start + timedelta(minutes=rng.randrange(span_minutes))
        backups.append(_ref(created, verified=rng.random() < verified_share, suffix=f"{i:04x}"))
    rng.shuffle(backups)
    policy = RetentionPolicy(**{f.name: rng.randint(0, 8) for f in fields(RetentionPolicy)})
    return seed, backups, policy


CASES = [_random_case(seed) for seed in range(200)]


def _newest_first(backups: list[BackupRef]) -> list[BackupRef]:
    return sorted(backups, key=lambda b: (b.created_at, b.id), reverse=True)


def _day(b: BackupRef) -> str:
    return f"{b.created_at.astimezone(UTC):%Y-%m-%d}"


def _week(b: BackupRef) -> str:
    year, week, _ = b.created_at.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def _month(b: BackupRef) -> str:
    return f"{b.created_at.astimezone(UTC):%Y-%m}"


def _reference_keep_ids(backups: list[BackupRef], policy: RetentionPolicy) -> set[str]:
    """Kept ids by a different route: group into buckets, take the latest N bucket labels."""
    ordered = _newest_first(backups)
    keep = {b.id for b in ordered[: policy.keep_last]}
    rules: list[tuple[int, Callable[[BackupRef], str]]] = [
        (policy.keep_daily, _day),
        (policy.keep_weekly, _week),
        (policy.keep_monthly, _month),
    ]
    for count, label in rules:
        newest_in: dict[str, BackupRef] = {}
        for b in backups:
            current = newest_in.get(label(b))
            if current is None or (b.created_at, b.id) > (current.created_at, current.id):
                newest_in[label(b)] = b
        # Zero-padded labels sort chronologically.
        keep |= {newest_in[bucket].id for bucket in sorted(newest_in, reverse=True)[:count]}
    newest_verified = next((b for b in ordered if b.verified), None)
    if newest_verified is not None:
        keep.add(newest_verified.id)
    for b in ordered:
        if len(keep) >= policy.min_keep:
            break
        keep.add(b.id)
    return keep


def test_random_generator_covers_the_interesting_cases() -> None:
    assert any(not backups for _, backups, _ in CASES)
    assert any(len({b.created_at for b in backups}) < len(backups) for _, backups, _ in CASES)
    assert any(backups and not any(b.verified for b in backups) for _, backups, _ in CASES)
    assert any(p.min_keep > p.keep_last + p.keep_daily for _, _, p in CASES)


def test_keeps_what_a_reference_model_keeps() -> None:
    for seed, backups, policy in CASES:
        kept = {b.id for b, _ in plan_retention(backups, policy).keep}
        assert kept == _reference_keep_ids(backups, policy), seed


def test_every_backup_is_kept_or_deleted_exactly_once_newest_first() -> None:
    for seed, backups, policy in CASES:
        plan = plan_retention(backups, policy)
        kept = [b for b, _ in plan.keep]
        assert sorted(b.id for b in kept + list(plan.delete)) == sorted(b.id for b in backups), seed
        assert kept == [b for b in _newest_first(backups) if b in kept], seed
        assert list(plan.delete) == [b for b in _newest_first(backups) if b not in kept], seed
        assert all(reasons for _, reasons in plan.keep), seed


def test_newest_verified_is_always_kept() -> None:
    for seed, backups, policy in CASES:
        newest_verified = next((b for b in _newest_first(backups) if b.verified), None)
        reasons = dict(plan_retention(backups, policy).keep)
        if newest_verified is None:
            assert not any("newest verified" in r for r in reasons.values()), seed
        else:
            assert "newest verified" in reasons[newest_verified], seed


def test_keeps_at_least_min_keep_and_tops_up_no_further() -> None:
    for seed, backups, policy in CASES:
        plan = plan_retention(backups, policy)
        assert len(plan.keep) >= min(policy.min_keep, len(backups)), seed
        if any("minimum count" in reasons for _, reasons in plan.keep):
            assert len(plan.keep) == min(policy.min_keep, len(backups)), seed


def test_keep_last_keeps_the_newest() -> None:
    for seed, backups, policy in CASES:
        plan = plan_retention(backups, policy)
        last = [b for b, reasons in plan.keep if f"last {policy.keep_last}" in reasons]
        assert last == _newest_first(backups)[: policy.keep_last], seed


def test_daily_keeps_the_newest_of_each_recent_day_once() -> None:
    for seed, backups, policy in CASES:
        plan = plan_retention(backups, policy)
        daily = [(b, r) for b, reasons in plan.keep for r in reasons if r.startswith("daily ")]
        days = [reason.removeprefix("daily ") for _, reason in daily]
        assert len(days) == len(set(days)), seed
        assert len(days) == min(policy.keep_daily, len({_day(b) for b in backups})), seed
        for b, reason in daily:
            assert reason == f"daily {_day(b)}", seed
            assert b == _newest_first([o for o in backups if _day(o) == _day(b)])[0], seed


def test_result_does_not_depend_on_input_order() -> None:
    for seed, backups, policy in CASES:
        shuffled = list(backups)
        _rng(seed).shuffle(shuffled)
        expected = plan_retention(backups, policy)
        assert plan_retention(shuffled, policy) == expected, seed
        assert plan_retention(list(reversed(backups)), policy) == expected, seed
