"""Rollouts to a real docker compose project (the demo app of tests/compose_app.py).

The release cycle runs on Compose v2 (`docker compose`, the plugin the harness installs) and
on v1 (Debian's `docker-compose`); the images come from the harness's registry, and the
target pulls the ones it deploys. The project starts at v1 with one `up`, and one test
takes it through a whole release cycle.
What every target must do is in tests/test_rollout_contract.py; this file keeps what is
compose-specific (events of the engine, preflight messages, settings).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.errors import ImageNotFound

from blocks.errors import ConfigError
from blocks.rollout import ComposeTargetSettings, HealthCheck
from tasks.rollout import MixedVersions, RolloutFailed, RolloutTarget
from tasks.rollout.compose import ComposeTarget
from tasks.rollout.compose_v1 import detect_compose_command, find_compose_v1
from tests.compose_app import ComposeApp, build_images, create_app
from tests.compose_app import image as registry_image
from tests.harness.docker_engine import DockerInfo

SERVICES = ["api", "worker", "web"]


@pytest.fixture(scope="session")
def demo_images(docker_engine: DockerInfo) -> docker.DockerClient:
    client = docker_engine.client()
    build_images(client, registry=docker_engine.registry)
    return client


@pytest.fixture
def registry(docker_engine: DockerInfo) -> str:
    return docker_engine.registry


@pytest.fixture
def running_app(
    tmp_path: Path, demo_images: docker.DockerClient, registry: str, compose_command: list[str]
) -> Iterator[tuple[ComposeApp, ComposeTarget]]:
    """A fresh project (unique name) running v1, taken down afterwards whatever happened.

    Down through the engine API (containers, then the network): the same as
    `compose down`, a second faster, and it works even when compose cannot.
    """
    app = create_app(
        tmp_path / "app", deadline_seconds=3, registry=registry, compose_command=compose_command
    )
    target = ComposeTarget(app.settings)
    try:
        target.compose("up", "-d", version="v1")
        target.wait_ready("v1")
        yield app, target
    finally:
        app.remove(demo_images)
        target.close()


def container_events(
    client: docker.DockerClient, project: str, since: float
) -> list[tuple[str, str]]:
    """(action, service) of the project's container events since `since`, in order."""
    stream = client.events(
        since=f"{since:.6f}",
        until=f"{time.time() + 0.05:.6f}",
        filters={"type": "container", "label": f"com.docker.compose.project={project}"},
        decode=True,
    )
    return [
        (str(e["Action"]), str(e["Actor"]["Attributes"]["com.docker.compose.service"]))
        for e in stream
        if int(e["timeNano"]) >= int(since * 1e9)
    ]


def state(app: ComposeApp, client: docker.DockerClient) -> dict[str, tuple[str, str, str, str]]:
    """Per service: container id, image, status, start time."""
    return {
        service: (c.id, c.attrs["Config"]["Image"], c.status, c.attrs["State"]["StartedAt"])
        for service, c in app.containers(client).items()
    }


@pytest.mark.docker
def test_release_cycle_deploy_refuse_fail_roll_back_stop_and_start(
    running_app: tuple[ComposeApp, ComposeTarget],
    demo_images: docker.DockerClient,
    registry: str,
    compose_command: list[str],
) -> None:
    """One project through what releases do to it (one test: each compose v1 call costs ~1 s)."""
    app, target = running_app
    client = demo_images

    def image(service: str, version: str) -> str:
        return registry_image(service, version, registry)

    assert isinstance(target, RolloutTarget)
    assert target.command() == compose_command
    assert target.current_version() == "v1"

    # The registry's name of v2 is not on the engine: the deploy pulls it.
    for service in SERVICES:
        with contextlib.suppress(ImageNotFound):
            client.images.remove(image(service, "v2"))
    since = time.time()
    report = target.deploy("v2")
    assert all(client.images.get(image(s, "v2")).attrs["RepoDigests"] for s in SERVICES)
    assert [s.service for s in report.services] == SERVICES
    assert httpx.get(app.api_health_url).json() == {"status": "ok", "version": "v2"}
    assert "demo web v2" in httpx.get(app.web_url).text
    v2 = state(app, client)
    assert {s: (image_, status) for s, (_, image_, status, _) in v2.items()} == {
        s: (image(s, "v2"), "running") for s in SERVICES
    }
    for service, container in app.containers(client).items():
        assert image(service, "v2") in container.image.tags
    starts = [s for action, s in container_events(client, app.project, since) if action == "start"]
    assert starts == SERVICES
    assert target.current_version() == "v2"

    # Images of v9 do not exist: refused before anything is stopped or replaced.
    with pytest.raises(ConfigError) as refused:
        target.deploy("v9")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"images of version v9 are missing: {image('api', 'v9')} (not local")
    assert all(image(s, "v9") in message for s in SERVICES)
    assert state(app, client) == v2

    # v3's api answers 404 on /health: the rollout stops there, worker and web keep v2.
    with pytest.raises(RolloutFailed) as failed:
        target.deploy("v3")
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(
        f"rollout of v3 failed at api: health check failed: {app.api_health_url}: 404, expected 200 after 3 s"
    )
    assert message.endswith("; not touched: worker, web")
    assert (failed.value.service, failed.value.check) == ("api", app.api_health_url)
    after = state(app, client)
    assert after["api"][1] == image("api", "v3")
    assert {s: after[s] for s in ("worker", "web")} == {s: v2[s] for s in ("worker", "web")}
    assert target.live_versions().services == {"api": ["v3"], "worker": ["v2"], "web": ["v2"]}
    with pytest.raises(MixedVersions, match=r"different versions \(api v3, worker v2, web v2\)"):
        target.current_version()

    # Rolling back is deploying the previous version: only the api changes.
    target.deploy("v2")
    assert httpx.get(app.api_health_url).json()["version"] == "v2"
    back = state(app, client)
    assert back["api"][1:3] == (image("api", "v2"), "running")
    assert {s: back[s] for s in ("worker", "web")} == {s: v2[s] for s in ("worker", "web")}
    assert target.current_version() == "v2"

    # The migration window: stop in reverse order, then start in order behind the gates.
    since = time.time()
    assert target.stop_services() == ["web", "worker", "api"]
    stops = [s for action, s in container_events(client, app.project, since) if action == "stop"]
    assert stops == ["web", "worker", "api"]
    assert {s: st[2] for s, st in state(app, client).items()} == dict.fromkeys(SERVICES, "exited")
    # Stopped containers still tell the version to roll back to.
    assert target.current_version() == "v2"
    # A stopped service fails its gate at once instead of waiting out the deadline.
    with pytest.raises(RolloutFailed, match=r"^rollout of v2 failed at api: .*exited with code 0"):
        target.wait_ready("v2")

    since = time.time()
    target.deploy("v2")
    events = container_events(client, app.project, since)
    order = [e for e in events if e[0] in ("start", "health_status: healthy")]
    assert order == [
        ("start", "api"),
        ("start", "worker"),
        ("health_status: healthy", "worker"),
        ("start", "web"),
    ]
    assert {s: st[1:3] for s, st in state(app, client).items()} == {
        s: (image(s, "v2"), "running") for s in SERVICES
    }
    assert httpx.get(app.api_health_url).json()["version"] == "v2"
    assert target.wait_ready("v2").version == "v2"


