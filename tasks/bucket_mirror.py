"""Incremental bucket mirror: copy what is new or changed, optionally delete what is gone.

Comparison never reads content when it can avoid it: equal size and ETag mean equal. Where
ETags cannot be compared (multi-part uploads, another endpoint, local files), the checksum
Slipway recorded in the destination's metadata when it copied the object decides.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Literal

from blocks.errors import SlipwayError
from tasks.object_locations import (
    SHA256,
    SMALL_OBJECT,
    SOURCE_ETAG,
    AnyLocation,
    LocalLocation,
    ObjectInfo,
    ObjectMeta,
    S3Location,
    md5_etag,
    overlaps,
)
from tasks.object_storage import HashingReader

WORKERS = 32
# Streamed copies of large objects hold up to 4 parts of 8 MiB each in memory.
LARGE_STREAMS = threading.BoundedSemaphore(2)
MAX_COPY_OBJECT = 5 * 1024**3  # S3's limit for a single CopyObject


@dataclass(frozen=True)
class Action:
    kind: Literal["copy", "delete"]
    key: str
    size: int
    reason: str
    etag: str = ""  # as listed: a plain MD5 ETag lets a same-endpoint copy skip its HEAD


@dataclass
class MirrorPlan:
    source: str
    destination: str
    copy: list[Action] = field(default_factory=list)
    delete: list[Action] = field(default_factory=list)
    unchanged: int = 0
    compared: int = 0  # objects present on both sides
    source_objects: int = 0
    destination_objects: int = 0

    @property
    def copy_bytes(self) -> int:
        return sum(a.size for a in self.copy)

    def render(self, limit: int = 200) -> str:
        lines = [
            f"mirror {self.source} -> {self.destination}: {len(self.copy)} to copy "
            f"({self.copy_bytes / 1048576:,.1f} MiB), {len(self.delete)} to delete, "
            f"{self.unchanged} unchanged"
        ]
        actions = [*self.copy, *self.delete]
        lines += [f"{a.kind:6} {a.key}  ({a.reason})" for a in actions[:limit]]
        if len(actions) > limit:
            lines.append(f"... and {len(actions) - limit} more")
        return "\n".join(lines)


@dataclass
class MirrorResult:
    plan: MirrorPlan
    dry_run: bool
    copied: int = 0
    copied_bytes: int = 0
    deleted: int = 0
    seconds: float = 0.0
    list_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # monotonic clock, for `seconds`

    def summary(self) -> dict[str, object]:
        p = self.plan
        return {
            "source": p.source,
            "destination": p.destination,
            "dry_run": self.dry_run,
            "source_objects": p.source_objects,
            "destination_objects": p.destination_objects,
            "to_copy": len(p.copy),
            "to_delete": len(p.delete),
            "unchanged": p.unchanged,
            "copied": self.copied,
            "copied_bytes": self.copied_bytes,
            "deleted": self.deleted,
            "seconds": round(self.seconds, 3),
            "list_seconds": round(self.list_seconds, 3),
            "failures": self.failures[:20],
        }


Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def _list_both(src: AnyLocation, dst: AnyLocation) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
    """Both listings at once; a failure of either raises (no partial listing is ever used)."""
    with ThreadPoolExecutor(2) as pool:
        src_f = pool.submit(lambda: list(src.iter_objects()))
        dst_f = pool.submit(lambda: list(dst.iter_objects()))
        return src_f.result(), dst_f.result()


def _same(src: AnyLocation, dst: AnyLocation, s: ObjectInfo, d: ObjectInfo) -> bool | None:
    """True/False when listings decide; None when the destination's metadata must."""
    if s.etag and d.etag:
        return True if s.etag == d.etag else None
    if isinstance(dst, LocalLocation):
        if isinstance(src, LocalLocation):
            return src.local_digest(s.key, "sha256") == dst.local_digest(d.key, "sha256")
        if not s.multipart:
            return dst.local_digest(d.key, "md5") == s.etag
        # A multi-part ETag is not a content hash: the copy set the file's time to the source's.
        return d.modified is not None and s.modified is not None and d.modified == s.modified
    # Local source, S3 destination.
    if not d.multipart:
        assert isinstance(src, LocalLocation)
        return src.local_digest(s.key, "md5") == d.etag
    return None


