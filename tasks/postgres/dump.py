"""Database backups as streams: pg_dump -> compression -> age (optional) -> sha256 -> S3.

The dump never touches local disk: pg_dump's custom format (uncompressed) is compressed
in-process (zstd, multi-threaded; or gzip), encrypted when recipients are given, hashed,
and uploaded part by part as it is produced. Row counts are taken in the very snapshot
pg_dump uses, so a drill can compare. Reading a dump back is `stored_dump`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import psycopg
import pyrage
import zstandard
from pyrage import x25519

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings, StorageSettings
from tasks.crypto.streams import encrypting_reader
from tasks.postgres import connection as pg
from tasks.postgres.catalog import (
    DUMP_SUFFIX,
    ENCRYPTED_SUFFIX,
    Compression,
    StoredObject,
    TableCount,
    backup_folder,
)
from tasks.storage.s3 import (
    HashingReader,
    confirm_stored,
    put_confirmed,
    upload_stream,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PIPE_CHUNK = 1024 * 1024


class PipeReader:
    """Reads a child's pipe into one reused buffer, counting bytes (pg_dump's raw size).

    `FileIO.read(n)` allocates n bytes per call and shrinks them to the 64 KiB a pipe
    holds: for a 1 GiB dump that costs seconds of CPU. A 1 MiB pipe read with `readinto`
    costs a fraction of that.
    """

    def __init__(self, source: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._source = source
        self._on_read = on_read
        self._view = memoryview(bytearray(PIPE_CHUNK))
        self.count = 0
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fcntl.fcntl(source.fileno(), fcntl.F_SETPIPE_SZ, PIPE_CHUNK)

    def read(self, size: int = -1) -> bytes:
        view = self._view if size < 0 else self._view[: min(size, PIPE_CHUNK)]
        n = self._source.readinto(view) or 0  # type: ignore[attr-defined]
        self.count += n
        self._on_read(self.count)
        return bytes(view[:n])


class GzipReader:
    """A readable gzip stream over a readable source (zlib releases the GIL)."""

    def __init__(self, source: PipeReader, level: int) -> None:
        self._source = source
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._buf = b""
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buf) < size):
            chunk = self._source.read(PIPE_CHUNK)
            if chunk:
                self._buf += self._zlib.compress(chunk)
            else:
                self._buf += self._zlib.flush()
                self._done = True
        if size < 0:
            size = len(self._buf)
        data, self._buf = self._buf[:size], self._buf[size:]
        return data


def compressing_reader(
    source: PipeReader, compression: Compression, level: int, threads: int
) -> IO[bytes]:
    if compression == "zstd":
        cctx = zstandard.ZstdCompressor(level=level, threads=threads)
        reader: IO[bytes] = cctx.stream_reader(source, read_size=PIPE_CHUNK)  # type: ignore[arg-type,assignment]
        return reader
    return GzipReader(source, level)  # type: ignore[return-value]


def decompressor(compression: Compression) -> Callable[[bytes], bytes]:
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress
    return zlib.decompressobj(31).decompress


@dataclass
class DumpResult:
    dump: StoredObject
    raw_bytes: int
    tables: list[TableCount]
    server_version: str
    pg_dump_version: str
    seconds: float
    globals: StoredObject | None = None


@dataclass
class Stderr:
    """Drains a child's stderr in a thread so it can never block on a full pipe."""

    stream: IO[bytes]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        for line in self.stream:
            self.lines.append(line.decode(errors="replace").rstrip())

    def text(self) -> str:
        self.thread.join(timeout=5)
        return "; ".join(line for line in self.lines if line)[-2000:]


