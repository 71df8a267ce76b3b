"""A mirror's copies begun the moment `slipway mirror` starts, before Prefect loads.

Importing Prefect and starting the flow run take 3-5 s on one core of the client, while
a server-side copy is mostly the S3 server's work. The CLI starts checking, listing and
copying at once; the flow run adopts that work when it mirrors the same source into the
same destination with the same options, and reports all of it. What starts early:
- only copies: a dry run waits for the flow, and deletions (--delete) are made inside the
  flow run, after every copy succeeded;
- only when the Prefect API that records the run answers, so a run that cannot be recorded
  copies nothing. Bad input (unknown bucket, wrong credentials, overlap) fails before any
  copy, and the flow reports that failure in its usual one line.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

from tasks.bucket_mirror import MirrorResult, Progress, copy_changes
from tasks.early_slot import EarlySlot
from tasks.object_locations import AnyLocation, parse_location

Key = tuple[str, str, bool, str]


def _key(source: str, destination: str, delete: bool) -> Key:
    """What decides the mirror: both refs, --delete, and the variables naming the stores
    (hashed: they hold the keys)."""
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "SLIPWAY_")))
    return source, destination, delete, hashlib.sha256(repr(env).encode()).hexdigest()


class EarlyMirror:
    """A mirror's checks, plan and copies running in a thread of their own."""

    def __init__(self, source: str, destination: str, delete: bool) -> None:
        self.key = _key(source, destination, delete)
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress: tuple[int, int] = (0, 0)
        self._forward: Progress = lambda done, total: None
        self._result: MirrorResult | None = None
        self._error: BaseException | None = None
        self.copying = threading.Event()  # the plan is made (or the mirror ended)
        # The clients are made here, before Prefect's import competes for the GIL.
        self.destination: AnyLocation | None = None
        self._thread: threading.Thread | None = None
        try:
            src = parse_location(source, "SLIPWAY_SOURCE_")
            self.destination = parse_location(destination, "AWS_")
        except Exception as exc:  # a malformed URL: handed to the flow, which raises it
            self._error = exc
            self.copying.set()
            return
        self._thread = threading.Thread(
            target=self._run, args=(src, delete), name="early-mirror", daemon=True
        )
        self._thread.start()

    def _run(self, src: AnyLocation, delete: bool) -> None:
        assert self.destination is not None
        try:
            self._result = copy_changes(
                src, self.destination, delete=delete, on_progress=self._record, stop=self._stop
            )
        except BaseException as exc:  # handed to the flow, which raises it in its run
            self._error = exc
        finally:
            self.copying.set()

    def _record(self, done: int, total: int) -> None:
        self.copying.set()
        with self._lock:
            self._progress = (done, total)
            forward = self._forward
        forward(done, total)

    def finish(self, on_progress: Progress) -> tuple[AnyLocation, MirrorResult]:
        """Wait for the copies, reporting progress from now on; raise what failed them.

        Returns the destination and the result; the planned deletions are the caller's.
        """
        with self._lock:
            self._forward = on_progress
            done, total = self._progress
        on_progress(done, total)
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        assert self.destination is not None
        self._result.started = self.started
        return self.destination, self._result

    def discard(self) -> None:
        """Skip the copies not begun, and wait for those under way."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


_SLOT: EarlySlot[EarlyMirror] = EarlySlot()


def start(source: str, destination: str, delete: bool, head_start: float = 0.0) -> None:
    """Begin mirroring `source` into `destination`, both configured by the environment.

    head_start: wait up to this long for the plan, so that what the caller does next (the
    CLI imports Prefect: 2-3 s of CPU under the same GIL) does not slow the listing and
    hold back the copies, which are mostly the S3 server's work, on another core.
    """
    early = EarlyMirror(source, destination, delete)
    _SLOT.put(early)
    early.copying.wait(head_start)


def adopt(source: str, destination: str, delete: bool) -> EarlyMirror | None:
    """The early mirror of `source` into `destination`, now the caller's to finish."""
    key = _key(source, destination, delete)
    return _SLOT.adopt(lambda early: early.key == key)


def discard() -> None:
    """Stop an early mirror nobody adopted (the flow run did not start, or failed first)."""
    _SLOT.discard()