def _stamp_matches(src: AnyLocation, dst: AnyLocation, s: ObjectInfo) -> bool:
    head = dst.head(s.key)
    if head is None:
        return False
    meta, _ = head
    if s.etag:
        return meta.metadata.get(SOURCE_ETAG) == s.etag
    assert isinstance(src, LocalLocation)
    return meta.metadata.get(SHA256) == src.local_digest(s.key, "sha256")


def plan_mirror(src: AnyLocation, dst: AnyLocation, delete: bool) -> tuple[MirrorPlan, float]:
    """What a mirror would do, and how long listing and comparing took."""
    if overlaps(src, dst):
        raise SlipwayError(
            f"{dst.describe()} and {src.describe()} overlap: mirror into a bucket or prefix "
            "outside the source"
        )
    started = time.monotonic()
    src_objects, dst_objects = _list_both(src, dst)
    plan = MirrorPlan(
        src.describe(),
        dst.describe(),
        source_objects=len(src_objects),
        destination_objects=len(dst_objects),
    )
    existing = {o.key: o for o in dst_objects}
    undecided: list[ObjectInfo] = []
    for s in src_objects:
        if s.key.endswith("/") and isinstance(dst, LocalLocation):
            plan.unchanged += 1  # a folder marker: a directory holds it, no file to copy
            continue
        d = existing.get(s.key)
        if d is None:
            plan.copy.append(Action("copy", s.key, s.size, "new", s.etag))
            continue
        plan.compared += 1
        if d.size != s.size:
            plan.copy.append(Action("copy", s.key, s.size, "size changed", s.etag))
            continue
        same = _same(src, dst, s, d)
        if same is None:
            undecided.append(s)
        elif same:
            plan.unchanged += 1
        else:
            plan.copy.append(Action("copy", s.key, s.size, "content changed", s.etag))
    if undecided:
        with ThreadPoolExecutor(WORKERS) as pool:
            for s, same in zip(
                undecided, pool.map(lambda o: _stamp_matches(src, dst, o), undecided), strict=True
            ):
                if same:
                    plan.unchanged += 1
                else:
                    plan.copy.append(Action("copy", s.key, s.size, "content changed", s.etag))
    if delete:
        gone = {o.key for o in src_objects}
        plan.delete = [
            Action("delete", d.key, d.size, "gone") for d in dst_objects if d.key not in gone
        ]
        if plan.delete and not src_objects:
            raise SlipwayError(
                f"the source {src.describe()} is empty: --delete would empty "
                f"{dst.describe()}; check the source URL, or delete by hand"
            )
    return plan, time.monotonic() - started


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
    if (
        isinstance(src, S3Location)
        and isinstance(dst, S3Location)
        and src.settings.same_endpoint(dst.settings)
    ):
        return _server_side_copy(src, dst, key, stamp, listed)
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


def _request_only(stamp: bool, listed: ObjectInfo | None) -> bool:
    """Whether a same-endpoint copy is the bare request: same bytes, same single-part ETag,
    same metadata, so nothing to add and no HEAD needed. (S3 refuses single copies above
    5 GiB; such objects have multi-part ETags anyway.)"""
    return bool(stamp and listed and listed.etag and not listed.multipart)


def _server_side_copy(
    src: S3Location, dst: S3Location, key: str, stamp: bool, listed: ObjectInfo | None
) -> int:
    if _request_only(stamp, listed):
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


