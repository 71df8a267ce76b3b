"""Where objects live: an S3 bucket and prefix, or a local directory, behind one interface.

Mirrors, snapshots and file restores read and write through `Location`, so each of them
works between any two S3 endpoints and local directories. Keys are relative to the
location's prefix (or directory) and always use `/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from blocks.errors import SlipwayError
from blocks.settings import StorageSettings
from tasks.storage.listing import list_objects
from tasks.storage.local_files import TMP_PREFIX, key_problem, walk
from tasks.storage.s3 import UPLOAD_CONFIG, storage_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

# Metadata Slipway adds to what it copies, to compare and verify later without reading.
SOURCE_ETAG = "slipway-source-etag"
SHA256 = "slipway-sha256"
SLIPWAY_METADATA = (SOURCE_ETAG, SHA256)
# Objects up to this size are copied in one request and held in memory on the way.
SMALL_OBJECT = UPLOAD_CONFIG.multipart_threshold
READ_CHUNK = 1024 * 1024
# Standard headers that travel with an object besides its user metadata.
HEADERS = (
    "ContentType",
    "CacheControl",
    "ContentDisposition",
    "ContentEncoding",
    "ContentLanguage",
)


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing shows it."""

    key: str  # relative to the location, '/'-separated
    size: int
    etag: str = ""  # S3 ETag without quotes; "" for local files
    modified: datetime | None = None
    problem: str = ""  # why this entry of a local directory cannot be mirrored (then skipped)

    @property
    def multipart(self) -> bool:
        """An S3 multi-part ETag (`md5-of-md5s-N`) is not the content's MD5."""
        return "-" in self.etag


@dataclass
class ObjectMeta:
    """What travels with an object's bytes: standard headers and user metadata."""

    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def user_metadata(self) -> dict[str, str]:
        """The metadata without Slipway's own stamps."""
        return {k: v for k, v in self.metadata.items() if k not in SLIPWAY_METADATA}


def md5_etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Location(Protocol):
    """A place objects can be listed, read from and written to."""

    def describe(self) -> str: ...

    def iter_objects(self) -> Iterator[ObjectInfo]: ...

    def read(self, key: str) -> tuple[IO[bytes], ObjectMeta, ObjectInfo]: ...

    def head(self, key: str) -> tuple[ObjectMeta, ObjectInfo] | None: ...

    def write(
        self, key: str, source: IO[bytes] | bytes, meta: ObjectMeta, size: int
    ) -> ObjectInfo: ...

    def delete(self, keys: list[str]) -> None: ...


