"""Running `slipway doctor`'s checks: all at once, each under a deadline, as one result each."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, TypeVar

from blocks.errors import SlipwayError
from blocks.text import error_line, one_line

T = TypeVar("T")
Status = Literal["ok", "FAIL", "skip"]


class Skipped(Exception):
    """The check does not apply here, or cannot run since another failed; says why."""


@dataclass(frozen=True)
class CheckResult:
    """One row of the report."""

    check: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Shared(Generic[T]):
    """A value several checks need (the server's version...): computed once, by the first
    check that asks, while the others wait; a failure is kept and raised to each of them."""

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._lock = threading.Lock()
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None

    def get(self) -> T:
        with self._lock:
            if not self._done:
                try:
                    self._value = self._compute()
                except Exception as exc:
                    self._error = exc
                self._done = True
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _run_one(name: str, check: Callable[[], str], results: dict[str, CheckResult]) -> None:
    try:
        results[name] = CheckResult(name, "ok", one_line(check(), None))
    except Skipped as exc:
        results[name] = CheckResult(name, "skip", error_line(exc, None))
    except SlipwayError as exc:
        results[name] = CheckResult(name, "FAIL", error_line(exc, None))
    except Exception as exc:  # an unexpected failure is still one row, not a traceback
        results[name] = CheckResult(name, "FAIL", f"{type(exc).__name__}: {error_line(exc)}")


def run_checks(checks: Mapping[str, Callable[[], str]], timeout: float) -> list[CheckResult]:
    """Run the checks side by side; results in the order given.

    A check returns its detail, raises `Skipped`, or fails with a one-line error. One that
    has not finished within `timeout` seconds fails: its thread is a daemon, left behind,
    so a host that never answers cannot keep doctor (or its exit) waiting.
    """
    results: dict[str, CheckResult] = {}
    threads = {
        name: threading.Thread(
            target=_run_one, args=(name, check, results), name=f"doctor-{name}", daemon=True
        )
        for name, check in checks.items()
    }
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads.values():
        thread.join(max(0.0, deadline - time.monotonic()))
    return [
        results.get(name)
        or CheckResult(name, "FAIL", f"no answer within {timeout:g} s: is the host up?")
        for name in checks
    ]
