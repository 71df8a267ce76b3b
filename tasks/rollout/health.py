"""Health polling: HTTP (status, and optionally the version answering), TCP, and through a
target's readiness hook the kinds only a target can probe (a container's health).

`wait_healthy` polls each check until it passes the required number of times in a row,
pausing `interval` after a failure, longer after each further one (`backoff`, up to
`max_interval`), and gives up at the check's deadline, counted from when waiting began.
Plain functions: callable without a flow (the Prefect tasks are in `steps`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from blocks.errors import SlipwayError
from blocks.rollout import HealthCheck


@dataclass(frozen=True)
class Observation:
    """One probe's outcome; `final` when waiting longer cannot help (a container exited)."""

    ok: bool
    detail: str
    final: bool = False


@dataclass(frozen=True)
class CheckResult:
    check: str
    attempts: int
    seconds: float
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """The passed checks, in order, with the probes and time each took."""

    results: list[CheckResult]

    def summary(self) -> str:
        return "; ".join(
            f"{r.check}: {r.detail} ({r.attempts} probes, {r.seconds:.1f} s)" for r in self.results
        )


class HealthCheckFailed(SlipwayError):
    """A check did not pass before its deadline (or failed for good); names the last observation."""

    def __init__(self, check: str, detail: str, attempts: int, seconds: float, *, final: bool):
        self.check = check
        self.detail = detail
        self.attempts = attempts
        self.seconds = seconds
        when = "" if final else f" after {seconds:.0f} s ({attempts} probes)"
        super().__init__(f"{check}: {detail}{when}")


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a flow or task run, else a standard logger."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("slipway.rollout")


def json_field(body: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (`build.version`, `items.0.tag`), and whether it exists."""
    node = body
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def probe_http(check: HealthCheck, version: str | None, client: httpx.Client) -> Observation:
    if check.url is None:
        return Observation(False, "no url in the check", final=True)
    try:
        response = client.get(check.url, timeout=check.timeout_seconds)
    except httpx.ConnectError as exc:
        refused = "refused" in str(exc).lower()
        return Observation(False, "connection refused" if refused else f"cannot connect ({exc})")
    except httpx.TimeoutException:
        return Observation(False, f"no answer within {check.timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        text = str(exc).replace(check.url, check.describe())  # no credentials in messages
        return Observation(False, f"{type(exc).__name__}: {text}")
    if response.status_code != check.expect_status:
        return Observation(False, f"{response.status_code}, expected {check.expect_status}")
    if check.version_field is None or version is None:
        return Observation(True, str(response.status_code))
    try:
        body = response.json()
    except ValueError:
        return Observation(False, f"{response.status_code} but the body is not JSON")
    found, value = json_field(body, check.version_field)
    if not found:
        return Observation(False, f"no field {check.version_field!r} in the JSON body")
    if _shown(value) != version:
        return Observation(
            False, f"version field {check.version_field!r} is {_shown(value)}, expected {version}"
        )
    return Observation(True, f"{response.status_code}, version {version}")


def probe_tcp(check: HealthCheck) -> Observation:
    if check.host is None or check.port is None:
        return Observation(False, "no host and port in the check", final=True)
    try:
        with socket.create_connection((check.host, check.port), timeout=check.timeout_seconds):
            return Observation(True, "accepting connections")
    except ConnectionRefusedError:
        return Observation(False, "connection refused")
    except TimeoutError:
        return Observation(False, f"no answer within {check.timeout_seconds:g} s")
    except OSError as exc:
        return Observation(False, exc.strerror or str(exc))


def wait_healthy(
    checks: Sequence[HealthCheck],
    version: str | None = None,
    *,
    ready: Callable[[HealthCheck], Observation | None] | None = None,
    abort: Callable[[], str | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthReport:
    """Poll the checks in order until each passes; raise `HealthCheckFailed` otherwise.

    `version`: what `version_field` of http checks must equal (ignored when None).
    `ready`: the target's readiness hook, probing the kinds only a target can (`container`).
    `abort`: called before every probe; a message stops the wait at once (a crashed
    container is not worth waiting for). `clock` and `sleep` are injectable for tests.
    """
    start = clock()
    results = []
    with contextlib.ExitStack() as stack:
        for check in checks:
            if check.kind == "http":
                # No keep-alive: every probe opens a fresh connection, as a new client would.
                http = stack.enter_context(
                    httpx.Client(
                        verify=check.verify_tls,
                        follow_redirects=False,
                        limits=httpx.Limits(max_keepalive_connections=0),
                    )
                )
                probe = functools.partial(probe_http, check, version, http)
            elif check.kind == "tcp":
                probe = functools.partial(probe_tcp, check)
            else:
                probe = functools.partial(_through_target, check, ready)
            results.append(_poll(check, probe, start, abort, clock, sleep))
    return HealthReport(results)


def _through_target(
    check: HealthCheck, ready: Callable[[HealthCheck], Observation | None] | None
) -> Observation:
    seen = ready(check) if ready is not None else None
    if seen is None:
        return Observation(
            False, f"{check.kind} checks need a target that runs containers", final=True
        )
    return seen


def _poll(
    check: HealthCheck,
    probe: Callable[[], Observation],
    start: float,
    abort: Callable[[], str | None] | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> CheckResult:
    name = check.describe()
    deadline = start + check.deadline_seconds
    pause = min(check.interval_seconds, check.max_interval_seconds)
    streak = attempts = 0
    while True:
        reason = abort() if abort is not None else None
        if reason:
            raise HealthCheckFailed(name, reason, attempts, clock() - start, final=True)
        seen = probe()
        attempts += 1
        if seen.ok:
            streak += 1
            if streak >= check.successes:
                result = CheckResult(name, attempts, clock() - start, seen.detail)
                logger().info("%s: %s (%d probes)", name, seen.detail, attempts)
                return result
            delay = pause = min(check.interval_seconds, check.max_interval_seconds)
        else:
            streak = 0
            if seen.final:
                raise HealthCheckFailed(name, seen.detail, attempts, clock() - start, final=True)
            delay, pause = pause, min(pause * check.backoff, check.max_interval_seconds)
            logger().debug("%s: %s, next probe in %.1f s", name, seen.detail, delay)
        now = clock()
        if now >= deadline:
            detail = (
                f"passed only {streak} of {check.successes} times in a row"
                if seen.ok
                else seen.detail
            )
            raise HealthCheckFailed(name, detail, attempts, now - start, final=False)
        sleep(min(delay, deadline - now))
