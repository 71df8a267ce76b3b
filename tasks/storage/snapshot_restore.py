"""A bucket snapshot put back: checked, decrypted when encrypted, object by object.

The archive's checksum is checked before anything is written, so a damaged snapshot
writes nothing; then each object is checked against its manifest entry before it is.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

import pyrage
import zstandard
from pyrage import x25519

from blocks.errors import SlipwayError
from blocks.settings import StorageSettings
from tasks.crypto.streams import decrypting_reader, decryption_failure
from tasks.storage.local_files import key_problem
from tasks.storage.locations import SMALL_OBJECT, AnyLocation, LocalLocation, ObjectInfo, ObjectMeta
from tasks.storage.s3 import HashingReader, iter_object, storage_error
from tasks.storage.snapshot import WORKERS, SnapshotIndex, SnapshotManifest, SnapshotObject


def load_index(
    store: StorageSettings, manifest: SnapshotManifest, identities: Sequence[x25519.Identity]
) -> SnapshotIndex:
    """The object list: the manifest's own, or its encrypted index, checked and decrypted."""
    if manifest.index is None:
        return SnapshotIndex(objects=manifest.objects, skipped=manifest.skipped)
    client = store.client()
    try:
        body = client.get_object(Bucket=store.bucket, Key=manifest.index.key)["Body"].read()
    except Exception as exc:
        raise storage_error(exc, store) from exc
    if hashlib.sha256(body).hexdigest() != manifest.index.sha256:
        raise SlipwayError(
            f"snapshot {manifest.id} of {manifest.name!r} is damaged (its index's checksum "
            "differs from its manifest); nothing was restored: use another snapshot"
        )
    try:
        return SnapshotIndex.model_validate_json(pyrage.decrypt(body, list(identities)))
    except Exception as exc:
        raise _undecrypted(manifest, exc) from None


def verify_archive(store: StorageSettings, manifest: SnapshotManifest) -> None:
    """Re-read the archive: size and sha256 must match the manifest."""
    sha, size = hashlib.sha256(), 0
    for chunk in iter_object(store.client(), store, manifest.archive.key):
        sha.update(chunk)
        size += len(chunk)
    if size != manifest.archive.size or sha.hexdigest() != manifest.archive.sha256:
        raise SlipwayError(
            f"snapshot {manifest.id} of {manifest.name!r} is damaged (size or checksum differs "
            "from its manifest); nothing was restored: use another snapshot"
        )


def restore_snapshot(
    store: StorageSettings,
    manifest: SnapshotManifest,
    dst: AnyLocation,
    *,
    prefix: str = "",
    identities: Sequence[x25519.Identity] = (),
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[int, int]:
    """Put the snapshot's objects (all, or those under `prefix`) into `dst`.

    The archive's checksum is checked first, so a damaged snapshot writes nothing; then
    each object is checked against its manifest entry before it is written. An encrypted
    snapshot needs `identities`, and is decrypted as it streams.
    """
    verify_archive(store, manifest)
    index = load_index(store, manifest, identities)
    wanted = {o.key: o for o in index.objects if o.key.startswith(prefix)}
    unfit: list[str] = []
    if isinstance(dst, LocalLocation):
        for key, obj in list(wanted.items()):
            if why := key_problem(key, obj.size):
                unfit.append(f"{key!r} cannot be a file under {dst.describe()}: it {why}")
                del wanted[key]
    total = sum(o.size for o in wanted.values())
    done_objects = done_bytes = 0
    client = store.client()
    try:
        body: IO[bytes] = client.get_object(Bucket=store.bucket, Key=manifest.archive.key)["Body"]  # type: ignore[assignment]
        if manifest.encrypted:
            body = decrypting_reader(body, identities)
        plain = zstandard.ZstdDecompressor().stream_reader(body)
        writes: list[Future[ObjectInfo]] = []
        with (
            ThreadPoolExecutor(WORKERS) as pool,
            tarfile.open(fileobj=plain, mode="r|") as tar,  # type: ignore[call-overload]
        ):
            for member in tar:
                entry = wanted.get(member.name)
                if entry is None or not member.isfile():
                    continue
                stream = tar.extractfile(member)
                assert stream is not None
                meta = ObjectMeta(dict(entry.headers), dict(entry.metadata))
                if entry.size < SMALL_OBJECT:
                    data = stream.read()
                    _check_entry(manifest, entry, len(data), hashlib.sha256(data).hexdigest())
                    writes.append(pool.submit(dst.write, entry.key, data, meta, entry.size))
                else:
                    checked = _checked_stream(stream, manifest, entry)  # type: ignore[arg-type]
                    dst.write(entry.key, checked, meta, entry.size)  # type: ignore[arg-type]
                done_objects += 1
                done_bytes += entry.size
                on_progress(done_bytes, total)
            for write in writes:
                write.result()
    except (zstandard.ZstdError, tarfile.TarError) as exc:
        raise SlipwayError(
            f"snapshot {manifest.id} of {manifest.name!r} cannot be read ({exc}): use another "
            "snapshot"
        ) from exc
    except SlipwayError:
        raise
    except Exception as exc:
        if decryption_failure(exc) is not None:
            raise _undecrypted(manifest, exc) from None
        raise storage_error(exc, store) from exc
    if done_objects != len(wanted):
        raise SlipwayError(
            f"snapshot {manifest.id}: {len(wanted) - done_objects} objects of the manifest are "
            "missing from the archive; the others were restored"
        )
    if unfit:
        raise SlipwayError(
            f"snapshot {manifest.id}: {len(unfit)} objects were skipped, the others restored; "
            f"first: {unfit[0]}"
        )
    return done_objects, done_bytes


def _undecrypted(manifest: SnapshotManifest, exc: BaseException) -> SlipwayError:
    """age refused bytes whose checksum matched: a key that does not fit, or damage."""
    return SlipwayError(
        f"snapshot {manifest.id} of {manifest.name!r} cannot be decrypted ({decryption_failure(exc) or exc}) "
        f"although its checksum matches; it is encrypted to {', '.join(manifest.recipients)}: "
        "give one of their identities, or use another snapshot"
    )


def _check_entry(manifest: SnapshotManifest, entry: SnapshotObject, size: int, digest: str) -> None:
    if size != entry.size or digest != entry.sha256:
        raise SlipwayError(
            f"snapshot {manifest.id}: {entry.key!r} does not match its manifest entry; "
            "use another snapshot"
        )


def _checked_stream(
    stream: IO[bytes], manifest: SnapshotManifest, entry: SnapshotObject
) -> HashingReader:
    """A reader that checks size and sha256 before its last read (a mismatch aborts)."""

    def check() -> None:
        _check_entry(manifest, entry, reader.size, reader.sha256.hexdigest())

    reader = HashingReader(stream, on_end=check)
    return reader