@pytest.mark.docker
def test_preflight_names_each_problem_in_one_line(
    tmp_path: Path, demo_images: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(tmp_path / "My App.v2")
    settings = app.settings

    def preflight(**changes: Any) -> str:
        target = ComposeTarget(settings.model_copy(update=changes))
        with pytest.raises(ConfigError) as failed:
            target.preflight("v1")
        assert "\n" not in str(failed.value)
        return str(failed.value)

    assert preflight(docker_host="unix:///nonexistent/docker.sock").startswith(
        "cannot reach the Docker engine at unix:///nonexistent/docker.sock"
    )
    assert preflight(compose_command=["/nonexistent/docker-compose"]) == (
        "compose command '/nonexistent/docker-compose' not found: install it or fix compose_command"
    )
    assert preflight(project_directory=tmp_path / "empty").startswith(
        f"compose file {tmp_path / 'empty' / 'docker-compose.yml'} not found"
    )
    compose_file = app.directory / "docker-compose.yml"
    good = compose_file.read_text()
    compose_file.write_text(good.replace("slipway-demo/web:${APP_VERSION}", "slipway-demo/web:v1"))
    assert preflight().startswith(
        "service web's image slipway-demo/web:v1 does not use ${APP_VERSION}"
    )
    compose_file.write_text(good.replace("services:", "services: ["))
    assert preflight().startswith("compose file docker-compose.yml is invalid")

    # An explicit command (a string is split like a shell would) and compose's own
    # project name (the directory's, normalised) when none is set.
    compose_file.write_text(good)
    target = ComposeTarget(
        settings.model_copy(
            update={
                "project_name": None,
                "compose_command": [find_compose_v1()],
                "services": ["api", "worker", "web", "cron"],
            }
        )
    )
    with pytest.raises(ConfigError) as failed:
        target.preflight("v1")
    assert str(failed.value).startswith(
        "service 'cron' is not in the compose file (it has api, web, worker): fix services"
    )
    assert target.command() == [find_compose_v1()]
    assert target.project() == "myappv2"
    split = ComposeTargetSettings.model_validate(
        {"project_directory": tmp_path, "compose_command": "docker  compose"}
    )
    assert split.compose_command == ["docker", "compose"]

    # v2 when it works (the harness's DOCKER_CONFIG has the plugin): the default users get.
    assert detect_compose_command() == ["docker", "compose"]
    assert ComposeTarget(settings).command() == ["docker", "compose"]
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ConfigError, match=r"^no docker compose found: install the Compose v2"):
        detect_compose_command()


def test_settings_mistakes_are_one_line_config_errors(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"services": []}, "services must list each service once"),
        ({"services": ["api", "api"]}, "services must list each service once"),
        ({"version_variable": "APP-VERSION"}, "version_variable 'APP-VERSION' is not a variable"),
        (
            {"health_checks": {"cron": [HealthCheck(kind="container")]}},
            "health checks for unknown services cron: services are api, worker, web",
        ),
        ({"compose_command": ""}, "compose_command is empty"),
        ({"compose_files": []}, "compose_files is empty"),
    ]
    for fields, message in cases:
        with pytest.raises(ConfigError, match=message) as failed:
            ComposeTargetSettings(project_directory=tmp_path, **fields)
        assert "\n" not in str(failed.value)
