"""Session-wide fixtures: the real services, started on demand and always stopped.

Services start in parallel as soon as collection shows which ones the selected tests need
(their markers). When one cannot run on this machine its tests are skipped with the reason
and the way to get it; under CI (`CI=true`) that is a failure instead.
"""

from __future__ import annotations

import atexit
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tasks.rollout.compose_v1 import find_compose_v1
from tests.chat_simulators import SlackSimulator, TelegramSimulator
from tests.harness import SERVICES, Harness, ServiceUnavailable
from tests.harness.docker_engine import DockerInfo
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import session_tmp
from tests.harness.s3 import S3Info
from tests.harness.ssh_hosts import SshHostsInfo
from tests.harness.sshd import SshInfo

HARNESS = Harness(keep=os.environ.get("SLIPWAY_KEEP_TEST_DIR") == "1")
# Before anything imports prefect: this session's own Prefect home and no stray API URL
# (flows that need a server get one from the `prefect_server` fixture).
os.environ["PREFECT_HOME"] = str(HARNESS.prefect_home)
os.environ.pop("PREFECT_API_URL", None)
# The temporary files of this process and of the commands it runs stay in the session
# directory, and go with it.
os.environ["TMPDIR"] = str(session_tmp(HARNESS.session_dir))
# A local Prefect API some test starts (no PREFECT_API_URL) stops soon after its last use.
os.environ.setdefault("SLIPWAY_LOCAL_API_IDLE_SECONDS", "5")
tempfile.tempdir = None  # recomputed from TMPDIR
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _stop_services() -> None:
    HARNESS.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt  # unwinds pytest like a Ctrl-C, so teardown runs


atexit.register(_stop_services)
signal.signal(signal.SIGTERM, _on_sigterm)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The Prefect server takes longest to start: run its tests last, the others meanwhile.
    items.sort(key=lambda item: item.get_closest_marker("prefect") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = {m.name for item in session.items for m in item.iter_markers() if m.name in SERVICES}
    HARNESS.start_async(*sorted(wanted))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Tests' tmp_path lives in the session directory: removed with it, kept with it.
    if not config.option.basetemp:
        config.option.basetemp = str(HARNESS.session_dir / "pytest")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    del session
    # Kept when tests failed, for their logs and files; the next session removes it.
    HARNESS.keep = HARNESS.keep or exitstatus == pytest.ExitCode.TESTS_FAILED
    _stop_services()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    del exitstatus
    if HARNESS.keep:
        terminalreporter.write_line(f"slipway harness: kept {HARNESS.session_dir}")


def pytest_report_header() -> str:
    return f"slipway harness: {HARNESS.session_dir}" + (
        " (CI: a missing service fails the run)" if IN_CI else ""
    )


def _service(name: str) -> Any:
    try:
        return HARNESS.require(name)
    except ServiceUnavailable as exc:
        if IN_CI:
            pytest.fail(f"{name} unavailable under CI: {exc}", pytrace=False)
        pytest.skip(f"{name} unavailable: {exc}")
    except Exception as exc:
        logs = HARNESS.session_dir / "logs"
        pytest.fail(f"{name} failed to start: {exc}\n(logs: {logs})", pytrace=False)


@pytest.fixture(scope="session")
def postgres() -> PostgresInfo:
    """A running PostgreSQL 15 server."""
    info: PostgresInfo = _service("postgres")
    return info


@pytest.fixture(scope="session")
def s3() -> S3Info:
    """A running S3 server (SeaweedFS) with one admin identity."""
    info: S3Info = _service("s3")
    return info


@pytest.fixture(scope="session")
def s3b() -> S3Info:
    """A second S3 server: another endpoint with other credentials."""
    info: S3Info = _service("s3b")
    return info


@pytest.fixture(scope="session")
def docker_engine() -> DockerInfo:
    """A Docker engine with the busybox test image built; DOCKER_HOST points at it, and
    DOCKER_CONFIG at a directory whose `docker compose` is Compose v2."""
    info: DockerInfo = _service("docker")
    os.environ["DOCKER_HOST"] = info.host
    os.environ["DOCKER_CONFIG"] = str(info.docker_config)
    return info


@pytest.fixture(params=["v2", "v1"])
def compose_version(request: pytest.FixtureRequest) -> str:
    """Which Compose a compose target runs: v2 (`docker compose`, the default users get) or
    v1 (Debian's `docker-compose` 1.29)."""
    return str(request.param)


@pytest.fixture
def compose_command(compose_version: str, docker_engine: DockerInfo) -> list[str]:
    """The `compose_command` setting that makes a compose target run `compose_version`."""
    del docker_engine  # DOCKER_CONFIG must point at the v2 plugin first
    if compose_version == "v2":
        return ["docker", "compose"]
    v1 = find_compose_v1()
    if v1 is None:
        pytest.skip("no docker-compose (v1) here: apt-get install docker-compose")
    return [v1]


@pytest.fixture(scope="session")
def ssh_server() -> SshInfo:
    """sshd on 127.0.0.1 with a client key and a known_hosts file."""
    info: SshInfo = _service("ssh")
    return info


@pytest.fixture(scope="session")
def ssh_hosts() -> SshHostsInfo:
    """Three SSH hosts, each sshd in its own network namespace (10.200.N.2:22), with its
    own host key and HOME; one client key for root (tests/harness/ssh_hosts.py)."""
    info: SshHostsInfo = _service("ssh_hosts")
    return info


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[PrefectInfo]:
    """A Prefect server with a `process` work pool and a worker; this process talks to it."""
    info: PrefectInfo = _service("prefect")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = info.api_url
    with temporary_settings(updates={PREFECT_API_URL: info.api_url}):
        yield info
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        # Deliver this process's queued events and logs now: at exit, with the server gone
        # and no API URL, Prefect would start a temporary server just to deliver them.
        for service in (EventsWorker, APILogWorker):
            service.drain_all(timeout=10, at_exit=False)


@pytest.fixture
def session_dir() -> Path:
    """This test session's directory (service data, logs, pid files)."""
    return HARNESS.session_dir


@pytest.fixture
def slack() -> Iterator[SlackSimulator]:
    """The Slack API simulator (tests/chat_simulators.py)."""
    with SlackSimulator() as sim:
        yield sim


@pytest.fixture
def telegram() -> Iterator[TelegramSimulator]:
    """The Telegram Bot API simulator (tests/chat_simulators.py)."""
    with TelegramSimulator() as sim:
        yield sim
