"""Restore a stored backup into a database: the schema while it downloads, then the rest.

The archive is decompressed to a local file as it arrives. The schema (pre-data) is read
from the head of that growing file; once the file is complete and its checksum matched,
`pg_restore -j` loads the data and builds indexes and constraints from it, each job
seeking to its own tables. Only the database given is written to; callers restore beside
their target and swap.

Loading data from the stream as it arrives was tried (one pipe-fed loader per job): every
loader had to read the whole archive, and on 2 cores it was no faster than this, which
waits 2-3 s for a 1 GiB database's archive and then runs as `pg_restore -j` does.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import subprocess
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pyrage import x25519

from blocks.errors import SlipwayError
from blocks.settings import PostgresSettings, StorageSettings
from tasks.postgres import connection as pg
from tasks.postgres.catalog import BackupEntry
from tasks.postgres.children import tied_to_parent
from tasks.postgres.stored_dump import hashed_plain_chunks

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CHUNK = 1024 * 1024
WRITES_AHEAD = 4  # decompressed chunks of about 3 MiB waiting for the disk


class GrowingFile:
    """A file one thread writes while others read it as it grows, each at its own pace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._size = 0
        self._done = False
        self._failed = False
        self._out = path.open("wb", buffering=0)

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._out.write(view)
            view = view[written or 0 :]
        with self._cond:
            self._size += len(data)
            self._cond.notify_all()

    def finish(self, ok: bool) -> None:
        self._out.close()
        with self._cond:
            self._done, self._failed = True, not ok
            self._cond.notify_all()

    def _ready(self, pos: int) -> bool:
        return self._size > pos or self._done

    def follow(self) -> Iterator[bytes]:
        """The file's bytes from the start, waiting for more until it is complete."""
        with self.path.open("rb", buffering=0) as f:
            pos = 0
            while True:
                with self._cond:
                    self._cond.wait_for(functools.partial(self._ready, pos))
                    if self._failed:
                        return  # the reader sees a truncated archive and fails
                    available = self._size - pos
                    if not available and self._done:
                        return
                data = f.read(min(available, CHUNK))
                pos += len(data)
                yield data


def _feed(follower: Iterator[bytes], stdin: IO[bytes]) -> None:
    """Copy the growing archive into a child's stdin; a child that has read enough leaves."""
    try:
        for chunk in follower:
            stdin.write(chunk)
    except (BrokenPipeError, ValueError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            stdin.close()


def _pg_restore(
    tool: Path, db: PostgresSettings, args: list[str], source: GrowingFile | None
) -> subprocess.Popen[bytes]:
    """Start pg_restore; with `source`, its stdin is fed from the growing file.

    The pipe is ours, not Popen's: `communicate()` would close a stdin it owns. The child
    dies with this process: a killed restore leaves no loader behind.
    """
    read_fd, write_fd = os.pipe() if source else (subprocess.DEVNULL, -1)
    try:
        proc = subprocess.Popen(
            tied_to_parent([str(tool), "--exit-on-error", "-w", f"--dbname={db.database}", *args]),
            stdin=read_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=pg.pg_env(db),
        )
    finally:
        if source is not None:
            os.close(read_fd)
    if source is not None:
        stdin = os.fdopen(write_fd, "wb", buffering=0)
        threading.Thread(target=_feed, args=(source.follow(), stdin), daemon=True).start()
    return proc


def _finish(proc: subprocess.Popen[bytes], what: str) -> bytes:
    out, err = proc.communicate()
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip()[-1500:]
        raise SlipwayError(f"pg_restore ({what}) failed: {message}")
    return out


class ArchiveDownload:
    """A stored backup decrypted and decompressed into a local file by threads of its own,
    as it arrives.

    `file` may be read while it grows: only authenticated plaintext ever reaches it (age
    checks each 64 KiB chunk). `wait()` gives the download's failure (S3, size, checksum,
    decryption, decompression), or None once the file is complete and its checksum matched.
    """

    def __init__(
        self,
        client: S3Client,
        store: StorageSettings,
        entry: BackupEntry,
        directory: Path,
        identities: Sequence[x25519.Identity] = (),
    ) -> None:
        self.entry = entry
        self.directory = directory
        self._identities = list(identities)
        self.file = GrowingFile(directory / f"{entry.manifest.id}.pgc")
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(client, store), daemon=True)
        self._thread.start()

    def _run(self, client: S3Client, store: StorageSettings) -> None:
        # Three stages, each releasing the GIL: read and hash, decompress, write.
        writes: deque[Future[None]] = deque()
        try:
            with ThreadPoolExecutor(1) as writer:
                for plain in hashed_plain_chunks(client, store, self.entry, self._identities):
                    if len(writes) >= WRITES_AHEAD:
                        writes.popleft().result()
                    writes.append(writer.submit(self.file.append, plain))
                for write in writes:
                    write.result()
        except OSError as exc:
            self._error = self._disk_error(exc)
        except BaseException as exc:  # the restore raises it, after its children stopped
            self._error = exc
        finally:
            self.file.finish(ok=self._error is None)

    def _disk_error(self, exc: OSError) -> BaseException:
        """A full disk, said as such: pg_restore would only see a truncated archive."""
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return exc
        return SlipwayError(
            f"the disk is full: {self.directory} ran out of space while downloading backup "
            f"{self.entry.manifest.id} ({self.entry.manifest.raw_bytes >> 20} MiB decompressed): "
            "free space there or set TMPDIR to a larger disk"
        )

    def wait(self) -> BaseException | None:
        self._thread.join()
        return self._error


def restore_from_store(
    client: S3Client,
    store: StorageSettings,
    entry: BackupEntry,
    db: PostgresSettings,
    directory: Path,
    jobs: int = 2,
    identities: Sequence[x25519.Identity] = (),
) -> None:
    """Restore `entry` into the existing, empty database `db`; raises if anything fails.

    Only the schema is created before the checksum matched: a damaged archive (size,
    checksum, decryption, compression) raises with no data loaded, and the caller drops `db`.
    """
    with pg.connect(db) as conn:
        major = pg.server_major(conn)
    tool = pg.pg_tool("pg_restore", major)
    download = ArchiveDownload(client, store, entry, directory, identities)
    archive = download.file
    children: list[subprocess.Popen[bytes]] = []
    try:
        # The schema needs only the archive's head: it is created while the rest arrives.
        schema = _pg_restore(tool, db, ["--section=pre-data"], archive)
        children.append(schema)
        _finish(schema, "schema")
        if error := download.wait():
            raise error
        # Loading from a pipe instead would start sooner, but every loader would have to
        # read the whole archive in order; from the file, each seeks to its own tables.
        everything_else = _pg_restore(
            tool,
            db,
            ["--section=data", "--section=post-data", f"--jobs={jobs}", str(archive.path)],
            None,
        )
        children.append(everything_else)
        _finish(everything_else, "data, indexes and constraints")
    except BaseException as exc:
        for child in children:
            # SIGTERM: its supervisor kills pg_restore and every worker it forked.
            with contextlib.suppress(OSError):
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        error = download.wait()  # the download runs to its end: the checksum names damage best
        if error is not None and error is not exc and isinstance(error, SlipwayError):
            raise error from exc  # the archive's damage explains pg_restore's failure
        raise
