"""The warm Compose v1 process: each forked command behaves as `docker-compose` would.

Runs the real `docker-compose` (v1) of this machine; `config` needs no engine, and a TCP
listener that never answers stands for a hung engine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.rollout import ComposeTargetSettings
from tasks.compose_target import ComposeTarget
from tasks.compose_v1 import WarmComposeV1, python_entry_point

pytestmark = pytest.mark.skipif(
    python_entry_point("docker-compose") is None, reason="no Python docker-compose (v1) here"
)

COMPOSE = """
services:
  api:
    image: "demo/api:${APP_VERSION}"
    environment:
      WHERE: "${WHERE:-nowhere}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    return tmp_path


@pytest.fixture
def warm() -> Iterator[WarmComposeV1]:
    started = WarmComposeV1.start()
    assert started is not None
    yield started
    started.close()


def plain(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_each_command_gets_its_own_environment_and_directory(
    warm: WarmComposeV1, project: Path
) -> None:
    for version, where in (("v1", "here"), ("v2", "there"), ("v1", "here")):
        env = dict(os.environ, APP_VERSION=version, WHERE=where)
        done = warm.run(["config"], cwd=project, env=env, timeout=30)
        expected = plain(["config"], project, env)
        assert done.returncode == expected.returncode == 0, done.stderr
        assert done.stdout == expected.stdout
        assert f"demo/api:{version}" in done.stdout
        assert f"WHERE: {where}" in done.stdout


def test_failures_keep_their_status_and_message(warm: WarmComposeV1, project: Path) -> None:
    env = dict(os.environ, APP_VERSION="v1")
    args = ["-f", "missing.yml", "config"]
    done = warm.run(args, cwd=project, env=env, timeout=30)
    expected = plain(args, project, env)
    assert done.returncode == expected.returncode != 0
    assert done.stderr.strip()
    assert done.stderr.strip() == expected.stderr.strip()
    (project / "docker-compose.yml").write_text("services: [broken")
    broken = warm.run(["config"], cwd=project, env=env, timeout=30)
    assert broken.returncode != 0
    assert "yaml" in broken.stderr.lower()


def test_a_hung_command_is_killed_at_its_timeout(warm: WarmComposeV1, project: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    env = dict(
        os.environ, APP_VERSION="v1", DOCKER_HOST=f"tcp://127.0.0.1:{silent.getsockname()[1]}"
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            warm.run(["ps"], cwd=project, env=env, timeout=2)
        # The warm process lives on and serves the next command.
        ok = warm.run(["config"], cwd=project, env=dict(env, DOCKER_HOST=""), timeout=30)
        assert ok.returncode == 0, ok.stderr
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


def test_the_target_runs_commands_as_processes_when_the_warm_one_is_gone(
    project: Path,
) -> None:
    settings = ComposeTargetSettings(
        project_directory=project, project_name="slipwaywarm", services=["api"]
    )
    target = ComposeTarget(settings)
    try:
        assert target.image_templates() == {"api": "demo/api:slipway-version-placeholder"}
        assert target._warm is not None, "v1 commands should go through the warm process"
        target._warm._proc.kill()  # dies behind the target's back
        target._warm._proc.wait()
        (project / "docker-compose.yml").write_text(COMPOSE.replace("demo/api", "demo/api2"))
        assert target.image_templates() == {"api": "demo/api2:slipway-version-placeholder"}
        assert target._warm is None
    finally:
        target.close()


def test_only_python_scripts_are_warmed(tmp_path: Path) -> None:
    assert python_entry_point("docker-compose") is not None
    binary = shutil.which("true")
    assert binary is not None
    assert python_entry_point(binary) is None
    script = tmp_path / "compose-wrapper"
    script.write_text('#!/bin/sh\nexec docker-compose "$@"\n')
    script.chmod(0o755)
    assert WarmComposeV1.start(str(script)) is None
