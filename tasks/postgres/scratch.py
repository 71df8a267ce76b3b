"""A restore's scratch directory, locked for as long as its process lives.

The decompressed archive (hundreds of MiB, in plain text) waits here while `pg_restore`
reads it. A killed restore cannot remove it, so each directory holds a lock file that the
owning process keeps `flock`ed: the kernel drops the lock when the process dies, and the
next restore removes the directories whose lock it can take. A directory whose owner still
runs (a concurrent restore) keeps its lock, and is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from blocks.errors import SlipwayError

PREFIX = "slipway-restore-"
LOCK = ".owner.lock"
# A directory with no lock file yet is being set up, or its owner died in that instant.
SETUP_GRACE_SECONDS = 300


class ScratchDir:
    """A temporary directory, removed on exit, locked by this process until then."""

    def __init__(self, parent: str) -> None:
        self.name = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        # The lock file appears under its final name already locked: a sweeper never sees
        # it unlocked while its owner lives.
        staging = Path(self.name) / f"{LOCK}.{os.getpid()}"
        self._fd: int | None = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        os.replace(staging, Path(self.name) / LOCK)

    def cleanup(self) -> None:
        shutil.rmtree(self.name, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> str:
        return self.name

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def scratch_dir(raw_bytes: int) -> ScratchDir:
    """A scratch directory with room for the decompressed archive, or a one-line error."""
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free
    if free < raw_bytes * 1.1:
        raise SlipwayError(
            f"not enough space in {tmp} for the {raw_bytes >> 20} MiB archive "
            f"({free >> 20} MiB free): set TMPDIR to a larger disk"
        )
    return ScratchDir(tmp)


def sweep_scratch_dirs() -> list[str]:
    """Remove the scratch directories of restores that died; returns their paths."""
    removed = []
    for path in sorted(Path(tempfile.gettempdir()).glob(f"{PREFIX}*")):
        if path.is_dir() and not path.is_symlink() and _remove_if_abandoned(path):
            removed.append(str(path))
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            young = time.time() - path.stat().st_mtime < SETUP_GRACE_SECONDS
        except FileNotFoundError:
            return False
        if young:
            return False
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its restore is running
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
