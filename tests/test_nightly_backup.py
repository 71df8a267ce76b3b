"""The nightly flow (backup, verify, prune) and retention against real backups, in-process."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest

from blocks.environment import BucketBackup
from blocks.errors import SlipwayError
from flows.backup import backup_database
from flows.nightly import nightly_backup
from flows.prune import prune_backups
from flows.snapshot import prune_snapshots, verify_snapshot
from flows.verify import verify_backup
from tasks.postgres.catalog import new_backup_id, utcnow
from tasks.retention import RetentionPolicy
from tasks.storage.locations import S3Location
from tasks.storage.snapshot import list_snapshots, snapshot_to_store
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.s3 import S3Info
from tests.pg_fixtures import create_database

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]


@pytest.fixture
def configured(
    postgres: PostgresInfo, s3: S3Info, prefect_server: PrefectInfo, monkeypatch: pytest.MonkeyPatch
) -> str:
    bucket = f"nightly-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=bucket)
    database = create_database(postgres)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATABASE_URL", postgres.url_without_password(database))
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    monkeypatch.setenv("SLIPWAY_BACKUP_URL", f"s3://{bucket}/db")
    return bucket


def test_nightly_backs_up_verifies_prunes_and_reports(
    configured: str, prefect_server: PrefectInfo
) -> None:
    result = nightly_backup(drill=True)
    backup_id = result["backup"]["id"]
    assert result["verification"]["ok"] is True
    assert result["verification"]["backup_id"] == backup_id
    assert [k["id"] for k in result["prune"]["keep"]] == [backup_id]
    # Newest first and by key: the session's other tests leave many more artifacts.
    wanted = ["backup-report", "backup-verification", "backups-kept", "backup-progress"]
    artifacts = httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={"artifacts": {"key": {"any_": wanted}}, "sort": "CREATED_DESC", "limit": 50},
    ).json()
    assert set(wanted) <= {a["key"] for a in artifacts}
    report = next(a for a in artifacts if a["key"] == "backup-report" and backup_id in a["data"])
    progress = httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={
            "artifacts": {
                "key": {"any_": ["backup-progress"]},
                "flow_run_id": {"any_": [report["flow_run_id"]]},
            }
        },
    ).json()
    assert [float(a["data"]) for a in progress] == [100.0]
    assert "compression ratio" in report["data"]


def test_prune_keeps_newest_verified_and_minimum(configured: str) -> None:
    ids = [backup_database()["id"] for _ in range(4)]
    verify_backup(ids[1])  # an older backup is the only verified one
    only_last = RetentionPolicy(
        keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=1
    )
    dry = prune_backups(dry_run=True, retention=only_last)
    assert sorted(k["id"] for k in dry["keep"]) == sorted([ids[3], ids[1]])
    assert sorted(dry["delete"]) == sorted([ids[0], ids[2]])
    # A dry run deletes nothing.
    again = prune_backups(dry_run=True, retention=only_last)
    assert again["delete"] == dry["delete"]

    done = prune_backups(retention=replace(only_last, min_keep=3))
    kept = sorted(k["id"] for k in done["keep"])
    assert kept == sorted([ids[3], ids[2], ids[1]])  # minimum count tops up with the newest
    left = prune_backups(dry_run=True, retention=RetentionPolicy(keep_last=10))
    assert sorted(k["id"] for k in left["keep"]) == kept
    # A run started from Prefect's UI or API gives the policy as JSON; the rest are defaults.
    as_json = prune_backups(dry_run=True, retention={"keep_last": 10})  # type: ignore[call-overload]
    assert as_json["plan"] == left["plan"]


def test_nightly_backs_up_buckets_in_parallel_and_names_the_failed_part(
    configured: str, s3: S3Info, prefect_server: PrefectInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3.client()
    files, media = f"files-{secrets.token_hex(3)}", f"media-{secrets.token_hex(3)}"
    for bucket in (files, media):
        client.create_bucket(Bucket=bucket)
        for i in range(3):
            client.put_object(Bucket=bucket, Key=f"up/{i}.txt", Body=f"{bucket} {i}".encode())
    for key, value in s3.env("SLIPWAY_SOURCE_").items():
        monkeypatch.setenv(key, value)
    missing = f"missing-{secrets.token_hex(3)}"
    buckets = [
        BucketBackup(source=f"s3://{files}"),
        BucketBackup(source=f"s3://{media}/up", mode="snapshot", name="media"),
        BucketBackup(source=f"s3://{missing}"),
    ]

    with pytest.raises(SlipwayError, match=rf"1 of 4 parts failed: mirror s3://{missing}: bucket"):
        nightly_backup(buckets=buckets)

    # The other parts completed: a database backup, the mirror, the snapshot.
    listing = client.list_objects_v2(Bucket=configured)
    keys = {o["Key"] for o in listing.get("Contents", [])}
    assert {f"db/mirrors/{files}/up/{i}.txt" for i in range(3)} <= keys
    assert any(k.startswith("db/postgres/") and k.endswith("/manifest.json") for k in keys)
    assert any(k.startswith("db/buckets/media/") and k.endswith("/manifest.json") for k in keys)
    artifacts = httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["nightly-report"]}}, "sort": "CREATED_DESC"},
    ).json()
    report = [a["data"] for a in artifacts]
    assert any(f"mirror s3://{missing} | FAILED" in r for r in report)

    # Without the missing bucket the night succeeds; the mirror has nothing new to copy.
    result = nightly_backup(buckets=buckets[:2])
    mirrored = result["buckets"][f"mirror s3://{files}"]
    assert mirrored["copied"] == 0
    assert mirrored["unchanged"] == 3
    assert result["buckets"][f"snapshot s3://{media}/up"]["snapshot"]["object_count"] == 3


def test_snapshot_retention_keeps_the_newest_verified(configured: str, s3: S3Info) -> None:
    app = f"app-{secrets.token_hex(3)}"
    s3.client().create_bucket(Bucket=app)
    s3.client().put_object(Bucket=app, Key="f.txt", Body=b"f")
    store = s3.storage(configured, "db")
    now = utcnow()  # ids an hour apart, oldest first (ids carry their time)
    ids = [
        snapshot_to_store(
            S3Location(s3.storage(app)), store, "app", new_backup_id(now - timedelta(hours=3 - i))
        ).id
        for i in range(3)
    ]
    assert verify_snapshot("app", ids[0]) is True  # only the oldest is verified
    only_last = RetentionPolicy(
        keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=1
    )
    pruned = prune_snapshots("app", retention=only_last)
    assert sorted(pruned["keep"]) == sorted([ids[2], ids[0]])
    assert pruned["delete"] == [ids[1]]
    assert sorted(e.manifest.id for e in list_snapshots(store, "app")) == sorted([ids[0], ids[2]])
