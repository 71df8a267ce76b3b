"""Settings of a kubernetes target: Deployments in one namespace, all at one image tag.

The 224Solutions Kubernetes checklist's cluster: each service is a Deployment whose
containers (all, or the ones named) run the version as their image tag, the repository
kept. How Slipway reaches the API server: a kubeconfig (path and context), the pod's own
service account (in-cluster), or a KubernetesCredentials block (server, CA, token).
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from blocks.errors import ConfigError
from blocks.health_check import HealthCheck

# A DNS-1123 label: what Kubernetes accepts as a namespace, Deployment or container name.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _default_services() -> list[str]:
    return ["api", "worker", "web"]


class CleanupSettings(BaseModel):
    """Named temporary objects a rollback deletes (missing ones are fine)."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[str] = Field(default_factory=list, description="Job names.")
    pods: list[str] = Field(default_factory=list, description="Pod names.")
    pvcs: list[str] = Field(default_factory=list, description="PersistentVolumeClaim names.")


class KubernetesTargetSettings(BaseModel):
    """Deployments in a namespace whose containers all run one version tag."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["kubernetes"] = Field(description="The kind of target.")
    namespace: str = Field(default="default", description="The app's namespace.")
    services: list[str] = Field(
        default_factory=_default_services,
        description="The Deployments in rollout order (scaled to zero in reverse order for "
        "a migration window).",
    )
    containers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per Deployment, the containers whose image tag is the version; a "
        "Deployment without an entry: all its containers.",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="A kubeconfig file; empty: KUBECONFIG, else ~/.kube/config (unless "
        "in_cluster or credentials_block).",
    )
    context: str | None = Field(
        default=None, description="The kubeconfig context; empty: its current context."
    )
    in_cluster: bool = Field(
        default=False,
        description="Use the service account of the pod Slipway runs in (a worker in the cluster).",
    )
    credentials_block: str | None = Field(
        default=None,
        description="Name of a KubernetesCredentials block (API server URL, CA, token).",
    )
    health_checks: dict[str, list[HealthCheck]] = Field(
        default_factory=dict,
        description="Checks per Deployment after its rollout completes (as `kubectl rollout "
        "status` decides), e.g. its Service's /health with version_field.",
    )
    flags_configmap: str | None = Field(
        default=None,
        description="The feature-flag ConfigMap: a release may set keys in it (`--flag "
        "key=value`, `slipway flags set`); its data before is in the journal and the "
        "rollback puts it back. Deployments that read it are restarted on a change.",
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Secrets copied inside the cluster before each release "
        "(`<name>-slipway-<release id>`) and put back by its rollback; their values never "
        "leave the cluster.",
    )
    keep_secret_copies: int = Field(
        default=10, ge=1, description="Releases whose Secret copies are kept (newest first)."
    )
    cleanup: CleanupSettings = Field(
        default_factory=lambda: CleanupSettings(),
        description="Temporary objects deleted after a rollback, besides those labelled "
        "slipway.dev/release=<release id>.",
    )
    check_images: bool = Field(
        default=False,
        description="Preflight looks each new image up in its registry, through the Docker "
        "engine at DOCKER_HOST (with its registry logins), so a release of a tag never "
        "pushed stops before anything changes.",
    )
    rollout_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest wait for one Deployment's rollout (Slipway's own deadline, "
        "besides the Deployment's progressDeadlineSeconds).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not _NAME.fullmatch(self.namespace):
            raise ConfigError(f"namespace {self.namespace!r} is not a Kubernetes name, e.g. shop")
        if not self.services or len(set(self.services)) != len(self.services):
            raise ConfigError(
                f"services must list each Deployment once, in rollout order; got {self.services}"
            )
        bad = [s for s in self.services if not _NAME.fullmatch(s)]
        if bad:
            raise ConfigError(f"{bad[0]!r} is not a Deployment name, e.g. shop-api")
        for field, names in (
            ("containers", self.containers),
            ("health_checks", self.health_checks),
        ):
            unknown = sorted(set(names) - set(self.services))
            if unknown:
                raise ConfigError(
                    f"{field} for unknown Deployments {', '.join(unknown)}: services are "
                    f"{', '.join(self.services)}"
                )
        ways = [w for w in ("kubeconfig", "credentials_block") if getattr(self, w)]
        if self.in_cluster:
            ways.append("in_cluster")
        if len(ways) > 1:
            raise ConfigError(f"give one way to reach the cluster, not {' and '.join(ways)}")
        checks = [c for cs in self.health_checks.values() for c in cs]
        if any(c.kind in ("container", "unit") for c in checks):
            raise ConfigError(
                "container and unit health checks are for compose and ssh targets: a "
                "Deployment's own rollout is always waited for"
            )
        return self
