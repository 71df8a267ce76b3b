"""Listing a bucket prefix with its folders listed side by side.

A plain ListObjectsV2 walk is one page of 1,000 keys after another, each waiting for the
last. Folders are independent, so they are listed concurrently: first the folder tree is
walked with a delimiter, level by level, until there are enough folders to keep the
workers busy; then each of those folders is listed whole, in parallel. A bucket without
folders costs the same as before: its delimiter listing is the listing.

Every page must succeed: a failure raises, and no partial listing is ever returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WORKERS = 16
ENOUGH_FOLDERS = 2 * WORKERS  # past this, listing whole folders keeps every worker busy
MAX_DEPTH = 4  # deeper trees are listed whole from there

T = TypeVar("T")
Keep = Callable[[dict[str, Any]], T | None]


def _pages(client: S3Client, bucket: str, prefix: str, page_size: int, **kw: Any) -> Iterator[Any]:
    paginator = client.get_paginator("list_objects_v2")
    yield from paginator.paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}, **kw
    )


def _kept(page: Any, keep: Keep[T], folder: str | None = None) -> list[T]:
    return [
        k
        for entry in page.get("Contents", [])
        if not _phantom(entry, folder) and (k := keep(entry)) is not None
    ]


def _phantom(entry: dict[str, Any], folder: str | None) -> bool:
    """SeaweedFS lists an emptied folder under its own name, with no ETag, when asked with a
    delimiter (a plain listing never shows it); a real folder marker has an ETag."""
    return bool(entry["Key"] == folder and not str(entry.get("ETag", "")).strip('"'))


def _level(
    client: S3Client, bucket: str, prefix: str, page_size: int, keep: Keep[T]
) -> tuple[list[T], list[str]]:
    """The objects directly in `prefix` and its sub-folders."""
    objects: list[T] = []
    folders: list[str] = []
    for page in _pages(client, bucket, prefix, page_size, Delimiter="/"):
        objects += _kept(page, keep, prefix)
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return objects, folders


def _whole(client: S3Client, bucket: str, prefix: str, page_size: int, keep: Keep[T]) -> list[T]:
    objects: list[T] = []
    for page in _pages(client, bucket, prefix, page_size):
        objects += _kept(page, keep)
    return objects


def list_objects(
    client: S3Client, bucket: str, prefix: str, keep: Keep[T], page_size: int = 1000
) -> list[T]:
    """`keep(entry)` of every object under `prefix`, in no particular order; entries are
    ListObjectsV2's (Key, Size, ETag, LastModified), and None from `keep` drops one. Each
    page is turned into kept values as it arrives, so pages are not held.

    Example:
        >>> keys = list_objects(store.client(), "backups", "app/", lambda e: e["Key"])  # doctest: +SKIP
    """
    found: list[T] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        folders = [prefix]
        for _ in range(MAX_DEPTH):
            if len(folders) >= ENOUGH_FOLDERS:
                break
            deeper: list[str] = []
            for objects, subfolders in pool.map(
                lambda f: _level(client, bucket, f, page_size, keep), folders
            ):
                found += objects
                deeper += subfolders
            folders = deeper
            if not folders:
                return found
        for objects in pool.map(lambda f: _whole(client, bucket, f, page_size, keep), folders):
            found += objects
    return found
