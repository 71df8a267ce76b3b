"""Object storage backups: mirrors and snapshots between two real S3 servers and directories."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from boto3.s3.transfer import TransferConfig

from blocks.errors import SlipwayError
from tasks.postgres.catalog import new_backup_id
from tasks.storage.locations import LocalLocation, S3Location
from tasks.storage.mirror import mirror
from tasks.storage.snapshot import find_snapshot, snapshot_to_store
from tasks.storage.snapshot_restore import restore_snapshot
from tests.harness.s3 import S3Info
from tests.s3_fault_proxy import fault_proxy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.s3, pytest.mark.s3b]

MiB = 1024 * 1024
# Keys that break naive code: spaces, unicode, '+', '%', '&', long keys, deep paths.
AWKWARD_KEYS = [
    "plain.txt",
    "with space/and more spaces.txt",
    "ünïcødé/日本語/файл.json",
    "plus+sign/a+b=c.bin",
    "percent%20literal/100%.txt",
    "amp&query?=x.txt",
    "/".join(["long-segment-" + "x" * 180] * 4) + "/end.bin",
    "deep/" * 20 + "leaf",
]
BIG_KEY = "big/multipart.bin"  # above the multi-part threshold, uploaded in parts
EMPTY_KEY = "empty/zero-bytes"


def new_bucket(info: S3Info, tag: str) -> str:
    name = f"{tag}-{secrets.token_hex(4)}"
    info.client().create_bucket(Bucket=name)
    return name


def put(client: S3Client, bucket: str, key: str, body: bytes, **extra: str) -> None:
    client.put_object(Bucket=bucket, Key=key, Body=body, **extra)  # type: ignore[arg-type]


def fill_awkward(info: S3Info, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Objects with awkward keys, metadata and content types; returns key -> bytes."""
    client = info.client()
    content: dict[str, bytes] = {}
    for i, key in enumerate(AWKWARD_KEYS):
        body = os.urandom(1000 + i * 37)
        put(client, bucket, prefix + key, body, ContentType="text/x-slipway")
        content[key] = body
    client.put_object(
        Bucket=bucket,
        Key=prefix + "meta/with-metadata.css",
        Body=b"body{}",
        ContentType="text/css",
        Metadata={"owner": "uploads-service", "x-trace": "42"},
    )
    content["meta/with-metadata.css"] = b"body{}"
    put(client, bucket, prefix + EMPTY_KEY, b"")
    content[EMPTY_KEY] = b""
    big = os.urandom(20 * MiB + 12345)
    client.upload_fileobj(
        io.BytesIO(big),
        bucket,
        prefix + BIG_KEY,
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
    )
    content[BIG_KEY] = big
    return content


def s3_contents(info: S3Info, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = info.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            out[key[len(prefix) :]] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out


def dir_contents(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".slipway-tmp-")
    }


Target = Callable[[], tuple[S3Location, Callable[[], dict[str, bytes]]]]


@pytest.fixture(params=["same-endpoint", "cross-endpoint"])
def destination(request: pytest.FixtureRequest, s3: S3Info, s3b: S3Info) -> Target:
    """An empty destination on the source's endpoint or on the other server."""
    info = s3 if request.param == "same-endpoint" else s3b

    def make() -> tuple[S3Location, Callable[[], dict[str, bytes]]]:
        bucket = new_bucket(info, "dst")
        return S3Location(info.storage(bucket, "copy")), lambda: s3_contents(info, bucket, "copy/")

    return make


def test_mirror_copies_everything_then_nothing(s3: S3Info, destination: Target) -> None:
    src_bucket = new_bucket(s3, "src")
    expected = fill_awkward(s3, src_bucket, "app/")
    src = S3Location(s3.storage(src_bucket, "app"))
    dst, contents = destination()

    first = mirror(src, dst)
    assert first.failures == []
    assert first.copied == len(expected)
    assert contents() == expected

    # Content type and user metadata travel with the object.
    head = dst.head("meta/with-metadata.css")
    assert head is not None
    meta, _ = head
    assert meta.headers["ContentType"] == "text/css"
    assert meta.user_metadata() == {"owner": "uploads-service", "x-trace": "42"}

    second = mirror(src, dst)
    assert second.copied == 0
    assert second.plan.copy == []
    assert second.plan.unchanged == len(expected)


