"""Session-wide fixtures: the real services, started on demand and always stopped.

Services start in parallel as soon as collection shows which ones the selected tests need
(their markers). When one cannot run on this machine its tests are skipped with the reason
and the way to get it; under CI (`CI=true`) that is a failure instead.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

# Before anything imports prefect: this session's own Prefect home, no stray API URL.
_BASE = Path(os.environ.get("SLIPWAY_TEST_TMP", "/tmp/slipway-tests"))

from tests.harness import SERVICES, Harness, ServiceUnavailable  # noqa: E402

HARNESS = Harness(_BASE, keep=os.environ.get("SLIPWAY_KEEP_TEST_DIR") == "1")
os.environ["PREFECT_HOME"] = str(HARNESS.prefect_home)
os.environ.pop("PREFECT_API_URL", None)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_stopped = False


def _stop_services() -> None:
    global _stopped
    if not _stopped:
        _stopped = True
        HARNESS.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt  # unwinds pytest like a Ctrl-C, so teardown runs


atexit.register(_stop_services)
signal.signal(signal.SIGTERM, _on_sigterm)


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = {m.name for item in session.items for m in item.iter_markers() if m.name in SERVICES}
    HARNESS.start_async(*sorted(wanted))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    del session, exitstatus
    _stop_services()


def pytest_report_header() -> str:
    return f"slipway harness: {HARNESS.session_dir}{' (CI: missing services fail)' if IN_CI else ''}"


def _service(name: str) -> object:
    try:
        return HARNESS.require(name)
    except ServiceUnavailable as exc:
        if IN_CI:
            pytest.fail(f"{name} unavailable under CI: {exc}", pytrace=False)
        pytest.skip(f"{name} unavailable: {exc}")
    except Exception as exc:
        pytest.fail(f"{name} failed to start: {exc}\n(logs: {HARNESS.session_dir / 'logs'})",
                    pytrace=False)


@pytest.fixture(scope="session")
def postgres():  # type: ignore[no-untyped-def]
    """A running PostgreSQL 15 server (PostgresInfo)."""
    return _service("postgres")


@pytest.fixture(scope="session")
def s3():  # type: ignore[no-untyped-def]
    """A running S3 server (S3Info)."""
    return _service("s3")


@pytest.fixture(scope="session")
def docker_engine():  # type: ignore[no-untyped-def]
    """A Docker engine with the busybox test image built (DockerInfo); DOCKER_HOST is set."""
    info = _service("docker")
    os.environ["DOCKER_HOST"] = info.host  # type: ignore[attr-defined]
    return info


@pytest.fixture(scope="session")
def ssh_server():  # type: ignore[no-untyped-def]
    """A running sshd on 127.0.0.1 with a client key (SshInfo)."""
    return _service("ssh")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[object]:
    """A Prefect server with a `process` work pool and a worker; this process talks to it."""
    info = _service("prefect")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: info.api_url}):  # type: ignore[attr-defined]
        os.environ["PREFECT_API_URL"] = info.api_url  # type: ignore[attr-defined]
        yield info


@pytest.fixture
def session_dir() -> Path:
    return HARNESS.session_dir


del sys
