"""A restore's download begun the moment `slipway restore` starts, before Prefect loads.

Importing Prefect and starting the flow run take 2.5-4 s, on one core; the download of
a 1 GiB database's archive takes about as long, mostly on the S3 server and in C code
that releases the GIL. The CLI starts the download at once, from the environment's store;
the restore task adopts it when it restores that very backup (same store, key and
checksum) and downloads anew otherwise. Nothing is written but a temporary file: the
database is touched only inside the flow run, and only after the checksum matched, as
without the early start. Anything amiss here (no store configured, no such backup, no
room) is left for the flow to report in its usual one line.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from blocks.settings import StorageSettings
from tasks.backup_catalog import BackupEntry, find_backup
from tasks.early_slot import EarlySlot
from tasks.pg_restore import ArchiveDownload
from tasks.restore_scratch import ScratchDir, scratch_dir


@dataclass
class EarlyDownload:
    """A download under way and the temporary directory it writes into."""

    store: StorageSettings
    download: ArchiveDownload
    scratch: ScratchDir

    def matches(self, store: StorageSettings, entry: BackupEntry) -> bool:
        mine = self.download.entry.manifest
        here = (self.store.endpoint_url, self.store.bucket, mine.id, mine.dump)
        return here == (store.endpoint_url, store.bucket, entry.manifest.id, entry.manifest.dump)

    def discard(self) -> None:
        self.download.cancel()
        with contextlib.suppress(OSError):
            self.scratch.cleanup()


_SLOT: EarlySlot[EarlyDownload] = EarlySlot()


def start(database: str, ref: str) -> None:
    """Begin downloading backup `ref` (an id or latest) of `database` from SLIPWAY_BACKUP_URL."""
    try:
        store = StorageSettings.from_env()
        client = store.client()
        entry = find_backup(client, store, database, ref)
        scratch = scratch_dir(entry.manifest.raw_bytes)
    except Exception:  # the flow finds the same problem and reports it
        return
    download = ArchiveDownload(client, store, entry, Path(scratch.name))
    _SLOT.put(EarlyDownload(store, download, scratch))


def adopt(store: StorageSettings, entry: BackupEntry) -> EarlyDownload | None:
    """The early download of `entry` from `store`, now the caller's to finish and clean up."""
    return _SLOT.adopt(lambda early: early.matches(store, entry))


def discard() -> None:
    """Stop and remove an early download nobody adopted (the restore failed before it)."""
    _SLOT.discard()
