"""Bucket snapshots: a bucket (or prefix) as one tar + zstd archive in the store, and back.

Layout under the store's prefix, one folder per snapshot:
    buckets/<name>/<snapshot id>/files.tar.zst   the objects, as a PAX tar, zstd-compressed
    buckets/<name>/<snapshot id>/manifest.json   written last: keys, sizes, sha256, metadata
    buckets/<name>/<snapshot id>/verification.json  the latest verification's outcome

Encrypted (to age recipients), the archive is `files.tar.zst.age`, and the object list
(keys, metadata: the app's data too) moves from the manifest to `index.json.age`.

The archive streams from the source to the store (no temporary file); a restore checks the
archive's checksum before writing anything, then each object's against the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Literal

import pyrage
import zstandard
from pydantic import BaseModel, Field
from pyrage import x25519

from blocks.settings import StorageSettings
from tasks.crypto.keys import key_ids
from tasks.crypto.streams import encrypting_reader
from tasks.postgres.catalog import (
    ENCRYPTED_SUFFIX,
    MANIFEST,
    CatalogEntry,
    CatalogManifest,
    StoredObject,
    find_entry,
    list_entries,
    utcnow,
    write_json,
)
from tasks.postgres.dump import PipeReader
from tasks.storage.locations import (
    SMALL_OBJECT,
    AnyLocation,
    ObjectInfo,
    ObjectMeta,
)
from tasks.storage.s3 import (
    HashingReader,
    put_confirmed,
    upload_stream,
)

ARCHIVE = "files.tar.zst"
INDEX = "index.json.age"
PREFETCH = 64  # small objects fetched ahead, concurrently, while the tar is written
WORKERS = 16


class SnapshotObject(BaseModel):
    key: str
    size: int
    sha256: str
    etag: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)


class SnapshotManifest(CatalogManifest):
    """What a bucket snapshot is."""

    kind: Literal["bucket-snapshot"] = "bucket-snapshot"
    name: str
    source: str
    compression_level: int
    archive: StoredObject
    object_count: int
    object_bytes: int
    objects: list[SnapshotObject]
    # "'key': why" for each source entry left out (a dangling or directory link, a pipe...)
    skipped: list[str] = Field(default_factory=list)
    # Encrypted: `objects` and `skipped` are stored here instead, as an age file.
    index: StoredObject | None = None


class SnapshotIndex(BaseModel):
    """What an encrypted snapshot keeps out of its clear-text manifest."""

    objects: list[SnapshotObject]
    skipped: list[str]


SnapshotEntry = CatalogEntry[SnapshotManifest]


def snapshot_root(store: StorageSettings, name: str) -> str:
    return store.key("buckets", name)


def snapshot_folder(store: StorageSettings, name: str, snapshot_id: str) -> str:
    return store.key("buckets", name, snapshot_id)


def list_snapshots(store: StorageSettings, name: str) -> list[SnapshotEntry]:
    """Complete snapshots of `name` (those with a manifest), newest first."""
    return list_entries(store.client(), store, snapshot_root(store, name), SnapshotEntry)


def find_snapshot(store: StorageSettings, name: str, ref: str) -> SnapshotEntry:
    """A snapshot of `name` by id, or `latest`."""
    where = store.url("buckets", name)
    return find_entry(
        list_snapshots(store, name),
        ref,
        none=f"no snapshots of {name!r} in {where}: run `slipway snapshot`",
        unknown=f"no snapshot {ref!r} of {name!r}: see {where}",
    )


def _fetch(src: AnyLocation, obj: ObjectInfo) -> tuple[bytes, ObjectMeta]:
    stream, meta, _ = src.read(obj.key)
    with stream:
        return stream.read(), meta


def _objects_in_order(
    src: AnyLocation, objects: list[ObjectInfo], pool: ThreadPoolExecutor
) -> Iterator[tuple[ObjectInfo, bytes | None, ObjectMeta | None]]:
    """Each object in listing order; small ones fetched ahead concurrently, large ones not."""
    window: deque[tuple[ObjectInfo, Future[tuple[bytes, ObjectMeta]] | None]] = deque()
    pending = iter(objects)

    def fill() -> None:
        while len(window) < PREFETCH:
            obj = next(pending, None)
            if obj is None:
                return
            small = obj.size < SMALL_OBJECT
            window.append((obj, pool.submit(_fetch, src, obj) if small else None))

    fill()
    while window:
        obj, future = window.popleft()
        fill()
        if future is None:
            yield obj, None, None
        else:
            data, meta = future.result()
            yield obj, data, meta


def _write_tar(
    src: AnyLocation,
    objects: list[ObjectInfo],
    out: IO[bytes],
    level: int,
    entries: list[SnapshotObject],
    on_object: Callable[[int], None],
) -> None:
    cctx = zstandard.ZstdCompressor(level=level, threads=-1)
    with (
        ThreadPoolExecutor(WORKERS) as pool,
        cctx.stream_writer(out, closefd=False) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar,  # type: ignore[call-overload]
    ):
        for obj, data, meta in _objects_in_order(src, objects, pool):
            info = tarfile.TarInfo(obj.key)
            info.mtime = int(obj.modified.timestamp()) if obj.modified else int(time.time())
            if data is not None and meta is not None:
                info.size = len(data)
                digest = hashlib.sha256(data).hexdigest()
                tar.addfile(info, fileobj=io.BytesIO(data))
            else:
                stream, meta, head = src.read(obj.key)
                with stream:
                    info.size = head.size
                    reader = HashingReader(stream)
                    tar.addfile(info, fileobj=reader)  # type: ignore[arg-type]
                digest = reader.sha256.hexdigest()
            entries.append(
                SnapshotObject(
                    key=obj.key,
                    size=info.size,
                    sha256=digest,
                    etag=obj.etag,
                    headers=meta.headers,
                    metadata=meta.user_metadata(),
                )
            )
            on_object(info.size)


def snapshot_to_store(
    src: AnyLocation,
    store: StorageSettings,
    name: str,
    snapshot_id: str,
    *,
    level: int = 3,
    recipients: Sequence[x25519.Recipient] = (),
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> SnapshotManifest:
    """Stream every object of `src` into one archive in the store, then its manifest.

    With `recipients`, the archive is age-encrypted to them as it streams, and the object
    list goes into an encrypted index: the stored manifest holds none of the app's data.
    """
    started_at, t0 = utcnow(), time.monotonic()
    listed = list(src.iter_objects())  # complete listing first: a failure raises here
    objects = [o for o in listed if not o.problem]
    skipped = [f"{o.key!r}: {o.problem}" for o in listed if o.problem]
    total = sum(o.size for o in objects)
    entries: list[SnapshotObject] = []
    done = [0]

    def on_object(size: int) -> None:
        done[0] += size
        on_progress(done[0], total)

    read_fd, write_fd = os.pipe()
    producer_error: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out:
                _write_tar(src, objects, out, level, entries, on_object)
        except BaseException as exc:  # reported by the consumer, which aborts the upload
            producer_error.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    client = store.client()
    folder = snapshot_folder(store, name, snapshot_id)
    key = f"{folder}/{ARCHIVE}" + (ENCRYPTED_SUFFIX if recipients else "")

    def on_end() -> None:
        producer.join()
        if producer_error:
            raise producer_error[0]

    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        archive: IO[bytes] = PipeReader(pipe, lambda n: None)  # type: ignore[assignment]
        encrypted = encrypting_reader(archive, recipients) if recipients else None
        reader = HashingReader(encrypted or archive, on_end=on_end)
        try:
            kind = "application/octet-stream" if recipients else "application/zstd"
            upload_stream(client, store, key, reader, kind)
        except BaseException:
            if encrypted is not None:
                encrypted.close()  # its thread's next write fails and it stops
            with contextlib.suppress(OSError):
                pipe.close()  # the producer's next write fails and it stops
            producer.join(timeout=30)
            raise
    manifest = SnapshotManifest(
        id=snapshot_id,
        name=name,
        source=src.describe(),
        started_at=started_at,
        finished_at=utcnow(),
        duration_seconds=round(time.monotonic() - t0, 3),
        compression_level=level,
        archive=StoredObject(key=key, size=reader.size, sha256=reader.sha256.hexdigest()),
        object_count=len(entries),
        object_bytes=sum(e.size for e in entries),
        objects=entries,
        skipped=skipped,
    )
    stored = manifest
    if recipients:
        index = SnapshotIndex(objects=entries, skipped=skipped).model_dump_json().encode()
        body = pyrage.encrypt(index, list(recipients))
        index_key = f"{folder}/{INDEX}"
        sha256 = put_confirmed(client, store, index_key, body)
        stored = manifest.model_copy(
            update={
                "encrypted": True,
                "recipients": key_ids(recipients),
                "index": StoredObject(key=index_key, size=len(body), sha256=sha256),
                "objects": [],
                "skipped": [],
            }
        )
        manifest = stored.model_copy(update={"objects": entries, "skipped": skipped})
    # The manifest is written last: from here on, this is a snapshot.
    write_json(client, store, f"{folder}/{MANIFEST}", stored)
    return manifest
