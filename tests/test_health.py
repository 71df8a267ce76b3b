"""Health polling against real servers: an HTTP server, TCP sockets and Docker containers.

The pauses between probes go through an injected clock (no real waiting, no timed
assertions): the probes themselves are real requests, connections and inspections.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker
import pytest

from blocks.errors import ConfigError
from blocks.rollout import HealthCheck
from tasks.rollout.compose import container_probe
from tasks.rollout.health import HealthCheckFailed, wait_healthy
from tests.harness.docker_engine import BASE_IMAGE, DockerInfo
from tests.harness.procs import free_port, wait_until


class FakeClock:
    """Time that passes only when the poller sleeps; `on_sleep(n)` runs after the n-th pause."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


class ScriptedServer:
    """A real HTTP server answering GETs from a script; the last answer repeats."""

    def __init__(self) -> None:
        self.script: list[tuple[int, Any]] = [(200, {"status": "ok"})]
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                index = min(len(owner.requests), len(owner.script)) - 1
                status, body = owner.script[index]
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/health"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


def http_check(url: str, **kwargs: Any) -> HealthCheck:
    return HealthCheck(kind="http", url=url, **kwargs)


def test_status_mismatch_fails_at_the_deadline_naming_url_and_status(
    server: ScriptedServer,
) -> None:
    server.script = [(500, "boom")]
    clock = FakeClock()
    check = http_check(server.url, deadline_seconds=30, interval_seconds=1)
    with pytest.raises(HealthCheckFailed) as failed:
        wait_healthy([check], clock=clock, sleep=clock.sleep)
    probes = len(server.requests)
    assert str(failed.value) == f"{server.url}: 500, expected 200 after 30 s ({probes} probes)"
    assert probes == len(clock.sleeps) + 1 > 2
    assert sum(clock.sleeps) == pytest.approx(30)


def test_version_field_must_equal_the_version_being_deployed(server: ScriptedServer) -> None:
    old = {"status": "ok", "build": {"version": "v2"}}
    new = {"status": "ok", "build": {"version": "v3"}}
    server.script = [(200, old), (200, old), (200, new)]
    check = http_check(server.url, version_field="build.version", interval_seconds=0.5)
    clock = FakeClock()
    report = wait_healthy([check], "v3", clock=clock, sleep=clock.sleep)
    assert (report.results[0].attempts, report.results[0].detail) == (3, "200, version v3")
    assert len(server.requests) == 3

    server.requests.clear()
    server.script = [(200, old)]
    clock = FakeClock()
    with pytest.raises(
        HealthCheckFailed, match=r"version field 'build.version' is v2, expected v3"
    ):
        wait_healthy(
            [check.model_copy(update={"deadline_seconds": 3})], "v3", clock=clock, sleep=clock.sleep
        )
    assert len(server.requests) > 1

    # Without a version to compare, the status alone decides.
    server.requests.clear()
    assert wait_healthy([check], None).results[0].detail == "200"
    assert len(server.requests) == 1


def test_version_field_missing_or_body_not_json(server: ScriptedServer) -> None:
    check = http_check(server.url, version_field="version", deadline_seconds=1)
    clock = FakeClock()
    server.script = [(200, {"status": "ok"})]
    with pytest.raises(HealthCheckFailed, match="no field 'version' in the JSON body"):
        wait_healthy([check], "v1", clock=clock, sleep=clock.sleep)
    server.script = [(200, "<html>ok</html>")]
    clock = FakeClock()
    with pytest.raises(HealthCheckFailed, match="200 but the body is not JSON"):
        wait_healthy([check], "v1", clock=clock, sleep=clock.sleep)


