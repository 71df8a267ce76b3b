"""Copy one object between any two locations, verified on the way.

Same-endpoint S3 copies are server-side; others stream through this process, checked
against the source's size, MD5 ETag or recorded sha256 before the copy is complete.
"""

from __future__ import annotations

import hashlib
import os
import threading

from blocks.errors import SlipwayError
from tasks.storage.locations import (
    SHA256,
    SMALL_OBJECT,
    SOURCE_ETAG,
    AnyLocation,
    LocalLocation,
    ObjectInfo,
    ObjectMeta,
    S3Location,
    md5_etag,
)
from tasks.storage.s3 import HashingReader

# Streamed copies of large objects hold up to 4 parts of 8 MiB each in memory.
LARGE_STREAMS = threading.BoundedSemaphore(2)
MAX_COPY_OBJECT = 5 * 1024**3  # S3's limit for a single CopyObject


def _check(data: bytes, info: ObjectInfo, meta: ObjectMeta, key: str, where: str) -> None:
    """The bytes read are the ones the source described (size, MD5 ETag or our sha256)."""
    problem = None
    if len(data) != info.size:
        problem = f"{len(data)} bytes read, {info.size} expected"
    elif info.etag and not info.multipart and md5_etag(data) != info.etag:
        problem = "MD5 does not match the ETag"
    elif (want := meta.metadata.get(SHA256)) and hashlib.sha256(data).hexdigest() != want:
        problem = "sha256 does not match the recorded checksum"
    if problem:
        raise SlipwayError(f"{key!r} from {where} is damaged or changed while read: {problem}")


def _sha256_of(src: AnyLocation, key: str) -> str:
    stream, _, _ = src.read(key)
    digest = hashlib.sha256()
    with stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def copy_one(
    src: AnyLocation,
    dst: AnyLocation,
    key: str,
    *,
    stamp: bool = True,
    listed: ObjectInfo | None = None,
) -> int:
    """Copy one object, verified on the way; returns its size.

    stamp: record the source's ETag and the sha256 in the copy's metadata (a mirror);
    without it the copy gets exactly the source's user metadata (a restore).
    listed: the source object as listed, if known.
    """
    if pair := server_side(src, dst):
        return _server_side_copy(*pair, key, stamp, listed)
    stream, meta, info = src.read(key)
    with stream:
        metadata = dict(meta.metadata) if stamp else meta.user_metadata()
        if info.size < SMALL_OBJECT:
            data = stream.read()
            _check(data, info, meta, key, src.describe())
            if stamp:
                if info.etag:
                    metadata[SOURCE_ETAG] = info.etag
                metadata[SHA256] = hashlib.sha256(data).hexdigest()
            dst.write(key, data, ObjectMeta(meta.headers, metadata), info.size)
        else:
            with LARGE_STREAMS:  # each buffers its parts in memory
                # Metadata goes with the first request of a multi-part upload, before the bytes
                # are seen: a recorded checksum, or one pass to compute it, comes first.
                want = meta.metadata.get(SHA256) or (
                    _sha256_of(src, key) if stamp and isinstance(dst, S3Location) else None
                )
                if stamp:
                    if info.etag:
                        metadata[SOURCE_ETAG] = info.etag
                    if want:
                        metadata[SHA256] = want

                def verify() -> None:
                    if reader.size != info.size or (want and reader.sha256.hexdigest() != want):
                        raise SlipwayError(
                            f"{key!r} from {src.describe()} is damaged or changed while copied; "
                            "run the mirror again"
                        )

                # Checked before the upload completes: a mismatch aborts it.
                reader = HashingReader(stream, on_end=verify)
                dst.write(key, reader, ObjectMeta(meta.headers, metadata), info.size)  # type: ignore[arg-type]
    if isinstance(dst, LocalLocation) and info.modified is not None:
        # A multi-part ETag is no content hash: the next run compares times instead.
        ts = info.modified.timestamp()
        os.utime(dst.path(key), (ts, ts))
    return info.size


def server_side(src: AnyLocation, dst: AnyLocation) -> tuple[S3Location, S3Location] | None:
    """The two buckets, when a copy between them is server-side (one endpoint)."""
    if (
        isinstance(src, S3Location)
        and isinstance(dst, S3Location)
        and src.settings.same_endpoint(dst.settings)
    ):
        return src, dst
    return None


def request_only(stamp: bool, listed: ObjectInfo | None) -> bool:
    """Whether a same-endpoint copy is the bare request: same bytes, same single-part ETag,
    same metadata, so nothing to add and no HEAD needed. (S3 refuses single copies above
    5 GiB; such objects have multi-part ETags anyway.)"""
    return bool(stamp and listed and listed.etag and not listed.multipart)


def _server_side_copy(
    src: S3Location, dst: S3Location, key: str, stamp: bool, listed: ObjectInfo | None
) -> int:
    if request_only(stamp, listed):
        assert listed is not None
        dst.copy_from(src, key, key, None)
        return listed.size
    head = src.head(key)
    if head is None:
        raise SlipwayError(f"{key!r} disappeared from {src.describe()} during the mirror")
    meta, info = head
    needs_meta = info.multipart or info.size > MAX_COPY_OBJECT or not stamp
    if not needs_meta:
        dst.copy_from(src, key, key, None)  # same bytes, same single-part ETag, same metadata
        return info.size
    metadata = dict(meta.metadata) if stamp else meta.user_metadata()
    if stamp:
        metadata[SOURCE_ETAG] = info.etag
    new_meta = ObjectMeta(meta.headers, metadata)
    if info.size <= MAX_COPY_OBJECT:
        dst.copy_from(src, key, key, new_meta)
    else:
        dst.client.copy(
            {"Bucket": src.settings.bucket, "Key": src.full_key(key)},
            dst.settings.bucket,
            dst.full_key(key),
            ExtraArgs={"MetadataDirective": "REPLACE", **new_meta.headers, "Metadata": metadata},
            SourceClient=src.client,
        )
    return info.size
