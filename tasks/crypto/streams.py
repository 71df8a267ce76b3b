"""age encryption and decryption as pull streams, for pipelines that read.

`pyrage.encrypt_io` / `decrypt_io` push: they read a source and write a sink until the end.
Each runs here in a thread of its own writing into an OS pipe, whose other end the pipeline
reads: nothing is buffered beyond the pipe and age's 64 KiB chunks. Decryption checks each
chunk's tag as it goes, so plaintext only ever comes out of authenticated chunks.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import IO, Protocol, cast

import pyrage
from pyrage import x25519

PIPE_SIZE = 1024 * 1024
CHUNK = 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class PipedTransform(io.RawIOBase):
    """The bytes `transform(source, sink)` writes, read as they come.

    At the end of the stream, `read` raises the transform's failure, if any (an upload
    reading it then aborts). `close()` lets a transform blocked on a full pipe fail and end.
    """

    def __init__(self, source: Readable, transform: Callable[[Readable, IO[bytes]], None]) -> None:
        super().__init__()
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._out = os.fdopen(read_fd, "rb", buffering=0)
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(source, transform, write_fd), daemon=True
        )
        self._thread.start()

    def _run(
        self, source: Readable, transform: Callable[[Readable, IO[bytes]], None], fd: int
    ) -> None:
        try:
            with os.fdopen(fd, "wb", buffering=CHUNK) as sink:
                transform(source, sink)
        except BaseException as exc:  # raised by the reader, at the end of the stream
            self.error = exc

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        # At most a pipe's worth: a read of n bytes allocates n first (uploads ask 8 MiB).
        data = self._out.read(CHUNK if size is None or size < 0 else min(size, CHUNK)) or b""
        if not data:
            self._thread.join()
            if self.error is not None:
                raise self.error
        return data

    def close(self) -> None:
        if not self.closed:
            self._out.close()
            self._thread.join(timeout=30)
        super().close()


def encrypting_reader(source: Readable, recipients: Sequence[x25519.Recipient]) -> IO[bytes]:
    """`source` as an age file (age-encryption.org/v1) to `recipients`."""
    chosen = list(recipients)
    transform = PipedTransform(source, lambda src, sink: pyrage.encrypt_io(src, sink, chosen))
    return cast(IO[bytes], transform)


def decrypting_reader(source: Readable, identities: Sequence[x25519.Identity]) -> IO[bytes]:
    """The plaintext of the age file `source`; a wrong key or damage raises at the end."""
    chosen = list(identities)
    transform = PipedTransform(source, lambda src, sink: pyrage.decrypt_io(src, sink, chosen))
    return cast(IO[bytes], transform)


def decryption_failure(exc: BaseException) -> str | None:
    """age's words when `exc` is a decryption failure (wrong key, damage), else None."""
    if isinstance(exc, pyrage.DecryptError):
        return str(exc) or "decryption failed"
    if type(exc) is OSError and not exc.errno:  # pyrage's I/O error of a failed chunk tag
        return str(exc) or "decryption error"
    return None


def no_matching_key(exc: BaseException) -> bool:
    """Whether age found no identity for any of the file's recipients."""
    return isinstance(exc, pyrage.DecryptError) and "no matching keys" in str(exc).lower()


class QueueReader(io.RawIOBase):
    """Reads the `bytes` items of a queue in order; any other item ends the stream and is kept
    in `end`. Gives up (an empty read) once `stop` is set."""

    def __init__(self, items: queue.Queue[object], stop: threading.Event) -> None:
        super().__init__()
        self._items = items
        self._stop = stop
        self._rest = memoryview(b"")
        self.end: object = None
        self.ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while not self._rest and not self.ended:
            try:
                item = self._items.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return b""
                continue
            if isinstance(item, bytes):
                self._rest = memoryview(item)
            else:
                self.end, self.ended = item, True
        n = len(self._rest) if size is None or size < 0 else size
        data, self._rest = bytes(self._rest[:n]), self._rest[n:]
        return data

    def drain(self) -> None:
        """Read to the end of the stream (its bytes discarded)."""
        while not self.ended and not self._stop.is_set():
            self._rest = memoryview(b"")
            self.read(CHUNK)