def test_consecutive_successes_restart_after_a_failure(server: ScriptedServer) -> None:
    ok = (200, {"status": "ok"})
    server.script = [ok, (500, "flap"), ok, ok, ok]
    clock = FakeClock()
    check = http_check(server.url, successes=3, interval_seconds=1, backoff=2)
    report = wait_healthy([check], clock=clock, sleep=clock.sleep)
    assert report.results[0].attempts == 5
    assert len(server.requests) == 5
    # After a success the pause is the base interval again, not the backed-off one.
    assert clock.sleeps == [1, 1, 1, 1]

    server.requests.clear()
    server.script = [ok]
    clock = FakeClock()
    short = check.model_copy(update={"deadline_seconds": 1})
    with pytest.raises(HealthCheckFailed, match="passed only 2 of 3 times in a row after 1 s"):
        wait_healthy([short], clock=clock, sleep=clock.sleep)


def test_backoff_grows_to_the_cap_and_stops_at_the_deadline(server: ScriptedServer) -> None:
    server.script = [(503, "starting")]
    clock = FakeClock()
    check = http_check(
        server.url, deadline_seconds=20, interval_seconds=1, backoff=2, max_interval_seconds=5
    )
    with pytest.raises(HealthCheckFailed) as failed:
        wait_healthy([check], clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [1, 2, 4, 5, 5, 3]  # the last pause ends at the deadline
    assert len(server.requests) == 7
    assert str(failed.value).endswith("503, expected 200 after 20 s (7 probes)")


def test_tcp_refused_then_accepted() -> None:
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def open_after_second_pause(pauses: int) -> None:
        if pauses == 2:
            listener.bind(("127.0.0.1", port))
            listener.listen()

    clock = FakeClock(open_after_second_pause)
    check = HealthCheck(kind="tcp", host="127.0.0.1", port=port, interval_seconds=0.5)
    try:
        report = wait_healthy([check], clock=clock, sleep=clock.sleep)
    finally:
        listener.close()
    assert report.results[0].attempts == 3
    assert report.results[0].detail == "accepting connections"

    closed = check.model_copy(update={"deadline_seconds": 3})
    clock = FakeClock()
    with pytest.raises(
        HealthCheckFailed, match=rf"^tcp 127.0.0.1:{port}: connection refused after 3 s"
    ):
        wait_healthy([closed], clock=clock, sleep=clock.sleep)


def test_checks_run_in_order_against_one_deadline(server: ScriptedServer) -> None:
    port = free_port()
    clock = FakeClock()
    checks = [
        http_check(server.url, deadline_seconds=10, interval_seconds=2),
        HealthCheck(
            kind="tcp", host="127.0.0.1", port=port, deadline_seconds=4, interval_seconds=1
        ),
    ]
    # The http check passes at 5 s (pauses 2 and 3); the tcp check's 4 s count from when
    # waiting began, so it gets a single probe.
    server.script = [(500, "x"), (500, "x"), (200, {})]
    with pytest.raises(
        HealthCheckFailed,
        match=rf"^tcp 127.0.0.1:{port}: connection refused after 5 s \(1 probes\)$",
    ):
        wait_healthy(checks, clock=clock, sleep=clock.sleep)
    assert len(server.requests) == 3


def test_abort_stops_waiting_at_once(server: ScriptedServer) -> None:
    server.script = [(503, "x")]
    calls: list[int] = []

    def abort() -> str | None:
        calls.append(1)
        return "container app-1 exited with code 1" if len(calls) == 3 else None

    clock = FakeClock()
    with pytest.raises(HealthCheckFailed) as failed:
        wait_healthy([http_check(server.url)], abort=abort, clock=clock, sleep=clock.sleep)
    assert str(failed.value) == f"{server.url}: container app-1 exited with code 1"
    assert len(server.requests) == 2


def test_messages_never_show_url_credentials_or_query(server: ScriptedServer) -> None:
    server.script = [(401, "no")]
    url = server.url.replace("http://", "http://deploy:s3cret@") + "?token=t0ken"
    clock = FakeClock()
    with pytest.raises(HealthCheckFailed) as failed:
        wait_healthy([http_check(url, deadline_seconds=1)], clock=clock, sleep=clock.sleep)
    assert str(failed.value).startswith(f"{server.url}: 401, expected 200")
    assert "s3cret" not in str(failed.value)
    assert "t0ken" not in str(failed.value)
    assert set(server.requests) == {"/health?token=t0ken"}


def test_bad_checks_are_one_line_config_errors() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "http"}, "http health check needs a url like http://host:port/health"),
        ({"kind": "http", "url": "localhost:8080"}, "needs a url like"),
        ({"kind": "tcp", "host": "db"}, "tcp health check needs host and port"),
        ({"kind": "container", "version_field": "v"}, "version_field only applies to http"),
    ]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message) as failed:
            HealthCheck(**fields)
        assert "\n" not in str(failed.value)


