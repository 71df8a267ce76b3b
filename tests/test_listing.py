"""Listing with folders side by side finds exactly what a plain listing finds, and never
returns a partial listing (real SeaweedFS; failures injected by a proxy in front of it)."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tasks.storage.listing import ENOUGH_FOLDERS, MAX_DEPTH, list_objects
from tests.harness.s3 import S3Info
from tests.s3_fault_proxy import fault_proxy

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.s3

PAGE = 7  # small pages: every folder spans several


def _client(s3: S3Info, endpoint: str | None = None) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint or s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            max_pool_connections=32,
        ),
    )


def _plain(client: S3Client, bucket: str, prefix: str) -> list[tuple[str, int, str]]:
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [(o["Key"], o["Size"], o["ETag"]) for o in page.get("Contents", [])]
    return sorted(found)


def _entry(o: dict[str, Any]) -> tuple[str, int, str]:
    return (o["Key"], o["Size"], o["ETag"])


@pytest.fixture(scope="module")
def tree(s3: S3Info) -> tuple[str, list[str]]:
    """A bucket with objects at every level, folder markers, an emptied folder, a tree deeper
    than the walk, and enough folders for the parallel phase. (SeaweedFS folds empty path segments, so
    `a//b` is not among them.)"""
    client = _client(s3)
    bucket = f"listing-{secrets.token_hex(3)}"
    client.create_bucket(Bucket=bucket)
    deep = "/".join(f"d{i}" for i in range(MAX_DEPTH + 3))
    keys = [
        "top.txt",
        "app/readme",
        "app/marker/",
        "app/marker/inside.bin",
        "app/marker/inside2.bin",
        "app/marker/inside3.bin",
        f"app/{deep}/leaf.bin",
        f"app/{deep}/leaf2.bin",
        "app/x/y/z",
        *(f"app/many/{i:03}/{j}.bin" for i in range(ENOUGH_FOLDERS + 5) for j in range(3)),
        *(f"app/flat-{i}" for i in range(20)),
        "other/outside",
    ]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    # An emptied folder: SeaweedFS still shows it to a delimiter listing, as no object.
    client.put_object(Bucket=bucket, Key="app/emptied/gone.bin", Body=b"x")
    client.delete_object(Bucket=bucket, Key="app/emptied/gone.bin")
    return bucket, keys


@pytest.mark.parametrize("prefix", ["", "app/", "app/many/", "app/marker/", "nothing/"])
def test_finds_what_a_plain_listing_finds(
    s3: S3Info, tree: tuple[str, list[str]], prefix: str
) -> None:
    bucket, keys = tree
    client = _client(s3)
    got = sorted(list_objects(client, bucket, prefix, _entry, page_size=PAGE))
    assert got == _plain(client, bucket, prefix)
    assert sorted(k for k, _, _ in got) == sorted(k for k in keys if k.startswith(prefix))


def test_dropped_entries_and_kept_values(s3: S3Info, tree: tuple[str, list[str]]) -> None:
    bucket, _ = tree
    sizes = list_objects(
        _client(s3), bucket, "app/", lambda o: None if o["Key"].endswith("/") else o["Size"]
    )
    assert sum(sizes) == sum(s for k, s, _ in _plain(_client(s3), bucket, "app/") if k[-1] != "/")


@pytest.mark.parametrize("folder", ["app/many/017/", "app/marker/", "app/"])
def test_a_failed_page_fails_the_whole_listing(
    s3: S3Info, tree: tuple[str, list[str]], folder: str
) -> None:
    """A later page of one folder fails: the listing raises, it never returns the rest."""
    bucket, _ = tree
    quoted = folder.replace("/", "%2F")

    def second_page_of_folder(method: str, path: str) -> bool:
        return method == "GET" and f"prefix={quoted}" in path and "continuation-token" in path

    with fault_proxy(s3.endpoint_url, second_page_of_folder) as proxy:
        client = _client(s3, proxy)
        with pytest.raises(ClientError):
            list_objects(client, bucket, "app/", _entry, page_size=2)
