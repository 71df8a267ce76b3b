"""The `slipway` commands for the app's files: mirror, snapshot, restore-files."""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.cli_common import (
    JsonOpt,
    StoreBlockOpt,
    VerboseOpt,
    check_config,
    run_flow,
    show,
)

SourceBlockOpt = Annotated[
    str | None,
    typer.Option(help="ObjectStorage block for the app's side (default: SLIPWAY_SOURCE_*)."),
]


def mirror_cmd(
    source: Annotated[str, typer.Argument(help="s3://bucket/prefix (the app's) or a directory.")],
    destination: Annotated[str, typer.Argument(help="s3://bucket/prefix or a directory.")],
    delete: Annotated[
        bool, typer.Option("--delete", help="Also delete what the source no longer has.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    source_block: SourceBlockOpt = None,
    destination_block: Annotated[
        str | None, typer.Option(help="ObjectStorage block for the destination (default: AWS_*).")
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Copy what is new or changed from SOURCE to DESTINATION.

    --json: {"source", "destination", "dry_run", "copied", "copied_bytes", "deleted",
    "unchanged", "seconds", "failures", "plan", ...}.
    """
    from blocks.config_check import Place

    check_config(
        places=[
            Place(source, "source", "SLIPWAY_SOURCE_", source_block, source=True),
            Place(destination, "destination", "AWS_", destination_block),
        ]
    )
    from flows.mirror import mirror_bucket

    r = run_flow(
        lambda: mirror_bucket(
            source, destination, delete, dry_run, source_block, destination_block
        ),
        verbose,
    )
    text = (
        f"{r['copied']} copied ({int(r['copied_bytes']) / 1048576:.1f} MiB), "
        f"{r['deleted']} deleted, {r['unchanged']} unchanged in {r['seconds']:.1f} s"
    )
    show(r, as_json, r["plan"] if dry_run else text)


def snapshot(
    bucket_url: Annotated[str, typer.Argument(help="s3://bucket/prefix (the app's) or a dir.")],
    name: Annotated[
        str | None, typer.Option(help="Folder in the store (default: the bucket's name).")
    ] = None,
    level: Annotated[int, typer.Option(help="zstd level.")] = 3,
    source_block: SourceBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Archive a bucket (or prefix) into the backup store as one point-in-time snapshot.

    --json: the snapshot's manifest without its object list (id, name, source, archive
    {key, size, sha256}, object_count, object_bytes, skipped, duration_seconds...).
    """
    from blocks.config_check import Place

    check_config(
        store=store_block is None,
        places=[Place(bucket_url, "source", "SLIPWAY_SOURCE_", source_block, source=True)],
    )
    from flows.snapshot import snapshot_bucket

    r = run_flow(
        lambda: snapshot_bucket(bucket_url, name, level, source_block, store_block), verbose
    )
    show(
        r,
        as_json,
        f"{r['name']}@{r['id']}  {r['object_count']} objects, "
        f"{int(r['archive']['size']) / 1048576:.1f} MiB in {r['duration_seconds']:.1f} s",
    )


def restore_files_cmd(
    source: Annotated[
        str,
        typer.Argument(
            metavar="MIRROR|NAME@SNAPSHOT",
            help="A mirror (s3://bucket/prefix or a directory) or a snapshot: NAME@ID, "
            "NAME@latest.",
        ),
    ],
    destination: Annotated[str, typer.Argument(help="s3://bucket/prefix (the app's) or a dir.")],
    prefix: Annotated[str, typer.Option(help="Only the objects under this key prefix.")] = "",
    mirror_block: Annotated[
        str | None, typer.Option(help="ObjectStorage block of the mirror (default: AWS_*).")
    ] = None,
    destination_block: SourceBlockOpt = None,
    store_block: StoreBlockOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Put objects back from a mirror or a snapshot, each checked against its checksum.

    --json: {"source", "destination", "prefix", "restored", "restored_bytes"}.
    """
    from blocks.config_check import Place, is_snapshot_ref

    snapshot_ref = is_snapshot_ref(source)
    check_config(
        store=snapshot_ref and store_block is None,
        places=[
            *([] if snapshot_ref else [Place(source, "mirror", "AWS_", mirror_block, source=True)]),
            Place(destination, "destination", "SLIPWAY_SOURCE_", destination_block),
        ],
    )
    from flows.restore_files import restore_files

    r = run_flow(
        lambda: restore_files(
            source, destination, prefix, mirror_block, destination_block, store_block
        ),
        verbose,
    )
    show(
        r,
        as_json,
        f"{r['restored']} objects ({int(r['restored_bytes']) / 1048576:.1f} MiB) restored "
        f"from {r['source']} into {r['destination']}",
    )


def add_file_commands(app: typer.Typer) -> None:
    """Register these commands on the `slipway` app."""
    app.command("mirror")(mirror_cmd)
    app.command("snapshot")(snapshot)
    app.command("restore-files")(restore_files_cmd)