def test_same_endpoint_copies_refused_once_are_retried(s3: S3Info) -> None:
    """Each same-endpoint copy the server refuses once is retried, and the mirror is whole."""
    src_bucket, dst_bucket = new_bucket(s3, "src"), new_bucket(s3, "dst")
    expected = {f"f/{i}.bin": os.urandom(200 + i) for i in range(40)}
    for key, body in expected.items():
        put(s3.client(), src_bucket, key, body)
    copies: Counter[str] = Counter()
    lock = threading.Lock()

    def first_copy_of_each_fails(method: str, path: str) -> bool:
        if method != "PUT":
            return False
        with lock:
            copies[path] += 1
            return copies[path] == 1

    with fault_proxy(s3.endpoint_url, first_copy_of_each_fails) as proxy:
        src = S3Location(s3.storage(src_bucket).model_copy(update={"endpoint_url": proxy}))
        dst = S3Location(s3.storage(dst_bucket, "copy").model_copy(update={"endpoint_url": proxy}))
        result = mirror(src, dst)
    assert result.failures == []
    assert result.copied == len(expected)
    assert sorted(copies.values()) == [2] * len(expected)  # refused once, then done
    assert s3_contents(s3, dst_bucket, "copy/") == expected


def test_changed_content_with_same_size_is_copied_again(s3: S3Info, destination: Target) -> None:
    src_bucket = new_bucket(s3, "src")
    client = s3.client()
    put(client, src_bucket, "doc.txt", b"version one")
    put(client, src_bucket, "other.txt", b"unchanged")
    src = S3Location(s3.storage(src_bucket))
    dst, contents = destination()
    mirror(src, dst)
    put(client, src_bucket, "doc.txt", b"version two")  # same length, other bytes

    again = mirror(src, dst)
    assert [a.key for a in again.plan.copy] == ["doc.txt"]
    assert contents() == {"doc.txt": b"version two", "other.txt": b"unchanged"}


def test_changed_multipart_object_with_same_size_is_copied_again(
    s3: S3Info, destination: Target
) -> None:
    src_bucket = new_bucket(s3, "src")
    client = s3.client()
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    one, two = os.urandom(11 * MiB), os.urandom(11 * MiB)
    client.upload_fileobj(io.BytesIO(one), src_bucket, "v.bin", Config=config)
    src = S3Location(s3.storage(src_bucket))
    dst, contents = destination()
    mirror(src, dst)
    assert mirror(src, dst).copied == 0
    client.upload_fileobj(io.BytesIO(two), src_bucket, "v.bin", Config=config)
    assert mirror(src, dst).copied == 1
    assert contents() == {"v.bin": two}


def test_delete_mirrors_removals_only_when_asked(s3: S3Info, s3b: S3Info) -> None:
    src_bucket, dst_bucket = new_bucket(s3, "src"), new_bucket(s3b, "dst")
    client = s3.client()
    for key in ("keep.txt", "gone.txt"):
        put(client, src_bucket, key, key.encode())
    src, dst = S3Location(s3.storage(src_bucket)), S3Location(s3b.storage(dst_bucket))
    mirror(src, dst)
    client.delete_object(Bucket=src_bucket, Key="gone.txt")

    assert mirror(src, dst).deleted == 0
    assert set(s3_contents(s3b, dst_bucket)) == {"keep.txt", "gone.txt"}
    dry = mirror(src, dst, delete=True, dry_run=True)
    assert [a.key for a in dry.plan.delete] == ["gone.txt"]
    assert dry.deleted == 0
    assert set(s3_contents(s3b, dst_bucket)) == {"keep.txt", "gone.txt"}
    assert mirror(src, dst, delete=True).deleted == 1
    assert s3_contents(s3b, dst_bucket) == {"keep.txt": b"keep.txt"}


def test_source_listing_failing_half_way_deletes_nothing(s3: S3Info, s3b: S3Info) -> None:
    src_bucket, dst_bucket = new_bucket(s3, "src"), new_bucket(s3b, "dst")
    client = s3.client()
    for i in range(6):
        put(client, src_bucket, f"obj-{i}", b"x")
    src, dst = S3Location(s3.storage(src_bucket)), S3Location(s3b.storage(dst_bucket))
    mirror(src, dst)
    put(s3b.client(), dst_bucket, "only-in-destination", b"y")
    before = s3_contents(s3b, dst_bucket)

    # The first page of the listing arrives, every later page fails.
    with fault_proxy(s3.endpoint_url, lambda method, path: "continuation-token" in path) as proxy:
        settings = s3.storage(src_bucket).model_copy(update={"endpoint_url": proxy})
        flaky = S3Location(settings, page_size=2)
        with pytest.raises(SlipwayError, match=r"failed part-way.*nothing was deleted"):
            mirror(flaky, dst, delete=True)
    assert s3_contents(s3b, dst_bucket) == before


