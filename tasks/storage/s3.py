"""Object storage (S3, MinIO) operations: streamed multi-part uploads, hashed reads, cleanup."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from blocks.errors import SlipwayError
from blocks.settings import StorageSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

PART_SIZE = 8 * 1024 * 1024
# In-flight parts are buffered in memory: 4 x 8 MiB keeps the whole backup under 256 MiB.
UPLOAD_CONFIG = TransferConfig(
    multipart_threshold=PART_SIZE,
    multipart_chunksize=PART_SIZE,
    max_concurrency=4,
    max_io_queue=4,
    use_threads=True,
)
READ_CHUNK = 1024 * 1024


def storage_error(
    exc: Exception,
    store: StorageSettings,
    named_by: str = "SLIPWAY_BACKUP_URL",
    endpoint_by: str = "AWS_ENDPOINT_URL_S3",
) -> SlipwayError:
    """A one-line message for an S3 failure, naming the problem and the fix; `named_by`
    says what named the bucket, `endpoint_by` what gave the endpoint (what to fix)."""
    where = f"s3://{store.bucket}" + (f" at {store.endpoint_url}" if store.endpoint_url else "")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return SlipwayError(
            f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "or the ObjectStorage block's keys"
        )
    if isinstance(exc, EndpointConnectionError):
        return SlipwayError(
            f"cannot reach the S3 endpoint for {where}: check {endpoint_by} and the network"
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in {"NoSuchBucket"} or (code in {"404", "NotFound"} and status == 404):
            endpoint = store.endpoint_url or "AWS S3"
            return SlipwayError(
                f"bucket {store.bucket!r} does not exist at {endpoint}: create it or fix {named_by}"
            )
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return SlipwayError(
                f"S3 refused the credentials for {where} ({code}): check the access key and secret"
            )
        if code in {"XMinioStorageFull", "InsufficientStorage", "EntityTooLarge", "QuotaExceeded"}:
            return SlipwayError(
                f"the backup store {where} is full ({code}): free space or raise it"
            )
        message = exc.response.get("Error", {}).get("Message", "")
        if "space" in message.lower() or "no writable volumes" in message.lower():
            return SlipwayError(f"the backup store {where} is full ({message}): free space")
        return SlipwayError(f"S3 error on {where}: {code} {message}".strip())
    if isinstance(exc, BotoCoreError):
        return SlipwayError(f"S3 error on {where}: {exc}")
    return SlipwayError(f"S3 error on {where}: {exc}")


@contextlib.contextmanager
def s3_errors(store: StorageSettings) -> Iterator[None]:
    """An S3 failure inside the block becomes `storage_error`'s one line."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, store) from exc


def check_bucket(client: S3Client, store: StorageSettings) -> None:
    """Fail early, in one line, when the bucket is missing or the credentials are wrong."""
    try:
        client.head_bucket(Bucket=store.bucket)
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, store) from exc


class HashingReader(io.RawIOBase):
    """Reads a stream in full-size chunks while hashing and counting what passes through.

    S3 rejects multi-part parts under 5 MiB, so `read(n)` returns n bytes until the end.
    `on_end` runs before the final empty read: raising there aborts the upload.
    With `part_md5s` it also keeps the MD5 of each PART_SIZE part: the upload's ETag
    (`etag_matches`) can then be checked without reading the object back.
    """

    def __init__(
        self,
        source: IO[bytes],
        *,
        on_end: Callable[[], None] = lambda: None,
        on_chunk: Callable[[int], None] = lambda n: None,
        part_md5s: bool = False,
    ) -> None:
        self._source = source
        self._on_end = on_end
        self._on_chunk = on_chunk
        self._ended = False
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._hashing_parts = part_md5s
        self._part_md5s: list[bytes] = []
        self._part = hashlib.md5(usedforsecurity=False)
        self._part_fill = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = READ_CHUNK * 16 if size is None or size < 0 else size
        parts, got = [], 0
        while got < want:
            chunk = self._source.read(want - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
        if not data and not self._ended:
            self._ended = True
            self._on_end()
        self.sha256.update(data)
        if self._hashing_parts:
            self._hash_parts(data)
        self.size += len(data)
        self._on_chunk(len(data))
        return data

    def _hash_parts(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), PART_SIZE - self._part_fill)
            self._part.update(view[:take])
            self._part_fill += take
            view = view[take:]
            if self._part_fill == PART_SIZE:
                self._part_md5s.append(self._part.digest())
                self._part, self._part_fill = hashlib.md5(usedforsecurity=False), 0

    def etag_matches(self, etag: str) -> bool:
        """Whether `etag` is S3's MD5 ETag of exactly these bytes, as one or multi-part upload."""
        if not self._hashing_parts:
            return False
        parts = self._part_md5s + (
            [self._part.digest()] if self._part_fill or not self.size else []
        )
        return etag.strip('"') in md5_etags(parts)


