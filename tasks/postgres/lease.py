"""Who owns a backup's folder while it runs: an advisory lock that dies with its owner.

Before it writes anything, a backup takes a session-level PostgreSQL advisory lock keyed
on its folder, on the server it dumps (in the `postgres` maintenance database, so a
restore renaming the app's database does not end the session; in the app's own database
when the role may not connect there), then writes `owner.json`,
and keeps the lock until its manifest is written. A process that dies, even by kill -9,
closes its connection and so releases the lock at once; the lock of a machine that
vanished goes within about a minute (server-side TCP keepalives).

A clean-up removes a folder without a manifest only while it holds that folder's lock
itself: then its owner is gone, and no one will ever take that id again. This needs no
clocks and no timeout, unlike an S3 lease object with a heartbeat, which would also
destroy a backup that is merely slow to renew (a paused VM, a stalled network). Folders
of backups made before the lock existed are free, so they count as abandoned.
"""

from __future__ import annotations

import contextlib
import os
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings, StorageSettings
from tasks.postgres.catalog import (
    MANIFEST,
    backup_folder,
    is_backup_id,
    list_folders,
    new_backup_id,
    read_json,
    utcnow,
    write_json,
)
from tasks.postgres.connection import admin_database, connection_error
from tasks.release.lock import KEEPALIVES
from tasks.storage.s3 import abort_uploads, delete_prefix, storage_error

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

NAMESPACE = 0x511E  # first advisory lock key; tasks/release/lock.py uses 0x511D
OWNER = "owner.json"


class Owner(BaseModel):
    """Written first into a backup's folder: where its lock is held, and by whom."""

    backup_id: str
    database: str
    server: str
    lock: tuple[int, int]
    host: str
    pid: int
    started_at: datetime


def server_of(db: PostgresSettings) -> str:
    return f"{db.host}:{db.port}"


def lock_key(store: StorageSettings, database: str, backup_id: str) -> int:
    """The folder's lock; a hash collision only makes a clean-up keep a folder longer."""
    url = f"s3://{store.bucket}/{backup_folder(store, database, backup_id)}"
    return zlib.crc32(url.encode()) & 0x7FFFFFFF


def _lock_connection(db: PostgresSettings, label: str) -> psycopg.Connection:
    """A session on the lock database: `postgres`, or the app's own if closed to this role.

    Owner and clean-up choose alike (same server and role), so they meet in one database.
    """
    for target in (admin_database(db), db):
        info = target.conninfo() | {"application_name": label[:63], "options": KEEPALIVES}
        try:
            return psycopg.connect(**info, autocommit=True)
        except psycopg.OperationalError as exc:
            low = str(exc).lower()
            closed = any(
                reason in low
                for reason in ("does not exist", "permission denied", "no pg_hba.conf entry")
            )
            if target.database == db.database or not closed:
                raise connection_error(exc, db) from exc
    raise AssertionError("unreachable")


def _try_lock(conn: psycopg.Connection, key: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, key)).fetchone()
    return bool(row and row[0])


@dataclass
class Lease:
    """A running backup's hold on its folder."""

    conn: psycopg.Connection
    db: PostgresSettings
    backup_id: str

    def confirm(self) -> None:
        """Raise unless the session, and so the lock, is still there."""
        try:
            self.conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise SlipwayError(
                f"backup {self.backup_id} lost its lock on {server_of(self.db)} (its session "
                "ended): nothing was recorded; run the backup again"
            ) from exc


def discard_folder(client: S3Client, store: StorageSettings, folder: str) -> None:
    """Abort the folder's multi-part uploads and delete its objects."""
    abort_uploads(client, store, folder + "/", lambda key: True)
    delete_prefix(client, store, folder)


@contextmanager
def backup_lease(db: PostgresSettings, store: StorageSettings, client: S3Client) -> Iterator[Lease]:
    """A new backup id whose folder this process owns; on failure the folder is removed."""
    conn = _lock_connection(db, f"slipway-backup {db.database}")
    try:
        backup_id = new_backup_id()
        while not _try_lock(conn, lock_key(store, db.database, backup_id)):
            backup_id = new_backup_id()  # the same id, or a hash, taken this very second
        conn.execute(
            "SELECT set_config('application_name', %s, false)",
            (f"slipway-backup {backup_id} {db.database}"[:63],),
        )
        folder = backup_folder(store, db.database, backup_id)
        owner = Owner(
            backup_id=backup_id,
            database=db.database,
            server=server_of(db),
            lock=(NAMESPACE, lock_key(store, db.database, backup_id)),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=utcnow(),
        )
        try:
            write_json(client, store, f"{folder}/{OWNER}", owner)
        except (ClientError, BotoCoreError) as exc:
            raise storage_error(exc, store) from exc
        try:
            yield Lease(conn, db, backup_id)
        except BaseException:
            # Still holding the lock: no clean-up races this; what fails here is left
            # for the next backup's clean-up.
            with contextlib.suppress(Exception):
                discard_folder(client, store, folder)
            raise
    finally:
        conn.close()  # the lock goes with the session


@dataclass
class Cleanup:
    removed: list[str] = field(default_factory=list)
    other_server: list[str] = field(default_factory=list)  # owned elsewhere: not ours to judge


def remove_abandoned(
    db: PostgresSettings, store: StorageSettings, client: S3Client, current_id: str
) -> Cleanup:
    """Remove the folders (and multi-part uploads) of `db`'s backups whose owner is gone."""
    database = db.database
    folders = list_folders(client, store, database)
    root = backup_folder(store, database, "")
    uploading: set[str] = set()
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=store.bucket, Prefix=root
    ):
        for upload in page.get("Uploads", []):
            name = upload["Key"][len(root) :].split("/", 1)[0]
            if is_backup_id(name):
                uploading.add(name)
    incomplete = {i for i, names in folders.items() if MANIFEST not in names}
    candidates = sorted((incomplete | (uploading & set(folders))) - {current_id})
    candidates += sorted(uploading - set(folders) - {current_id})  # uploads with no object yet
    done = Cleanup()
    if not candidates:
        return done
    with _lock_connection(db, f"slipway-backup-cleanup {database}") as conn:
        for backup_id in candidates:
            folder = backup_folder(store, database, backup_id)
            if OWNER in folders.get(backup_id, set()):
                owner = read_json(client, store.bucket, f"{folder}/{OWNER}")
                if owner is not None and owner.get("server") != server_of(db):
                    done.other_server.append(backup_id)
                    continue
            key = lock_key(store, database, backup_id)
            if not _try_lock(conn, key):
                continue  # its owner runs
            try:
                # It may have finished between the listing and the lock: then it is a backup.
                if read_json(client, store.bucket, f"{folder}/{MANIFEST}") is None:
                    discard_folder(client, store, folder)
                    done.removed.append(backup_id)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (NAMESPACE, key))
    return done