class S3Location:
    """A bucket and prefix on one S3 endpoint, with its own credentials."""

    def __init__(
        self,
        settings: StorageSettings,
        connections: int = 32,
        page_size: int = 1000,
        named_by: str = "its URL",
        endpoint_by: str = "its endpoint URL",
    ) -> None:
        self.settings = settings
        # What to fix when the bucket does not exist, when the endpoint does not answer.
        self.named_by, self.endpoint_by = named_by, endpoint_by
        self.page_size = page_size
        self.client: S3Client = settings.client(max_connections=connections)
        self.root = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""

    def describe(self) -> str:
        where = f" at {self.settings.endpoint_url}" if self.settings.endpoint_url else ""
        return f"s3://{self.settings.bucket}/{self.root}{where}"

    def full_key(self, key: str) -> str:
        return self.root + key

    def _fail(self, exc: Exception) -> SlipwayError:
        return storage_error(exc, self.settings, self.named_by, self.endpoint_by)

    def check(self, must_exist: bool = True) -> None:
        """One line when the bucket is missing or the credentials are wrong."""
        try:
            self.client.head_bucket(Bucket=self.settings.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc) from exc

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every object under the prefix; raises if any page fails (never a partial list)."""
        root = len(self.root)

        def info(obj: dict[str, Any]) -> ObjectInfo | None:
            key = obj["Key"][root:]
            etag = obj.get("ETag", "").strip('"')
            return ObjectInfo(key, obj["Size"], etag, obj["LastModified"]) if key else None

        try:
            listed = list_objects(
                self.client, self.settings.bucket, self.root, info, self.page_size
            )
        except (ClientError, BotoCoreError) as exc:
            raise SlipwayError(
                f"listing {self.describe()} failed part-way ({self._fail(exc)}); nothing was "
                "deleted: run again"
            ) from exc
        yield from listed

    def _meta(self, response: Any) -> ObjectMeta:
        headers = {h: response[h] for h in HEADERS if response.get(h)}
        return ObjectMeta(headers, dict(response.get("Metadata") or {}))

    def read(self, key: str) -> tuple[IO[bytes], ObjectMeta, ObjectInfo]:
        try:
            r = self.client.get_object(Bucket=self.settings.bucket, Key=self.full_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc) from exc
        info = ObjectInfo(
            key, r["ContentLength"], r.get("ETag", "").strip('"'), r.get("LastModified")
        )
        return r["Body"], self._meta(r), info  # type: ignore[return-value]

    def head(self, key: str) -> tuple[ObjectMeta, ObjectInfo] | None:
        try:
            r = self.client.head_object(Bucket=self.settings.bucket, Key=self.full_key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise self._fail(exc) from exc
        except BotoCoreError as exc:
            raise self._fail(exc) from exc
        return self._meta(r), ObjectInfo(key, r["ContentLength"], r.get("ETag", "").strip('"'))

    def write(self, key: str, source: IO[bytes] | bytes, meta: ObjectMeta, size: int) -> ObjectInfo:
        extra: dict[str, Any] = {**meta.headers, "Metadata": meta.metadata}
        try:
            if isinstance(source, bytes):
                r = self.client.put_object(
                    Bucket=self.settings.bucket, Key=self.full_key(key), Body=source, **extra
                )
                return ObjectInfo(key, len(source), r.get("ETag", "").strip('"'))
            self.client.upload_fileobj(
                source,  # type: ignore[arg-type]
                self.settings.bucket,
                self.full_key(key),
                ExtraArgs=extra,
                Config=UPLOAD_CONFIG,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc) from exc
        return ObjectInfo(key, size)

    def copy_from(self, other: S3Location, key: str, dst_key: str, meta: ObjectMeta | None) -> None:
        """Server-side copy (same endpoint); `meta` replaces the metadata, None keeps it.

        botocore retries transient failures (a 200 answer carrying an error among them).
        """
        source: CopySourceTypeDef = {"Bucket": other.settings.bucket, "Key": other.full_key(key)}
        extra: dict[str, Any] = {}
        if meta is not None:
            extra = {"MetadataDirective": "REPLACE", **meta.headers, "Metadata": meta.metadata}
        try:
            self.client.copy_object(  # type: ignore[call-overload]
                CopySource=source, Bucket=self.settings.bucket, Key=self.full_key(dst_key), **extra
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc) from exc

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.full_key(k)} for k in keys[start : start + 1000]]
            try:
                r = self.client.delete_objects(
                    Bucket=self.settings.bucket,
                    Delete={"Objects": batch, "Quiet": True},  # type: ignore[typeddict-item]
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc) from exc
            if errors := r.get("Errors"):
                raise SlipwayError(
                    f"deleting from {self.describe()} failed for {len(errors)} objects "
                    f"({errors[0].get('Code')}: {errors[0].get('Key')})"
                )


class LocalLocation:
    """A local directory; keys are paths below it. Content types are guessed from names."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def path(self, key: str, size: int = 0) -> Path:
        """The file for `key`; refused when the key cannot be one, or leads out of the root."""
        if why := key_problem(key, size):
            raise SlipwayError(f"key {key!r} cannot be a file under {self.root}: it {why}")
        path = self.root.joinpath(*key.split("/"))
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise SlipwayError(f"key {key!r} would leave {self.root}: refusing it")
        return path

    def check(self, must_exist: bool = True) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise SlipwayError(f"{self.root} is not a directory: give a directory")
        if must_exist and not self.root.is_dir():
            raise SlipwayError(f"directory {self.root} does not exist: check the path")

    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every file below the root; links and special files that are none come with the
        `problem` that keeps them from being mirrored."""
        if not self.root.exists():
            return
        for key, entry in walk(self.root):
            if isinstance(entry, str):
                yield ObjectInfo(key, 0, problem=entry)
            else:
                modified = datetime.fromtimestamp(entry.st_mtime, UTC)
                yield ObjectInfo(key, entry.st_size, "", modified)

    def _meta(self, key: str) -> ObjectMeta:
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return ObjectMeta({"ContentType": content_type}, {})

    def read(self, key: str) -> tuple[IO[bytes], ObjectMeta, ObjectInfo]:
        path = self.path(key)
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise SlipwayError(f"cannot read {path}: {exc}") from exc
        return stream, self._meta(key), ObjectInfo(key, path.stat().st_size)

    def head(self, key: str) -> tuple[ObjectMeta, ObjectInfo] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        return self._meta(key), ObjectInfo(key, path.stat().st_size)

    def write(self, key: str, source: IO[bytes] | bytes, meta: ObjectMeta, size: int) -> ObjectInfo:
        """Written beside the final name, then renamed: a reader never sees half a file.

        The temporary file is always inside the root: `path` refuses any key whose file
        would not be below it.
        """
        path = self.path(key, size)
        if key.endswith("/"):  # an empty S3 folder marker
            path.mkdir(parents=True, exist_ok=True)
            return ObjectInfo(key, 0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes):
                    out.write(source)
                else:
                    shutil.copyfileobj(source, out, READ_CHUNK)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(tmp)
            raise SlipwayError(f"cannot write {path}: {exc}") from exc
        return ObjectInfo(key, path.stat().st_size)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.path(key).unlink(missing_ok=True)

    def local_digest(self, key: str, algorithm: str) -> str:
        digest = hashlib.new(algorithm)
        with self.path(key).open("rb") as f:
            while chunk := f.read(READ_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


AnyLocation = S3Location | LocalLocation


def parse_location(
    ref: str, env_prefix: str = "AWS_", settings: StorageSettings | None = None, role: str = ""
) -> AnyLocation:
    """`s3://bucket/prefix` (endpoint and keys from `settings` or the environment) or a path.

    `role` (source, destination...) is how messages name it.
    """
    if ref.startswith("s3://"):
        base = settings.at(ref) if settings else StorageSettings.from_url(ref, env_prefix)
        keys = "its block's" if settings else f"{env_prefix}*"
        endpoint = (
            "its block's endpoint_url"
            if settings
            else "AWS_ENDPOINT_URL_S3"
            if env_prefix == "AWS_"
            else f"{env_prefix}ENDPOINT_URL (or AWS_ENDPOINT_URL_S3)"
        )
        return S3Location(
            base,
            named_by=f"the {role or 'URL'} {ref} (endpoint and keys: {keys})",
            endpoint_by=endpoint,
        )
    if ref.startswith("s3:"):  # not a directory named "s3:": a URL missing a slash
        raise SlipwayError(
            f"{role or 'location'} {ref!r} is a malformed S3 URL: write s3://bucket/prefix"
        )
    if "://" in ref:
        raise SlipwayError(f"{ref!r} is neither s3://bucket/prefix nor a local directory")
    return LocalLocation(Path(ref).expanduser())