def test_empty_source(s3: S3Info, s3b: S3Info) -> None:
    src = S3Location(s3.storage(new_bucket(s3, "empty")))
    dst_bucket = new_bucket(s3b, "dst")
    dst = S3Location(s3b.storage(dst_bucket))
    result = mirror(src, dst)
    assert result.copied == 0
    assert result.plan.source_objects == 0
    put(s3b.client(), dst_bucket, "precious", b"data")
    with pytest.raises(SlipwayError, match=r"source .* is empty: --delete would empty"):
        mirror(src, dst, delete=True)
    assert s3_contents(s3b, dst_bucket) == {"precious": b"data"}


def test_mirror_to_a_directory_and_back(s3: S3Info, s3b: S3Info, tmp_path: Path) -> None:
    src_bucket = new_bucket(s3, "src")
    client = s3.client()
    expected = {
        "a.txt": b"alpha",
        "sub dir/ü+%.bin": os.urandom(3000),
        "empty": b"",
    }
    for key, body in expected.items():
        put(client, src_bucket, key, body)
    put(client, src_bucket, "sub dir/", b"")  # a folder marker: a directory, not a file
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    big = os.urandom(9 * MiB)
    client.upload_fileobj(io.BytesIO(big), src_bucket, "big.bin", Config=config)
    expected["big.bin"] = big
    local = LocalLocation(tmp_path / "mirror")

    assert mirror(S3Location(s3.storage(src_bucket)), local).copied == 4
    assert dir_contents(tmp_path / "mirror") == expected
    assert mirror(S3Location(s3.storage(src_bucket)), local).copied == 0

    back_bucket = new_bucket(s3b, "back")
    back = S3Location(s3b.storage(back_bucket))
    assert mirror(local, back).copied == 4
    assert s3_contents(s3b, back_bucket) == expected
    assert mirror(local, back).copied == 0
    (tmp_path / "mirror" / "a.txt").write_bytes(b"ALPHA")  # same size, new content
    assert [a.key for a in mirror(local, back).plan.copy] == ["a.txt"]


def test_destination_inside_source_is_refused(s3: S3Info) -> None:
    bucket = new_bucket(s3, "src")
    put(s3.client(), bucket, "data/a", b"a")
    with pytest.raises(SlipwayError, match="overlap"):
        mirror(S3Location(s3.storage(bucket, "data")), S3Location(s3.storage(bucket, "data/m")))
    assert set(s3_contents(s3, bucket)) == {"data/a"}


def test_snapshot_and_restore_are_byte_identical(s3: S3Info, s3b: S3Info) -> None:
    app_bucket, store_bucket = new_bucket(s3, "app"), new_bucket(s3b, "store")
    expected = fill_awkward(s3, app_bucket)
    store = s3b.storage(store_bucket, "backups")
    manifest = snapshot_to_store(
        S3Location(s3.storage(app_bucket)), store, "app", new_backup_id(), level=3
    )
    assert manifest.object_count == len(expected)
    assert {o.key: o.sha256 for o in manifest.objects} == {
        k: hashlib.sha256(v).hexdigest() for k, v in expected.items()
    }
    entry = find_snapshot(store, "app", "latest")
    assert entry.manifest.id == manifest.id

    target_bucket = new_bucket(s3, "restored")
    target = S3Location(s3.storage(target_bucket))
    assert restore_snapshot(store, entry.manifest, target)[0] == len(expected)
    assert s3_contents(s3, target_bucket) == expected
    head = target.head("meta/with-metadata.css")
    assert head is not None
    assert head[0].headers["ContentType"] == "text/css"
    assert head[0].metadata == {"owner": "uploads-service", "x-trace": "42"}

    # Only a prefix.
    partial_bucket = new_bucket(s3, "partial")
    restore_snapshot(store, entry.manifest, S3Location(s3.storage(partial_bucket)), prefix="big/")
    assert s3_contents(s3, partial_bucket) == {BIG_KEY: expected[BIG_KEY]}


def test_corrupted_snapshot_is_refused_and_writes_nothing(s3: S3Info, s3b: S3Info) -> None:
    app_bucket, store_bucket = new_bucket(s3, "app"), new_bucket(s3b, "store")
    client = s3.client()
    for i in range(5):
        put(client, app_bucket, f"file-{i}.txt", os.urandom(5000))
    store = s3b.storage(store_bucket)
    manifest = snapshot_to_store(S3Location(s3.storage(app_bucket)), store, "app", new_backup_id())
    archive = bytearray(
        s3b.client().get_object(Bucket=store_bucket, Key=manifest.archive.key)["Body"].read()
    )
    archive[len(archive) // 2] ^= 0x01
    s3b.client().put_object(Bucket=store_bucket, Key=manifest.archive.key, Body=bytes(archive))

    target_bucket = new_bucket(s3, "restored")
    with pytest.raises(SlipwayError, match=r"is damaged.*nothing was restored"):
        restore_snapshot(store, manifest, S3Location(s3.storage(target_bucket)))
    assert s3_contents(s3, target_bucket) == {}
