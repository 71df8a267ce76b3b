"""The hand-off between a CLI's early start and the flow run that adopts its work.

The CLI starts work before Prefect loads; the flow's task, in the same process, takes it
if it is the work it needs. The work is a live thread, not data, so it cannot be a flow
parameter: it waits here, one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Discardable(Protocol):
    def discard(self) -> None: ...


T = TypeVar("T", bound=Discardable)


class EarlySlot(Generic[T]):
    """Holds at most one piece of early work; whatever is replaced or refused is discarded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: T | None = None

    def put(self, work: T) -> None:
        with self._lock:
            previous, self._pending = self._pending, work
        if previous is not None:
            previous.discard()

    def adopt(self, matches: Callable[[T], bool]) -> T | None:
        """The pending work if `matches` accepts it, now the caller's; else discard it."""
        work = self._take()
        if work is None or matches(work):
            return work
        work.discard()
        return None

    def discard(self) -> None:
        """Discard pending work nobody adopted."""
        if (work := self._take()) is not None:
            work.discard()

    def _take(self) -> T | None:
        with self._lock:
            work, self._pending = self._pending, None
        return work
