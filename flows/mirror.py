"""Mirror a bucket (or prefix, or directory) into another, incrementally."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from blocks.errors import SlipwayError
from blocks.object_storage import ObjectStorage
from flows.progress import ProgressArtifact
from tasks.notify import HOOKS
from tasks.storage.locations import AnyLocation, parse_location
from tasks.storage.mirror import MirrorResult, mirror


def resolve_location(ref: str, block: str | None, env_prefix: str, role: str = "") -> AnyLocation:
    """`s3://bucket/prefix` with a block's endpoint and keys (or the environment's), or a path;
    `role` is how messages name it."""
    settings = ObjectStorage.resolve(block) if block else None
    return parse_location(ref, env_prefix, settings, role)


def mirror_report(result: MirrorResult) -> str:
    s = result.summary()
    seconds = max(result.seconds, 1e-9)
    rows = [
        ("source", f"`{s['source']}`"),
        ("destination", f"`{s['destination']}`"),
        ("objects", f"{s['source_objects']} in the source, {s['unchanged']} unchanged"),
        ("copied", f"{s['copied']} ({result.copied_bytes / 1048576:,.1f} MiB)"),
        ("deleted", str(s["deleted"])),
        ("duration", f"{result.seconds:.1f} s (listing and comparing {result.list_seconds:.1f} s)"),
        (
            "throughput",
            f"{result.copied / seconds:,.0f} objects/s, "
            f"{result.copied_bytes / 1048576 / seconds:,.1f} MiB/s",
        ),
    ]
    lines = ["# Mirror" + (" (dry run)" if result.dry_run else ""), "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if result.failures:
        lines += ["", "## Failures", "", *[f"- {f}" for f in result.failures[:50]]]
    if skipped := result.plan.skipped:
        lines += ["", "## Skipped (not mirrored)", "", *[f"- {a.line()}" for a in skipped[:200]]]
        if len(skipped) > 200:
            lines.append(f"- ... and {len(skipped) - 200} more")
    return "\n".join(lines)


@flow(name="mirror-bucket", **HOOKS)
def mirror_bucket(
    source: str,
    destination: str,
    delete: bool = False,
    dry_run: bool = False,
    source_block: str | None = None,
    destination_block: str | None = None,
) -> dict[str, Any]:
    """Copy what is new or changed from source to destination (s3://bucket/prefix or a path).

    delete: also remove from the destination what the source no longer has (never after
    an incomplete listing or a failed copy). The source's endpoint and keys come from
    source_block or SLIPWAY_SOURCE_*, the destination's from destination_block or AWS_*.
    What cannot be mirrored (a key no file can have in a local destination; a dangling or
    directory link in a local source) is skipped with a warning each, everything else is
    mirrored, and the run then fails naming the first, so no one takes it for complete.
    """
    logger = get_run_logger()
    src = resolve_location(source, source_block, "SLIPWAY_SOURCE_", "source")
    dst = resolve_location(destination, destination_block, "AWS_", "destination")
    with ProgressArtifact("mirror-progress", f"mirror {source} -> {destination}") as progress:
        result = mirror(src, dst, delete=delete, dry_run=dry_run, on_progress=progress.record)
    if dry_run:
        logger.info("%s", result.plan.render())
    for skipped in result.plan.skipped:
        logger.warning("skipped %s", skipped.line())
    create_markdown_artifact(mirror_report(result), key="mirror-report")
    if result.failures:
        raise SlipwayError(
            f"mirror to {dst.describe()}: {len(result.failures)} objects failed, first: "
            f"{result.failures[0]}; nothing was deleted, run it again"
        )
    if result.plan.skipped and not dry_run:
        raise SlipwayError(
            f"mirror to {dst.describe()}: {len(result.plan.skipped)} source entries were "
            f"skipped (each is in the run's log), everything else was mirrored; first: "
            f"{result.plan.skipped[0].line()}"
        )
    summary = result.summary()
    if dry_run:
        summary["plan"] = result.plan.render(limit=10_000)
    return summary
