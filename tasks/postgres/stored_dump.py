"""A stored dump read back: size and sha256 of the stored bytes, age decryption, decompression.

The checksum covers the bytes as stored (encrypted, when the backup is): a plain `verify`
needs no key. Every read runs to the end of the object even when decryption or
decompression failed early, so that damage is named by its checksum.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from pyrage import x25519

from blocks.errors import BackupDamaged, SlipwayError
from blocks.settings import StorageSettings
from tasks.crypto.streams import (
    CHUNK,
    QueueReader,
    decrypting_reader,
    decryption_failure,
    no_matching_key,
)
from tasks.postgres import connection as pg
from tasks.postgres.catalog import BackupEntry
from tasks.postgres.dump import Stderr, decompressor
from tasks.storage.s3 import iter_object

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _check_stored(entry: BackupEntry, size: int, digest: str) -> None:
    dump = entry.manifest.dump
    if size != dump.size:
        raise BackupDamaged(
            f"backup {entry.manifest.id} is damaged: {size} bytes stored, manifest says "
            f"{dump.size}; use another backup"
        )
    if digest != dump.sha256:
        raise BackupDamaged(
            f"backup {entry.manifest.id} is damaged: checksum mismatch (sha256 {digest[:12]}... "
            f"!= {dump.sha256[:12]}...); use another backup"
        )


def _hashed_stored_chunks(
    client: S3Client,
    store: StorageSettings,
    key: str,
    out: queue.Queue[object],
    stop: threading.Event,
) -> None:
    """Producer: the stored bytes, then (size, sha256 hex); or the exception that stopped it."""
    sha, size = hashlib.sha256(), 0
    try:
        for chunk in iter_object(client, store, key):
            sha.update(chunk)
            size += len(chunk)
            while not stop.is_set():
                try:
                    out.put(chunk, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put((size, sha.hexdigest()))
    except BaseException as exc:  # handed to the consumer, which raises it
        out.put(exc)


def check_stored_bytes(client: S3Client, store: StorageSettings, entry: BackupEntry) -> None:
    """Re-read the whole stored object: its size and sha256 must match the manifest."""
    sha, size = hashlib.sha256(), 0
    for chunk in iter_object(client, store, entry.manifest.dump.key):
        sha.update(chunk)
        size += len(chunk)
    _check_stored(entry, size, sha.hexdigest())


def hashed_plain_chunks(
    client: S3Client,
    store: StorageSettings,
    entry: BackupEntry,
    identities: Sequence[x25519.Identity] = (),
) -> Iterator[bytes]:
    """The dump's decrypted, decompressed bytes; raises at the end if size or checksum do
    not match, or decryption failed.

    Reading and hashing run in a thread of their own (and decryption in another) while the
    caller decompresses and writes; all release the GIL but age, so the stages overlap.
    Damage raises `BackupDamaged`; S3's failures and a key that does not fit do not.
    """
    decompress = decompressor(entry.manifest.compression)
    chunks: queue.Queue[object] = queue.Queue(maxsize=8)
    stop = threading.Event()
    producer = threading.Thread(
        target=_hashed_stored_chunks,
        args=(client, store, entry.manifest.dump.key, chunks, stop),
        daemon=True,
    )
    producer.start()
    stored = QueueReader(chunks, stop)
    source = decrypting_reader(stored, identities) if entry.manifest.encrypted else stored
    undecrypted: BaseException | None = None
    broken: Exception | None = None
    try:
        while True:
            try:
                item = source.read(CHUNK)
            except Exception as exc:  # keep hashing: the checksum names the damage best
                if decryption_failure(exc) is None:
                    raise
                undecrypted = exc
                break
            if not item:
                break
            if broken is None:
                try:
                    plain = decompress(item)
                except Exception as exc:  # keep hashing, as above
                    broken = exc
                    continue
                if plain:
                    yield plain
        stored.drain()
    finally:
        stop.set()
        source.close()
    if isinstance(stored.end, BaseException):
        raise stored.end
    if not isinstance(stored.end, tuple):
        raise SlipwayError(f"reading backup {entry.manifest.id} stopped early: run it again")
    _check_stored(entry, *stored.end)
    if undecrypted is not None:
        _raise_undecrypted(entry, undecrypted)
    if broken is not None:
        raise BackupDamaged(
            f"backup {entry.manifest.id} is damaged: it does not decompress ({broken}); "
            "use another backup"
        )


def _raise_undecrypted(entry: BackupEntry, exc: BaseException) -> None:
    """The stored bytes are those of the manifest, and age refused them."""
    m = entry.manifest
    if no_matching_key(exc):  # the manifest's recipients fit a key that the file's do not
        raise SlipwayError(
            f"backup {m.id} cannot be decrypted with the given identities although its manifest "
            f"names {', '.join(m.recipients)}: give the identity it was encrypted to"
        ) from None
    raise BackupDamaged(
        f"backup {m.id} is damaged: age refused it ({decryption_failure(exc)}) although its "
        "checksum matches; use another backup"
    ) from None


def list_archive(
    client: S3Client,
    store: StorageSettings,
    entry: BackupEntry,
    identities: Sequence[x25519.Identity] = (),
) -> list[str]:
    """Re-read the whole object (size, checksum) and list its contents with pg_restore.

    The pg_restore used is at least as new as the pg_dump that wrote the archive, so once
    the checksum matched, its failure to read the archive is damage (`BackupDamaged`).
    """
    made_by = pg.tool_major_of(entry.manifest.pg_dump_version)
    pg_restore = pg.pg_tool("pg_restore", made_by, than=f"the backup's pg_dump ({made_by})")
    proc = subprocess.Popen(
        [str(pg_restore), "--list"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pg.tool_env(),
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    stderr = Stderr(proc.stderr)
    feeding = True
    try:
        for plain in hashed_plain_chunks(client, store, entry, identities):
            if feeding:
                try:
                    proc.stdin.write(plain)
                except BrokenPipeError:
                    feeding = False  # pg_restore read the TOC and left; keep hashing
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    code = proc.wait()
    reader.join()
    if code != 0:
        if code < 0:  # killed: that says nothing about the backup
            raise SlipwayError(
                f"pg_restore was killed (signal {-code}) while listing backup "
                f"{entry.manifest.id}: run verify again"
            )
        # The bytes are those stored (their checksum matched) and the tool is new enough.
        raise BackupDamaged(
            f"backup {entry.manifest.id} is damaged: pg_restore cannot read it "
            f"({stderr.text()}); use another backup"
        )
    return [line for line in b"".join(output).decode().splitlines() if line and line[0] != ";"]
