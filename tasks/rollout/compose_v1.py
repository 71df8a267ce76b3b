"""Which Compose runs (v2 when it works, else v1), and what v1 needs that v2 gives itself.

Compose v1 (`docker-compose` 1.x, end-of-life) runs as a plain subprocess, like v2. The one
difference Slipway handles is the project name: v2's `config` prints the name it resolved,
v1's does not, so it is worked out here as v1 does it.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from dotenv import dotenv_values

from blocks.errors import ConfigError


def _works(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@functools.cache
def _detect(path: str | None) -> tuple[str, ...] | None:
    if shutil.which("docker", path=path) and _works(["docker", "compose", "version"]):
        return ("docker", "compose")
    # Presence is enough for v1: running it costs a second (a Python start), and a broken
    # install fails the first real command with its own message.
    if shutil.which("docker-compose", path=path):
        return ("docker-compose",)
    return None


def detect_compose_command() -> list[str]:
    """`docker compose` (v2) when it works, else `docker-compose` (v1)."""
    found = _detect(os.environ.get("PATH"))
    if found is None:
        raise ConfigError(
            "no docker compose found: install the Compose v2 plugin (docker compose) or "
            "docker-compose, or set compose_command"
        )
    return list(found)


def normalize_project(name: str) -> str:
    """What compose does to a directory name to make a project name."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def project_name_v1(directory: Path, env_file: Path) -> str:
    """COMPOSE_PROJECT_NAME from the environment, else from the env file, else the directory."""
    if name := os.environ.get("COMPOSE_PROJECT_NAME", ""):
        return name
    if env_file.is_file() and (found := dotenv_values(env_file).get("COMPOSE_PROJECT_NAME")):
        return found
    return normalize_project(directory.name)
