"""Progress of long steps as a Prefect progress artifact, updated from a thread of its own."""

from __future__ import annotations

import contextvars
import threading
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact


class ProgressArtifact:
    """A progress artifact updated every few seconds from a thread of its own.

    The dump's read path only records numbers: API calls there would slow the stream, and
    its threads (boto3's, a pool's) lack the run's Prefect context.
    """

    def __init__(self, key: str, description: str, every: float = 5.0) -> None:
        self.key = key
        self.description = description
        self.every = every
        self.done = self.total = 0
        self._stop = threading.Event()
        self._id: UUID | None = None
        self._thread: threading.Thread | None = None

    def record(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _percent(self) -> float:
        return min(99.0, 100.0 * self.done / self.total) if self.total else 0.0

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            if self._id:
                update_progress_artifact(self._id, self._percent())  # type: ignore[arg-type]

    def __enter__(self) -> ProgressArtifact:
        self._id = create_progress_artifact(  # type: ignore[assignment]
            progress=0.0, key=self.key, description=self.description
        )
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._id and exc[0] is None:
            update_progress_artifact(self._id, 100.0)  # type: ignore[arg-type]
