"""Bucket snapshots: take one, verify one, prune old ones."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from blocks.errors import SlipwayError
from blocks.object_storage import ObjectStorage
from flows.mirror import resolve_location
from flows.progress import ProgressArtifact
from tasks.crypto.keys import backup_recipients
from tasks.notify import HOOKS
from tasks.postgres.catalog import VERIFICATION, Verification, new_backup_id, utcnow, write_json
from tasks.retention import BackupRef, RetentionPolicy, plan_retention
from tasks.storage.endpoint_identity import store_inside
from tasks.storage.locations import S3Location
from tasks.storage.s3 import delete_prefix
from tasks.storage.snapshot import (
    SnapshotManifest,
    find_snapshot,
    list_snapshots,
    snapshot_folder,
    snapshot_to_store,
)
from tasks.storage.snapshot_restore import verify_archive


def snapshot_name(source: str) -> str:
    """The store folder for a source: its bucket, or directory, name."""
    ref = source.rstrip("/")
    if ref.startswith("s3://"):
        bucket, _, prefix = ref[5:].partition("/")
        return bucket + ("--" + prefix.replace("/", "--") if prefix else "")
    return ref.rsplit("/", 1)[-1] or "root"


def snapshot_report(m: SnapshotManifest) -> str:
    ratio = m.object_bytes / m.archive.size if m.archive.size else 0.0
    return "\n".join(
        [
            f"# Snapshot `{m.id}` of `{m.name}`",
            "",
            "| | |",
            "|---|---|",
            f"| source | `{m.source}` |",
            f"| objects | {m.object_count:,} ({m.object_bytes / 1048576:,.1f} MiB) |",
            f"| archive | {m.archive.size / 1048576:,.1f} MiB (zstd -{m.compression_level}, "
            f"ratio {ratio:.2f}) |",
            f"| duration | {m.duration_seconds:.1f} s |",
            f"| encryption | {'age, to ' + ', '.join(m.recipients) if m.encrypted else 'none'} |",
            f"| sha256 | `{m.archive.sha256}` |",
            *(["", "## Skipped (not in the snapshot)", ""] if m.skipped else []),
            *[f"- {line}" for line in m.skipped[:200]],
        ]
    )


@flow(name="snapshot-bucket", **HOOKS)
def snapshot_bucket(
    source: str,
    name: str | None = None,
    level: int = 3,
    source_block: str | None = None,
    store_block: str | None = None,
) -> dict[str, Any]:
    """Archive a bucket or prefix (s3://bucket/prefix, or a directory) into the backup store.

    name: the store folder (default: the bucket name). The archive is tar + zstd with a
    manifest of keys, sizes and sha256, written last.
    """
    src = resolve_location(source, source_block, "SLIPWAY_SOURCE_", "source")
    store = ObjectStorage.resolve(store_block)
    recipients = backup_recipients(store)  # a bad recipient fails before anything is read
    src.check(must_exist=True)
    if isinstance(src, S3Location) and store_inside(src, store):
        raise SlipwayError(
            f"the backup store {store.url()} lies inside {src.describe()}: snapshot a prefix "
            "outside it, or keep backups in another bucket"
        )
    name = name or snapshot_name(source)
    with ProgressArtifact("snapshot-progress", f"snapshot of {source}") as progress:
        manifest = snapshot_to_store(
            src,
            store,
            name,
            new_backup_id(),
            level=level,
            recipients=recipients,
            on_progress=progress.record,
        )
    create_markdown_artifact(snapshot_report(manifest), key="snapshot-report")
    if manifest.skipped:
        logger = get_run_logger()
        for line in manifest.skipped:
            logger.warning("skipped %s", line)
        raise SlipwayError(
            f"snapshot {name}@{manifest.id} was written without {len(manifest.skipped)} "
            f"source entries; first: {manifest.skipped[0]}"
        )
    return manifest.model_dump(mode="json", exclude={"objects"})


@flow(name="verify-snapshot", **HOOKS)
def verify_snapshot(name: str, snapshot: str = "latest", store_block: str | None = None) -> bool:
    """Re-read a snapshot's archive and check size and sha256; the outcome is stored."""
    store = ObjectStorage.resolve(store_block)
    entry = find_snapshot(store, name, snapshot)
    ok, detail = True, "size and sha256 match the manifest"
    try:
        verify_archive(store, entry.manifest)
    except Exception as exc:
        ok, detail = False, str(exc)
    folder = snapshot_folder(store, name, entry.manifest.id)
    record = Verification(
        backup_id=entry.manifest.id, verified_at=utcnow(), ok=ok, drill=False, detail=detail
    )
    write_json(store.client(), store, f"{folder}/{VERIFICATION}", record)
    if not ok:
        raise SlipwayError(detail)
    return ok


@flow(name="prune-snapshots", **HOOKS)
def prune_snapshots(
    name: str,
    dry_run: bool = False,
    retention: RetentionPolicy = RetentionPolicy(),  # noqa: B008 - frozen, so shared safely
    store_block: str | None = None,
) -> dict[str, Any]:
    """Retention for a bucket's snapshots, with the same rules as the database backups."""
    store = ObjectStorage.resolve(store_block)
    entries = {e.manifest.id: e for e in list_snapshots(store, name)}
    plan = plan_retention(
        [BackupRef(i, e.manifest.created_at, e.verified) for i, e in entries.items()], retention
    )
    get_run_logger().info("snapshot retention plan for %s:\n%s", name, plan.render())
    if not dry_run:
        client = store.client()
        for ref in plan.delete:
            delete_prefix(client, store, snapshot_folder(store, name, ref.id))
    create_table_artifact(
        [
            {
                "id": ref.id,
                "objects": entries[ref.id].manifest.object_count,
                "why kept": ", ".join(r),
            }
            for ref, r in plan.keep
        ],
        key="snapshots-kept",
        description=f"Snapshots of {name} kept by retention",
    )
    return {"keep": [ref.id for ref, _ in plan.keep], "delete": [ref.id for ref in plan.delete]}