def md5_etags(part_md5s: list[bytes]) -> set[str]:
    """The ETags S3 gives these parts' bytes: multi-part, and single-part when one part."""
    etags = {
        f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"
    }
    if len(part_md5s) == 1:
        etags.add(part_md5s[0].hex())
    return etags


def confirm_stored(
    client: S3Client,
    store: StorageSettings,
    key: str,
    size: int,
    sha256: str,
    etag_matches: Callable[[str], bool],
) -> None:
    """Read back what was stored at `key`: its size, then its ETag, or else its bytes.

    A HEAD settles it when the store's ETag is the MD5 one (SeaweedFS, MinIO, S3 without
    KMS); an ETag of another kind costs reading the object back to compare its sha256.
    """
    where = f"s3://{store.bucket}/{key}"
    try:
        head = client.head_object(Bucket=store.bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        missing = isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in {
            "404",
            "NoSuchKey",
            "NotFound",
        }
        why = "the store does not have it" if missing else str(storage_error(exc, store))
        raise SlipwayError(
            f"the upload to {where} cannot be read back ({why}): nothing was recorded; "
            "run the backup again"
        ) from exc
    stored = head["ContentLength"]
    if stored != size:
        raise SlipwayError(
            f"the upload to {where} is incomplete: {stored} bytes stored, {size} sent; "
            "nothing was recorded; run the backup again"
        )
    if etag_matches(head.get("ETag", "")):
        return
    digest = hashlib.sha256()
    for chunk in iter_object(client, store, key):
        digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise SlipwayError(
            f"the upload to {where} differs from what was sent (sha256 mismatch): "
            "nothing was recorded; run the backup again"
        )


def put_confirmed(client: S3Client, store: StorageSettings, key: str, body: bytes) -> str:
    """Store a small object in one request and read it back; its sha256 hex."""
    try:
        client.put_object(Bucket=store.bucket, Key=key, Body=body)
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, store) from exc
    sha256 = hashlib.sha256(body).hexdigest()
    md5 = hashlib.md5(body, usedforsecurity=False).digest()
    confirm_stored(
        client, store, key, len(body), sha256, lambda etag: etag.strip('"') in md5_etags([md5])
    )
    return sha256


def upload_stream(
    client: S3Client, store: StorageSettings, key: str, reader: HashingReader, content_type: str
) -> None:
    """Multi-part upload of a stream as it is produced; a failure aborts the upload."""
    try:
        client.upload_fileobj(
            reader,  # type: ignore[arg-type]
            store.bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=UPLOAD_CONFIG,
        )
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, store) from exc


def iter_object(
    client: S3Client, store: StorageSettings, key: str, chunk: int = READ_CHUNK
) -> Iterator[bytes]:
    try:
        body = client.get_object(Bucket=store.bucket, Key=key)["Body"]
    except (ClientError, BotoCoreError) as exc:
        raise storage_error(exc, store) from exc
    yield from body.iter_chunks(chunk)


def delete_prefix(client: S3Client, store: StorageSettings, prefix: str) -> int:
    """Delete every object under `prefix` (a backup's folder); returns how many."""
    deleted = 0
    paginator = client.get_paginator("list_objects_v2")
    with s3_errors(store):
        for page in paginator.paginate(Bucket=store.bucket, Prefix=prefix.rstrip("/") + "/"):
            keys: list[ObjectIdentifierTypeDef] = [
                {"Key": o["Key"]} for o in page.get("Contents", [])
            ]
            if keys:
                client.delete_objects(Bucket=store.bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
    return deleted


def abort_uploads(
    client: S3Client, store: StorageSettings, prefix: str, stale: Callable[[str], bool]
) -> list[str]:
    """Abort the multi-part uploads under `prefix` whose key `stale` selects; their keys."""
    aborted = []
    paginator = client.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=store.bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            if stale(upload["Key"]):
                client.abort_multipart_upload(
                    Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted.append(upload["Key"])
    return aborted