def test_container_checks_without_a_target_fail_at_once() -> None:
    check = HealthCheck(kind="container", container="app-1")
    with pytest.raises(HealthCheckFailed) as failed:
        wait_healthy([check])
    assert (
        str(failed.value) == "container app-1: container checks need a target that runs containers"
    )


@pytest.fixture
def engine(docker_engine: DockerInfo) -> Iterator[docker.DockerClient]:
    client = docker_engine.client()
    yield client
    for container in client.containers.list(all=True, filters={"label": "slipway-health-test"}):
        container.remove(force=True)
    client.close()


def _run(client: docker.DockerClient, script: str, **kwargs: Any) -> Any:
    return client.containers.run(
        BASE_IMAGE,
        ["sh", "-c", script],
        detach=True,
        labels={"slipway-health-test": "1"},
        **kwargs,
    )


@pytest.mark.docker
def test_container_health(engine: docker.DockerClient) -> None:
    probe = {"interval": 100_000_000, "timeout": 1_000_000_000, "retries": 1}
    becomes_healthy = _run(
        engine,
        "sleep 1; touch /tmp/ready; exec sleep 600",
        healthcheck={"test": ["CMD", "test", "-f", "/tmp/ready"], **probe},
    )
    plain = _run(engine, "exec sleep 600")
    crashed = _run(engine, "exit 3")
    sick = _run(engine, "exec sleep 600", healthcheck={"test": ["CMD", "false"], **probe})

    def check(container: Any, **kwargs: Any) -> HealthCheck:
        return HealthCheck(
            kind="container", container=container.name, interval_seconds=0.1, **kwargs
        )

    report = wait_healthy([check(becomes_healthy), check(plain)], ready=container_probe(engine))
    assert [r.detail for r in report.results] == ["healthy", "running"]
    becomes_healthy.reload()
    assert becomes_healthy.attrs["State"]["Health"]["Status"] == "healthy"

    # An exited container without a restart policy fails at once, without waiting.
    assert crashed.wait()["StatusCode"] == 3
    with pytest.raises(HealthCheckFailed) as failed:
        wait_healthy([check(crashed)], ready=container_probe(engine))
    assert str(failed.value) == f"container {crashed.name}: exited with code 3"

    def is_unhealthy() -> bool:
        sick.reload()
        return bool(sick.attrs["State"]["Health"]["Status"] == "unhealthy")

    wait_until(is_unhealthy, timeout=30, what="the failing healthcheck")
    clock = FakeClock()
    with pytest.raises(HealthCheckFailed) as failed:
        wait_healthy(
            [check(sick, deadline_seconds=2)],
            ready=container_probe(engine),
            clock=clock,
            sleep=clock.sleep,
        )
    assert str(failed.value).startswith(
        f"container {sick.name}: unhealthy (last healthcheck exit code 1) after 2 s"
    )

    clock = FakeClock()
    with pytest.raises(HealthCheckFailed, match="no such container after 1 s"):
        wait_healthy(
            [
                HealthCheck(
                    kind="container", container="slipway-no-such-container", deadline_seconds=1
                )
            ],
            ready=container_probe(engine),
            clock=clock,
            sleep=clock.sleep,
        )