def run_copies(
    src: AnyLocation,
    dst: AnyLocation,
    actions: Iterable[Action],
    *,
    stamp: bool = True,
    on_progress: Progress = lambda done, total: None,
    stop: threading.Event | None = None,
) -> tuple[int, int, list[str]]:
    """Copy concurrently; returns (objects, bytes, failures). Failures do not stop others.

    stop: once set, copies not yet begun are skipped (those under way finish).
    """
    # Largest first: a long copy started last would run on alone at the end.
    todo = sorted(actions, key=lambda a: a.size, reverse=True)
    total = sum(a.size for a in todo)
    done_objects = done_bytes = 0
    failures: list[str] = []
    lock = threading.Lock()
    on_progress(0, total)

    def count(size: int) -> None:
        nonlocal done_objects, done_bytes
        with lock:
            done_objects += 1
            done_bytes += size
            done = done_bytes
        on_progress(done, total)

    def one(action: Action) -> int | None:
        if stop is not None and stop.is_set():
            return None
        listed = ObjectInfo(action.key, action.size, action.etag)
        return copy_one(src, dst, action.key, stamp=stamp, listed=listed)

    # Bare same-endpoint copies go out in one batch, without a thread each; the pool takes
    # the others, then what the batch did not do (retried there, errors worded there).
    batch: list[Action] = []
    if (
        isinstance(src, S3Location)
        and isinstance(dst, S3Location)
        and src.settings.same_endpoint(dst.settings)
    ):
        batch = [a for a in todo if _request_only(stamp, ObjectInfo(a.key, a.size, a.etag))]
    in_batch = {id(a) for a in batch}
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {pool.submit(one, a): a for a in todo if id(a) not in in_batch}
        if batch:
            assert isinstance(src, S3Location)
            assert isinstance(dst, S3Location)
            keys = [a.key for a in batch]
            left = dst.copy_many_from(src, keys, lambda i: count(batch[i].size), stop)
            futures.update({pool.submit(one, batch[i]): batch[i] for i in left})
        for future in as_completed(futures):
            action = futures[future]
            try:
                size = future.result()
            except SlipwayError as exc:
                failures.append(f"{action.key}: {exc}")
                continue
            except Exception as exc:  # one object's failure is reported, the rest go on
                failures.append(f"{action.key}: {type(exc).__name__}: {exc}")
                continue
            if size is not None:  # else stopped before it began
                count(size)
    return done_objects, done_bytes, failures


def mirror(
    src: AnyLocation,
    dst: AnyLocation,
    *,
    delete: bool = False,
    dry_run: bool = False,
    on_progress: Progress = lambda done, total: None,
) -> MirrorResult:
    """Make `dst` hold what `src` holds. Deletions only after a complete, error-free run."""
    result = copy_changes(src, dst, delete=delete, dry_run=dry_run, on_progress=on_progress)
    return delete_gone(dst, result)


def copy_changes(
    src: AnyLocation,
    dst: AnyLocation,
    *,
    delete: bool = False,
    dry_run: bool = False,
    on_progress: Progress = lambda done, total: None,
    stop: threading.Event | None = None,
) -> MirrorResult:
    """A mirror's first part: check both sides, plan (deletions included), copy."""
    started = time.monotonic()
    src.check(must_exist=True)
    dst.check(must_exist=isinstance(dst, S3Location))
    plan, list_seconds = plan_mirror(src, dst, delete)
    result = MirrorResult(plan, dry_run, list_seconds=list_seconds, started=started)
    if not dry_run:
        result.copied, result.copied_bytes, result.failures = run_copies(
            src, dst, plan.copy, on_progress=on_progress, stop=stop
        )
    result.seconds = time.monotonic() - started
    return result


def delete_gone(dst: AnyLocation, result: MirrorResult) -> MirrorResult:
    """A mirror's second part: the planned deletions, only if every copy succeeded."""
    plan = result.plan
    if not result.dry_run and plan.delete and not result.failures:
        if result.copied < len(plan.copy):
            raise SlipwayError(
                f"the mirror to {dst.describe()} stopped before its last copy; "
                "nothing was deleted, run it again"
            )
        dst.delete([a.key for a in plan.delete])
        result.deleted = len(plan.delete)
    result.seconds = time.monotonic() - result.started
    return result
