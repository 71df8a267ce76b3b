"""The catalog of database backups in the store: ids, key layout, manifests, verifications.

Bucket snapshots (`tasks/storage/snapshot.py`) share its entries, listing and lookup.

Layout under the store's prefix, one folder per backup:
    postgres/<database>/<backup id>/owner.json       written first: who runs the backup
    postgres/<database>/<backup id>/dump.pgc.zst     pg_dump -Fc -Z0, compressed by Slipway
    postgres/<database>/<backup id>/globals.sql.zst  optional pg_dumpall --globals-only
    (each with `.age` appended when the backup is encrypted: then an age file)
    postgres/<database>/<backup id>/manifest.json    written last: its presence makes a backup
    postgres/<database>/<backup id>/verification.json  the latest verification's outcome

<database> is the name as one key segment (`name_segment`): `app/1999` is `app%2F1999`,
so no database's folder can lie inside another's.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, Literal, TypeVar
from urllib.parse import unquote

from pydantic import BaseModel, Field

from blocks.errors import SlipwayError
from blocks.settings import StorageSettings
from tasks.storage.s3 import s3_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MANIFEST = "manifest.json"
VERIFICATION = "verification.json"
ID_FORMAT = "%Y%m%dT%H%M%SZ"
_ID_PATTERN = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]+")

Compression = Literal["zstd", "gzip"]
DUMP_SUFFIX: dict[str, str] = {"zstd": "dump.pgc.zst", "gzip": "dump.pgc.gz"}
ENCRYPTED_SUFFIX = ".age"  # an encrypted object is a standard age file: `age -d` reads it


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable UTC id; the random tail keeps two backups in one second apart."""
    now = now or utcnow()
    return f"{now.strftime(ID_FORMAT)}-{secrets.token_hex(2)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_backup_id(name: str) -> bool:
    """Whether a folder name is a backup id (anything else under a database is not ours)."""
    return _ID_PATTERN.fullmatch(name) is not None


def backup_time(backup_id: str) -> datetime:
    return datetime.strptime(backup_id.split("-", 1)[0], ID_FORMAT).replace(tzinfo=UTC)


class TableCount(BaseModel):
    schema_name: str
    table: str
    rows: int


class StoredObject(BaseModel):
    key: str
    size: int
    sha256: str


class CatalogManifest(BaseModel):
    """What every manifest (a backup's, a snapshot's) records. Written last: a folder
    without one is unfinished, not a backup."""

    format: int = 1
    id: str
    status: Literal["complete"] = "complete"
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    encrypted: bool = Field(default=False, description="stored as age files; checksums are theirs")
    recipients: list[str] = Field(
        default_factory=list, description="key ids (the age1... recipients) it is encrypted to"
    )

    @property
    def created_at(self) -> datetime:
        return backup_time(self.id)


class Manifest(CatalogManifest):
    """What a database backup is."""

    kind: Literal["postgres"] = "postgres"
    database: str
    server: str = Field(description="host:port of the server dumped")
    server_version: str
    pg_dump_version: str
    dump_seconds: float = Field(description="dump-to-upload stage alone")
    raw_bytes: int
    compression: Compression
    compression_level: int
    dump: StoredObject
    globals: StoredObject | None = None
    tables: list[TableCount]
    app_version: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Verification(BaseModel):
    backup_id: str
    verified_at: datetime
    ok: bool
    drill: bool
    detail: str


M = TypeVar("M", bound=CatalogManifest)


class CatalogEntry(BaseModel, Generic[M]):
    """One complete backup or snapshot: its manifest and its latest verification."""

    manifest: M
    verification: Verification | None = None

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.ok


BackupEntry = CatalogEntry[Manifest]


def name_segment(name: str) -> str:
    """A database name as one key segment: `%` and `/` percent-encoded, `.`/`..` too.

    Only what could split or alias a segment is encoded, so every name without those
    characters keeps the key it always had (existing stores keep working).
    """
    segment = name.replace("%", "%25").replace("/", "%2F")
    return segment.replace(".", "%2E") if segment in {".", ".."} else segment


def database_root(store: StorageSettings, database: str) -> str:
    """The key of the folder holding all of `database`'s backups."""
    return store.key("postgres", name_segment(database))


def database_url(store: StorageSettings, database: str, *parts: str) -> str:
    """`s3://` URL of `database`'s folder (or of `parts` inside it), for messages."""
    return f"s3://{store.bucket}/" + "/".join([database_root(store, database), *parts])


