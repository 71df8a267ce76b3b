"""Typed settings for rollouts: each kind of target (health checks are in `health_check`).

`TargetSettings` is chosen by `kind` (`compose`, `ssh`, `kubernetes`, `ecs`: each a model of
its own in the union), so each kind validates its own keys.
A `kind`-less target is a compose one (what environments saved before `kind` hold).
Plain pydantic models, part of the `Environment` block (their field descriptions are its
UI form). Semantic mistakes raise `ConfigError` (one line), not a validation report.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal, Self, Union

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
from blocks.health_check import HealthCheck as HealthCheck
from blocks.rollout_ecs import EcsTargetSettings as EcsTargetSettings
from blocks.rollout_kubernetes import KubernetesTargetSettings as KubernetesTargetSettings
from blocks.rollout_ssh import SshTargetSettings as SshTargetSettings

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What Docker accepts as an image tag: a version ends up as one on every service.
IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"


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
        others = [
            c.kind
            for checks in self.health_checks.values()
            for c in checks
            if c.kind in ("unit", "rollout")
        ]
        if others:
            raise ConfigError(
                f"{others[0]} health checks are for ssh and kubernetes targets: use kind "
                "container (or none) here"
            )
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
    Union[  # noqa: UP007
        Annotated[ComposeTargetSettings, Tag("compose")],
        Annotated[SshTargetSettings, Tag("ssh")],
        Annotated[KubernetesTargetSettings, Tag("kubernetes")],
        Annotated[EcsTargetSettings, Tag("ecs")],
    ],
    Discriminator(
        _kind,
        custom_error_type="target_kind",
        custom_error_message="unknown target kind: the kinds are compose, ssh, kubernetes, ecs",
    ),
]
