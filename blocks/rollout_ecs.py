"""Settings of an ecs target: ECS services of one cluster, all at one image tag.

Seed 001's Fargate cluster: each service's task definition names containers (all, or the
ones listed) whose image tag is the version, the repository kept. Slipway reaches the ECS
API through boto3: an AwsCredentials block (keys, optionally a role) or boto3's standard
chain (environment, profile, instance or task role).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blocks.errors import ConfigError
from blocks.health_check import HOST, HealthCheck

# What ECS accepts as a cluster, service or container name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


class EcsService(BaseModel):
    """An ECS service and the containers whose image tag is the version."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The ECS service's name.")
    containers: list[str] = Field(
        default_factory=list,
        description="Containers of its task definition whose image tag is the version; "
        "empty: all of them. The others are left as they are.",
    )


class EcsTargetSettings(BaseModel):
    """ECS services of one cluster whose containers all run one version tag."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ecs"] = Field(description="The kind of target.")
    cluster: str = Field(description="The ECS cluster's name (or ARN).")
    region: str = Field(description="The cluster's region, e.g. eu-west-3.")
    services: list[EcsService] = Field(
        description="The services in rollout order: a name (all containers carry the "
        "version) or {name, containers}.",
    )
    credentials_block: str | None = Field(
        default=None,
        description="Name of an AwsCredentials block (keys, optionally a role to assume); "
        "empty: boto3's standard chain (environment, profile, instance or task role).",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="The ECS API endpoint (an ECS-compatible service or a test double); "
        "empty: AWS's for the region.",
    )
    health_checks: dict[str, list[HealthCheck]] = Field(
        default_factory=dict,
        description="Checks per service after its deployment completed (always waited for), "
        "e.g. its load balancer's /health with version_field.",
    )
    rollout_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest wait for one service's deployment (Slipway's own deadline, "
        "besides the deployment circuit breaker).",
    )
    poll_seconds: float = Field(
        default=5.0, gt=0, description="Pause between two reads of a deployment's state."
    )
    keep_revisions: int = Field(
        default=5,
        ge=1,
        description="Task definition revisions kept per family after a release succeeded "
        "(the newest; older ones are deregistered unless a deployment uses them).",
    )
    check_images: bool = Field(
        default=True,
        description="Preflight checks that the version's images exist (ECR repositories "
        "only; other registries are not checked).",
    )
    check_permissions: bool = Field(
        default=True,
        description="Preflight asks IAM's policy simulator whether the credentials may "
        "register and deregister task definitions, update the services and pass their "
        "roles (when the credentials may ask it); false: skip, e.g. where organisation "
        "policies or permission boundaries make its answer wrong.",
    )

    @field_validator("services", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [s.name for s in self.services]
        if not names or len(set(names)) != len(names):
            raise ConfigError(
                f"services must list each ECS service once, in rollout order; got {names}"
            )
        containers = [c for s in self.services for c in s.containers]
        bad = [n for n in (*names, *containers) if not _NAME.fullmatch(n)]
        if bad:
            raise ConfigError(f"{bad[0]!r} is not an ECS service or container name, e.g. shop-api")
        if not self.cluster.startswith("arn:") and not _NAME.fullmatch(self.cluster):
            raise ConfigError(f"cluster {self.cluster!r} is not an ECS cluster name, e.g. shop")
        if not _REGION.fullmatch(self.region):
            raise ConfigError(f"region {self.region!r} is not an AWS region, e.g. eu-west-3")
        unknown = sorted(set(self.health_checks) - set(names))
        if unknown:
            raise ConfigError(
                f"health_checks for unknown services {', '.join(unknown)}: services are "
                f"{', '.join(names)}"
            )
        checks = [c for cs in self.health_checks.values() for c in cs]
        if any(c.kind in ("container", "unit", "rollout") for c in checks):
            raise ConfigError(
                "container, unit and rollout health checks are for other targets: an ECS "
                "service's deployment is always waited for; use http or tcp checks"
            )
        if any(c.per_host for c in checks):
            raise ConfigError(
                f"{HOST} in a health check is for ssh targets: give the service's address"
            )
        return self

    @property
    def service_names(self) -> list[str]:
        return [s.name for s in self.services]

    def containers(self, service: str) -> list[str]:
        """The containers named for `service` ([]: all of them)."""
        return next(s.containers for s in self.services if s.name == service)