def backup_folder(store: StorageSettings, database: str, backup_id: str) -> str:
    return f"{database_root(store, database)}/{backup_id}"


def read_json(client: S3Client, bucket: str, key: str) -> dict[str, object] | None:
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    data: dict[str, object] = json.loads(body)
    return data


def write_json(client: S3Client, store: StorageSettings, key: str, model: BaseModel) -> None:
    client.put_object(
        Bucket=store.bucket,
        Key=key,
        Body=model.model_dump_json(indent=2).encode(),
        ContentType="application/json",
    )


def list_folders(client: S3Client, store: StorageSettings, database: str) -> dict[str, set[str]]:
    """Backup id -> names of the objects in its folder (complete or not); only backup ids."""
    folders = folders_under(client, store, database_root(store, database))
    return {name: names for name, names in folders.items() if is_backup_id(name)}


def folders_under(client: S3Client, store: StorageSettings, root: str) -> dict[str, set[str]]:
    """Folder name -> names of the objects in it, for the folders directly under `root`."""
    root = root.rstrip("/") + "/"
    folders: dict[str, set[str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=root):
        for obj in page.get("Contents", []):
            backup_id, _, name = obj["Key"][len(root) :].partition("/")
            folders.setdefault(backup_id, set()).add(name)
    return folders


def complete_folders(
    client: S3Client, store: StorageSettings, root: str
) -> Iterator[tuple[dict[str, object], dict[str, object] | None]]:
    """(manifest, verification or None) of each folder under `root` that has a manifest,
    newest first: a folder without one is an unfinished backup, not a backup."""
    for folder_id, names in sorted(folders_under(client, store, root).items(), reverse=True):
        if MANIFEST not in names:
            continue
        folder = f"{root.rstrip('/')}/{folder_id}"
        raw = read_json(client, store.bucket, f"{folder}/{MANIFEST}")
        if raw is not None:
            yield raw, read_json(client, store.bucket, f"{folder}/{VERIFICATION}")


def list_entries(
    client: S3Client, store: StorageSettings, root: str, kind: type[CatalogEntry[M]]
) -> list[CatalogEntry[M]]:
    """The complete entries (folders with a manifest) under `root`, newest first."""
    with s3_errors(store):
        return [
            kind.model_validate({"manifest": raw, "verification": ver or None})
            for raw, ver in complete_folders(client, store, root)
        ]


def databases_with_backups(client: S3Client, store: StorageSettings) -> list[str]:
    """The names of the databases that have at least one complete backup in the store."""
    root = store.key("postgres") + "/"
    found: set[str] = set()
    with s3_errors(store):
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=root
        ):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(root) :].split("/")  # database, backup id, name
                if len(parts) == 3 and parts[2] == MANIFEST and is_backup_id(parts[1]):
                    found.add(unquote(parts[0]))
    return sorted(found)


def list_backups(client: S3Client, store: StorageSettings, database: str) -> list[BackupEntry]:
    """Complete backups (those with a manifest), newest first."""
    return list_entries(client, store, database_root(store, database), BackupEntry)


def find_entry(
    entries: Sequence[CatalogEntry[M]], ref: str, *, none: str, unknown: str
) -> CatalogEntry[M]:
    """The entry with id `ref`, or with `latest` the newest (`entries` are newest first).

    Raises `SlipwayError(none)` when there are no entries, `SlipwayError(unknown)` when none
    has that id.
    """
    if not entries:
        raise SlipwayError(none)
    if ref == "latest":
        return entries[0]
    for entry in entries:
        if entry.manifest.id == ref:
            return entry
    raise SlipwayError(unknown)


def find_backup(
    client: S3Client,
    store: StorageSettings,
    database: str,
    ref: str,
    choose: str = "point DATABASE_URL (or --database-block) at one of those",
) -> BackupEntry:
    """A backup by id, or `latest`; when `database` has none, the error names those that do
    and says how to `choose` one."""
    entries = list_backups(client, store, database)
    none = f"no backups of {database!r} in {database_url(store, database)}: run `slipway backup`"
    if not entries:
        others = [name for name in databases_with_backups(client, store) if name != database]
        if others:
            names = ", ".join(repr(name) for name in others)
            none = (
                f"no backups of {database!r} in {database_url(store, database)}: the store has "
                f"backups of {names}: {choose}, or run `slipway backup`"
            )
    return find_entry(
        entries,
        ref,
        none=none,
        unknown=f"no backup {ref!r} of {database!r}: see `slipway backups list`",
    )
