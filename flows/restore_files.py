"""Put files back: from a mirror or a snapshot into a bucket (all of it, or a prefix)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from blocks.config_check import is_snapshot_ref
from blocks.errors import SlipwayError
from blocks.object_storage import ObjectStorage
from flows.mirror import resolve_location
from flows.progress import ProgressArtifact
from tasks.crypto.keys import identities_for
from tasks.notify import HOOKS
from tasks.storage.locations import S3Location
from tasks.storage.mirror import plan_mirror, run_copies
from tasks.storage.snapshot import find_snapshot
from tasks.storage.snapshot_restore import restore_snapshot


@flow(name="restore-files", **HOOKS)
def restore_files(
    source: str,
    destination: str,
    prefix: str = "",
    mirror_block: str | None = None,
    destination_block: str | None = None,
    store_block: str | None = None,
) -> dict[str, Any]:
    """Restore objects from a mirror (s3://bucket/prefix or a path) or a snapshot (NAME@ID,
    NAME@latest) into the destination (the app's bucket: SLIPWAY_SOURCE_* or
    destination_block). Each object is checked against its recorded checksum; only the
    objects under `prefix` when given. Objects not in the backup are left alone.
    """
    dst = resolve_location(destination, destination_block, "SLIPWAY_SOURCE_", "destination")
    dst.check(must_exist=isinstance(dst, S3Location))
    with ProgressArtifact("restore-files-progress", f"restore {source} -> {destination}") as p:
        if is_snapshot_ref(source):
            name, _, ref = source.partition("@")
            store = ObjectStorage.resolve(store_block)
            entry = find_snapshot(store, name, ref or "latest")
            m = entry.manifest
            # Read here, never a parameter; a missing or wrong key fails before any write.
            identities = (
                identities_for(f"snapshot {name}@{m.id}", m.recipients, store)
                if m.encrypted
                else []
            )
            objects, size = restore_snapshot(
                store, m, dst, prefix=prefix, identities=identities, on_progress=p.record
            )
            origin = f"snapshot {name}@{entry.manifest.id}"
        else:
            src = resolve_location(source, mirror_block, "AWS_", "mirror")
            src.check(must_exist=True)
            plan, _ = plan_mirror(src, dst, delete=False)
            todo = [a for a in plan.copy if a.key.startswith(prefix)]
            objects, size, failures = run_copies(
                src,
                dst,
                todo,
                stamp=False,
                on_progress=p.record,
            )
            if failures:
                raise SlipwayError(
                    f"restore into {dst.describe()}: {len(failures)} objects failed, first: "
                    f"{failures[0]}; run it again"
                )
            if skipped := [a for a in plan.skipped if a.key.startswith(prefix)]:
                raise SlipwayError(
                    f"restore into {dst.describe()}: {len(skipped)} objects were skipped, the "
                    f"others restored; first: {skipped[0].line()}"
                )
            origin = f"mirror {src.describe()}"
    summary = {
        "source": origin,
        "destination": dst.describe(),
        "prefix": prefix,
        "restored": objects,
        "restored_bytes": size,
    }
    create_markdown_artifact(
        f"# Files restored\n\n{objects} objects ({size / 1048576:,.1f} MiB) from {origin} "
        f"into `{dst.describe()}`" + (f" (prefix `{prefix}`)" if prefix else ""),
        key="restore-files-report",
    )
    return summary
