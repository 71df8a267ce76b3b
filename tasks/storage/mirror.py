"""Incremental bucket mirror: copy what is new or changed, optionally delete what is gone.

Comparison never reads content when it can avoid it: equal size and ETag mean equal. Where
ETags cannot be compared (multi-part uploads, another endpoint, local files), the checksum
Slipway recorded in the destination's metadata when it copied the object decides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from typing import Literal

from blocks.errors import SlipwayError
from tasks.storage.copy import copy_one, request_only, server_side
from tasks.storage.crt_copy import CrtCopies, direct
from tasks.storage.endpoint_identity import overlaps
from tasks.storage.local_files import key_problem
from tasks.storage.locations import (
    SHA256,
    SOURCE_ETAG,
    AnyLocation,
    LocalLocation,
    ObjectInfo,
    S3Location,
)

WORKERS = 32


@dataclass(frozen=True)
class Action:
    kind: Literal["copy", "delete", "skip"]
    key: str
    size: int
    reason: str
    etag: str = ""  # as listed: a plain MD5 ETag lets a same-endpoint copy skip its HEAD

    def line(self) -> str:
        return f"{self.key!r}: {self.reason}"


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
    skipped: list[Action] = field(default_factory=list)  # cannot be mirrored: reported

    @property
    def copy_bytes(self) -> int:
        return sum(a.size for a in self.copy)

    def render(self, limit: int = 200) -> str:
        lines = [
            f"mirror {self.source} -> {self.destination}: {len(self.copy)} to copy "
            f"({self.copy_bytes / 1048576:,.1f} MiB), {len(self.delete)} to delete, "
            f"{self.unchanged} unchanged"
            + (f", {len(self.skipped)} skipped" if self.skipped else "")
        ]
        actions = [*self.skipped, *self.copy, *self.delete]
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
            "skipped": [a.line() for a in p.skipped[:20]],
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
    # What is no file in a local destination (a link, a pipe) is neither compared nor deleted.
    existing = {o.key: o for o in dst_objects if not o.problem}
    undecided: list[ObjectInfo] = []
    for s in src_objects:
        if s.problem:
            plan.skipped.append(Action("skip", s.key, s.size, s.problem))
            continue
        if isinstance(dst, LocalLocation):
            if why := key_problem(s.key, s.size):
                reason = f"cannot be a file under {dst.describe()}: it {why}"
                plan.skipped.append(Action("skip", s.key, s.size, reason))
                continue
            if s.key.endswith("/"):
                plan.unchanged += 1  # an empty folder marker: a directory holds it
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
        # A skipped source entry still counts as present: its earlier copy is kept.
        plan.delete = [
            Action("delete", d.key, d.size, "gone")
            for d in dst_objects
            if d.key not in gone and not d.problem
        ]
        if plan.delete and not src_objects:
            raise SlipwayError(
                f"the source {src.describe()} is empty: --delete would empty "
                f"{dst.describe()}; check the source URL, or delete by hand"
            )
    return plan, time.monotonic() - started


def run_copies(
    src: AnyLocation,
    dst: AnyLocation,
    actions: Iterable[Action],
    *,
    stamp: bool = True,
    on_progress: Progress = lambda done, total: None,
) -> tuple[int, int, list[str]]:
    """Copy concurrently; returns (objects, bytes, failures). Failures do not stop others."""
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

    def listed(action: Action) -> ObjectInfo:
        return ObjectInfo(action.key, action.size, action.etag)

    def one(action: Action) -> int:
        return copy_one(src, dst, action.key, stamp=stamp, listed=listed(action))

    # Bare same-endpoint copies go through the CRT's S3 client; the rest through boto3.
    pair = server_side(src, dst)
    if pair and not direct(pair[1]):
        pair = None
    bare: list[Action] = []
    rest: list[Action] = []
    for a in todo:
        (bare if pair and request_only(stamp, listed(a)) else rest).append(a)
    with ExitStack() as stack:
        # boto3's first: they hold the multi-part objects, the largest and longest copies.
        pool = stack.enter_context(ThreadPoolExecutor(WORKERS))
        futures: dict[Future[int], Action] = {pool.submit(one, a): a for a in rest}
        if pair and bare:
            crt = stack.enter_context(closing(CrtCopies(*pair)))
            futures |= {crt.copy(a.key, a.size, a.etag): a for a in bare}
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
    started = time.monotonic()
    src.check(must_exist=True)
    dst.check(must_exist=isinstance(dst, S3Location))
    plan, list_seconds = plan_mirror(src, dst, delete)
    result = MirrorResult(plan, dry_run, list_seconds=list_seconds)
    if not dry_run:
        result.copied, result.copied_bytes, result.failures = run_copies(
            src, dst, plan.copy, on_progress=on_progress
        )
        if plan.delete and not result.failures:
            dst.delete([a.key for a in plan.delete])
            result.deleted = len(plan.delete)
    result.seconds = time.monotonic() - started
    return result
