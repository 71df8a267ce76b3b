"""The rollout-target interface: where an app's services run and how a version reaches them.

docker compose implements it now (`tasks.compose_target.ComposeTarget`); Kubernetes, ECS
and SSH/systemd hosts will next. The release flow only talks to `RolloutTarget`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks.errors import SlipwayError
from tasks.health import HealthReport


class RolloutFailed(SlipwayError):
    """A service did not come up healthy; names it, the failed check and what was not touched."""

    def __init__(
        self,
        version: str,
        service: str,
        detail: str,
        *,
        check: str | None = None,
        done: list[str] | None = None,
        untouched: list[str] | None = None,
    ) -> None:
        self.version = version
        self.service = service
        self.check = check
        self.detail = detail
        self.done = done or []
        self.untouched = untouched or []
        rest = f"; not touched: {', '.join(self.untouched)}" if self.untouched else ""
        super().__init__(f"rollout of {version} failed at {service}: {detail}{rest}")


class MixedVersions(SlipwayError):
    """The services run different versions, so there is no single current version."""


@dataclass(frozen=True)
class LiveVersion:
    """Versions read from the live system, per service (empty: no container at all)."""

    services: dict[str, list[str]]

    @property
    def version(self) -> str | None:
        """The one version every service runs, else None."""
        found = {tuple(v) for v in self.services.values()}
        if len(found) == 1:
            (only,) = found
            if len(only) == 1:
                return only[0]
        return None

    @property
    def deployed(self) -> bool:
        """Whether any service has a container."""
        return any(self.services.values())

    def describe(self) -> str:
        return ", ".join(f"{s} {'+'.join(v) or 'absent'}" for s, v in self.services.items())


@dataclass(frozen=True)
class ServiceReady:
    service: str
    version: str
    health: HealthReport


@dataclass(frozen=True)
class RolloutReport:
    """Services brought up (or found ready), in order, with their health gate."""

    version: str
    services: list[ServiceReady] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(f"{s.service}: {s.health.summary()}" for s in self.services)


@dataclass(frozen=True)
class PreflightReport:
    """What preflight checked: the target is reachable and the version's images exist."""

    target: str
    checks: list[str] = field(default_factory=list)


@runtime_checkable
class RolloutTarget(Protocol):
    """A place the app's services run, all at one version."""

    def describe(self) -> str:
        """Where this is, safe to log."""
        ...

    def preflight(self, version: str | None = None) -> PreflightReport:
        """Check the target is reachable and usable (and, given a version, that its images
        exist or can be pulled) without changing anything; raise a one-line error otherwise."""
        ...

    def live_versions(self) -> LiveVersion:
        """The version each service runs now, read from the live system."""
        ...

    def current_version(self) -> str | None:
        """The version all services run; None when nothing is deployed.

        Raises `MixedVersions` when they disagree (or some are missing)."""
        ...

    def deploy(self, version: str) -> RolloutReport:
        """Every service to `version`, in order, each healthy before the next starts.

        Raises `RolloutFailed` naming the service and the failed check; services after
        it are left as they were."""
        ...

    def wait_ready(self, version: str) -> RolloutReport:
        """Wait until every service runs `version` and passes its health gate; changes nothing."""
        ...

    def stop_services(self) -> list[str]:
        """Stop the services in reverse order (the migration window); returns that order."""
        ...

    def start_services(self, version: str) -> RolloutReport:
        """Start the services at `version` in order, each gated by its health checks."""
        ...


@task(cache_policy=NO_CACHE, name="stop-services")
def stop_services_task(target: RolloutTarget) -> str:
    """Prefect task: stop the services (reverse order); says which."""
    return "stopped " + ", ".join(target.stop_services())


@task(cache_policy=NO_CACHE, name="rollout")
def deploy_task(target: RolloutTarget, version: str) -> str:
    """Prefect task: every service to `version`, gated; its summary."""
    return target.deploy(version).summary()
