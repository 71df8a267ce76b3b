"""Typed settings for rollouts: health checks, and each kind of target.

`TargetSettings` is chosen by `kind` (`compose` now; `kubernetes`, `ecs` and `ssh` will
follow, each a model of its own added to the union), so each kind validates its own keys.
A `kind`-less target is a compose one (what environments saved before `kind` hold).
Plain pydantic models, part of the `Environment` block (their field descriptions are its
UI form). Semantic mistakes raise `ConfigError` (one line), not a validation report.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from blocks.errors import ConfigError

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What Docker accepts as an image tag: a version ends up as one on every service.
IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"


class HealthCheck(BaseModel):
    """One health probe, polled until it passes `successes` times in a row or its deadline ends."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["http", "tcp", "container"] = Field(
        description="http: GET a URL; tcp: open a connection; container: the container's "
        "Docker healthcheck when it has one, else that it runs."
    )
    url: str | None = Field(default=None, description="URL to GET (http checks).")
    host: str | None = Field(default=None, description="Host to connect to (tcp checks).")
    port: int | None = Field(default=None, ge=1, le=65535, description="Port (tcp checks).")
    container: str | None = Field(
        default=None,
        description="Container name or id (container checks). Under a compose target, a "
        "compose service name; empty means the service being checked.",
    )
    expect_status: int = Field(default=200, description="HTTP status that counts as healthy.")
    version_field: str | None = Field(
        default=None,
        description="Dotted path of a JSON field of the response (e.g. 'version' or "
        "'build.tag') that must equal the version being deployed, so that the new version "
        "is the one answering.",
    )
    deadline_seconds: float = Field(
        default=60.0, gt=0, description="Give up this long after waiting began."
    )
    interval_seconds: float = Field(
        default=1.0, gt=0, description="Pause after the first failed probe."
    )
    backoff: float = Field(
        default=1.5, ge=1.0, description="Each failed probe multiplies the pause by this."
    )
    max_interval_seconds: float = Field(default=10.0, gt=0, description="Longest pause.")
    successes: int = Field(
        default=1, ge=1, description="Consecutive passing probes required (a failure resets)."
    )
    timeout_seconds: float = Field(default=5.0, gt=0, description="Timeout of one probe.")
    verify_tls: bool = Field(default=True, description="Verify HTTPS certificates.")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.kind == "http":
            parts = urlsplit(self.url or "")
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ConfigError(
                    f"http health check needs a url like http://host:port/health, got {self.url!r}"
                )
        elif self.kind == "tcp" and (not self.host or self.port is None):
            raise ConfigError("tcp health check needs host and port, e.g. host=db port=5432")
        if self.version_field is not None and self.kind != "http":
            raise ConfigError(
                f"version_field only applies to http checks, not {self.kind}: remove it"
            )
        return self

    def describe(self) -> str:
        """What is probed, safe to log: no credentials or query string of the URL."""
        if self.kind == "http":
            parts = urlsplit(self.url or "")
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            return f"{parts.scheme}://{netloc}{parts.path}"
        if self.kind == "tcp":
            return f"tcp {self.host}:{self.port}"
        return f"container {self.container or '?'}"


def _default_services() -> list[str]:
    return ["api", "worker", "web"]


class ComposeTargetSettings(BaseModel):
    """A docker compose project whose services all run one version tag."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["compose"] = Field(default="compose", description="The kind of target.")
    project_directory: Path = Field(description="Directory holding the compose file(s).")
    compose_files: list[str] = Field(
        default_factory=lambda: ["docker-compose.yml"],
        description="Compose files, relative to the project directory, in `-f` order.",
    )
    project_name: str | None = Field(
        default=None,
        description="Compose project name; empty: what compose itself would use (the "
        "file's `name`, COMPOSE_PROJECT_NAME, else the directory's name).",
    )
    services: list[str] = Field(
        default_factory=_default_services,
        description="The app's services in start order; they stop in reverse order.",
    )
    version_variable: str = Field(
        default="APP_VERSION",
        description="Variable the compose file uses in its image tags, e.g. "
        "`image: myapp-api:${APP_VERSION}`.",
    )
    env_file: str | None = Field(
        default=None, description="Env file passed as --env-file (default: compose's .env)."
    )
    compose_command: list[str] | None = Field(
        default=None,
        description="Compose command, e.g. 'docker compose' or 'docker-compose'; empty: "
        "`docker compose` when it works, else `docker-compose`.",
    )
    docker_host: str | None = Field(
        default=None,
        description="Docker engine, e.g. ssh://deploy@host or tcp://host:2376; empty: "
        "DOCKER_HOST or the local engine.",
    )
    health_checks: dict[str, list[HealthCheck]] = Field(
        default_factory=dict,
        description="Health gate per service; a service without an entry must pass its "
        "container's own Docker healthcheck, or just be running when it has none.",
    )
    stop_timeout_seconds: int = Field(
        default=30, ge=0, description="Grace period before a stopping container is killed."
    )
    command_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Longest a single compose command may run."
    )

    @field_validator("compose_command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.services or len(set(self.services)) != len(self.services):
            raise ConfigError(
                f"services must list each service once, in start order; got {self.services}"
            )
        if not self.compose_files:
            raise ConfigError("compose_files is empty: list at least docker-compose.yml")
        if not _VARIABLE.fullmatch(self.version_variable):
            raise ConfigError(
                f"version_variable {self.version_variable!r} is not a variable name, "
                "e.g. APP_VERSION"
            )
        if self.compose_command is not None and not self.compose_command:
            raise ConfigError("compose_command is empty: e.g. 'docker compose', or leave it unset")
        unknown = sorted(set(self.health_checks) - set(self.services))
        if unknown:
            raise ConfigError(
                f"health checks for unknown services {', '.join(unknown)}: "
                f"services are {', '.join(self.services)}"
            )
        return self

    def compose_paths(self) -> list[Path]:
        """The compose files as absolute paths."""
        root = self.project_directory.expanduser().absolute()
        return [root / f for f in self.compose_files]


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value.get("kind", "compose"))
    return getattr(value, "kind", None)


# One member per kind; a new kind adds `Annotated[ItsSettings, Tag("its-kind")]`.
TargetSettings = Annotated[
    Union[Annotated[ComposeTargetSettings, Tag("compose")]],  # noqa: UP007
    Discriminator(
        _kind,
        custom_error_type="target_kind",
        custom_error_message="unknown target kind: the kinds are compose",
    ),
]