def dump_to_store(
    db: PostgresSettings,
    store: StorageSettings,
    client: S3Client,
    backup_id: str,
    *,
    compression: Compression = "zstd",
    level: int = 3,
    threads: int = -1,
    recipients: Sequence[x25519.Recipient] = (),
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> DumpResult:
    """Stream `pg_dump -Fc -Z0` of `db` into the store; counts rows in the same snapshot.

    With `recipients`, the compressed stream is age-encrypted to them before it is hashed
    and uploaded: the checksum is that of the stored, encrypted bytes.
    """
    started = time.monotonic()
    folder = backup_folder(store, db.database, backup_id)
    key = f"{folder}/{DUMP_SUFFIX[compression]}" + (ENCRYPTED_SUFFIX if recipients else "")
    conn = pg.connect(db)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        major, version = pg.server_major(conn), pg.server_version(conn)
        pg_dump = pg.pg_tool("pg_dump", major)
        total = pg.database_size(conn)
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        snapshot = str(row[0]) if row else ""
        tables = pg.list_tables(conn)
        proc = subprocess.Popen(
            [str(pg_dump), "--format=custom", "--compress=0", f"--snapshot={snapshot}", "-w"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=pg.pg_env(db),
            bufsize=0,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr = Stderr(proc.stderr)
        counts: list[TableCount] = []
        count_error: list[BaseException] = []

        def count() -> None:
            try:
                counts.extend(pg.count_rows(conn, tables))
            except BaseException as exc:  # reported after the dump, not lost in the thread
                count_error.append(exc)

        counter = threading.Thread(target=count, daemon=True)
        counter.start()

        def on_end() -> None:
            code = proc.wait()
            if code != 0:
                raise SlipwayError(dump_error(stderr.text(), db))

        raw = PipeReader(proc.stdout, lambda n: on_progress(n, total))
        compressed = compressing_reader(raw, compression, level, threads)
        encrypted = encrypting_reader(compressed, recipients) if recipients else None
        reader = HashingReader(encrypted or compressed, on_end=on_end, part_md5s=True)
        try:
            upload_stream(client, store, key, reader, "application/octet-stream")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if encrypted is not None:
                encrypted.close()  # an encryption thread blocked on its pipe ends
        # Before a manifest may point at it: the object is whole and is what was sent.
        confirm_stored(
            client, store, key, reader.size, reader.sha256.hexdigest(), reader.etag_matches
        )
        counter.join()
        if count_error:
            raise SlipwayError(f"row counts failed: {count_error[0]}") from count_error[0]
        conn.rollback()
    finally:
        conn.close()
    return DumpResult(
        dump=StoredObject(key=key, size=reader.size, sha256=reader.sha256.hexdigest()),
        raw_bytes=raw.count,
        tables=counts,
        server_version=version,
        pg_dump_version=pg.tool_version(pg_dump),
        seconds=time.monotonic() - started,
    )


def dump_error(stderr: str, db: PostgresSettings) -> str:
    low = stderr.lower()
    if "server version mismatch" in low or "aborting because of server version" in low:
        return f"pg_dump is older than the server at {db.display()}: install a newer client"
    return f"pg_dump of {db.display()} failed: {stderr or 'no message'}"


def dump_globals(
    db: PostgresSettings,
    store: StorageSettings,
    client: S3Client,
    backup_id: str,
    level: int,
    recipients: Sequence[x25519.Recipient] = (),
) -> StoredObject:
    """`pg_dumpall --globals-only` (roles, tablespaces), compressed (and encrypted to
    `recipients`, as it holds password hashes), beside the dump."""
    with pg.connect(db) as conn:
        major = pg.server_major(conn)
    tool = pg.pg_tool("pg_dumpall", major)
    out = subprocess.run(
        [str(tool), "--globals-only", "-w", f"--database={db.database}"],
        capture_output=True,
        env=pg.pg_env(db),
        check=False,
    )
    if out.returncode != 0:
        raise SlipwayError(f"pg_dumpall --globals-only failed: {out.stderr.decode().strip()}")
    body = zstandard.ZstdCompressor(level=level).compress(out.stdout)
    key = f"{backup_folder(store, db.database, backup_id)}/globals.sql.zst"
    if recipients:
        body, key = pyrage.encrypt(body, list(recipients)), key + ENCRYPTED_SUFFIX
    sha256 = put_confirmed(client, store, key, body)
    return StoredObject(key=key, size=len(body), sha256=sha256)
