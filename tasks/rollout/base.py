"""The rollout-target interface, and the ordered rollout every target shares.

`RolloutTarget` is all the flows and the CLI see. `OrderedRollout` writes the rollout once:
services in order, each gated by its health checks before the next starts, `RolloutFailed`
naming the service, the failed check, what was done and what was not touched, stops in
reverse order, and `MixedVersions` when the live versions disagree. A target (compose, each
host of an ssh target, Kubernetes, ECS) implements only the per-service steps
and a readiness hook for the health-check kinds that need it (a container's health).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from blocks.errors import SlipwayError
from blocks.rollout import HealthCheck
from tasks.rollout.health import (
    HealthCheckFailed,
    HealthReport,
    Observation,
    logger,
    wait_healthy,
)


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
        output: dict[str, str] | None = None,
    ) -> None:
        self.version = version
        self.output = output or {}  # the tails of the commands run, by step
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
    """Versions read from the live system, per service (empty: nothing deployed there)."""

    services: dict[str, list[str]]
    # Where the services run on several hosts: the version each reports (None: nothing).
    hosts: dict[str, str | None] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        """The one version every service (and host) runs, else None."""
        found = {tuple(v) for v in self.services.values()}
        if self.hosts and len(set(self.hosts.values())) != 1:
            return None
        if len(found) == 1:
            (only,) = found
            if len(only) == 1:
                return only[0]
        return None

    @property
    def deployed(self) -> bool:
        """Whether any service is deployed at all."""
        return any(self.services.values())

    def describe(self) -> str:
        text = ", ".join(f"{s} {'+'.join(v) or 'absent'}" for s, v in self.services.items())
        if self.hosts:
            text += "; hosts " + ", ".join(f"{h} {v or 'none'}" for h, v in self.hosts.items())
        return text


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
    output: dict[str, str] = field(default_factory=dict)  # the tails of the commands run, by step

    def summary(self) -> str:
        return "; ".join(f"{s.service}: {s.health.summary()}" for s in self.services)


@dataclass(frozen=True)
class PreflightReport:
    """What preflight checked: the target is reachable and the version's images exist."""

    target: str
    checks: list[str] = field(default_factory=list)


@runtime_checkable
class RolloutTarget(Protocol):
    """A place the app's services run, all at one version; a context manager (closes it)."""

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

    def deploy(self, version: str, *, keep_going: bool = False) -> RolloutReport:
        """Every service to `version` (started if stopped), in order, each healthy before the
        next starts. A service already there is left as it is.

        Raises `RolloutFailed` naming the service and the failed check; services after
        it are left as they were. `keep_going` (a rollback): where the target has several
        independent places (hosts), one that fails does not stop the others; the error
        comes at the end."""
        ...

    def wait_ready(self, version: str) -> RolloutReport:
        """Wait until every service runs `version` and passes its health gate; changes nothing."""
        ...

    def stop_services(self) -> list[str]:
        """Stop the services in reverse order (the migration window); returns that order."""
        ...

    def wait_healthy(self, checks: Sequence[HealthCheck], version: str) -> HealthReport:
        """Poll checks (the app-wide ones), target-specific kinds through this target."""
        ...

    def usage(self) -> dict[str, int]:
        """Best-effort figures of the target's runtime, for the rollback record."""
        ...

    def history(self) -> dict[str, list[str]]:
        """Per service, the revisions the target keeps, oldest first, one line each
        (Kubernetes: its ReplicaSets); empty where the target keeps none."""
        ...

    def save_state(self, release_id: str, flags: dict[str, str]) -> dict[str, Any]:
        """Before a release changes anything: save what its rollback restores besides the
        version (Kubernetes: Secrets copied in the cluster, the flags' data), then set
        `flags`; a record for the journal, never holding a secret's value ({}: nothing)."""
        ...

    def restore_state(self, record: dict[str, Any]) -> list[str]:
        """Put back what `save_state` saved; what was restored."""
        ...

    def cleanup(self, release_id: str) -> list[str]:
        """After a rollback: delete the release's temporary objects; what was deleted."""
        ...

    def prune(self) -> list[str]:
        """After a release succeeded: drop what no rollback needs any more (ECS: task
        definition revisions beyond the kept ones); what was dropped."""
        ...

    def to_revision(self, number: int, services: Sequence[str] | None = None) -> RolloutReport:
        """Put a kept revision back on the services (all by default), each gated, in order;
        raises `SlipwayError` where the target keeps no revisions, or one lacks it."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ClosingTarget(ABC):
    """What every target class shares: a context manager that closes it."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the target can still be used afterwards (it reopens them)."""

    def usage(self) -> dict[str, int]:
        return {}

    def history(self) -> dict[str, list[str]]:
        return {}

    def save_state(self, release_id: str, flags: dict[str, str]) -> dict[str, Any]:
        del release_id
        if flags:
            raise SlipwayError(
                f"{self.describe()} has no feature flags: flags are a kubernetes target's "
                "(flags_configmap)"
            )
        return {}

    def restore_state(self, record: dict[str, Any]) -> list[str]:
        del record
        return []

    def cleanup(self, release_id: str) -> list[str]:
        del release_id
        return []

    def prune(self) -> list[str]:
        return []

    def to_revision(self, number: int, services: Sequence[str] | None = None) -> RolloutReport:
        del number, services
        raise SlipwayError(
            f"{self.describe()} keeps no revisions: --to-revision is for kubernetes and ecs targets; "
            "use --to VERSION"
        )

    @abstractmethod
    def describe(self) -> str: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OrderedRollout(ClosingTarget):
    """The rollout written once; a target implements the abstract per-service steps."""

    services: list[str]
    # Whether each service is a place of its own (ECS services): a rollback's `keep_going`
    # then brings back every service it can. Otherwise the services go in order or not at all.
    independent_services = False

    # -- what each target implements ------------------------------------------------------

    @abstractmethod
    def preflight(self, version: str | None = None) -> PreflightReport: ...

    @abstractmethod
    def service_versions(self, service: str) -> list[str]:
        """The versions the service's instances run (stopped ones count), sorted; [] if none."""

    @abstractmethod
    def start_service(self, service: str, version: str) -> None:
        """Bring the service to `version` and start it; nothing when it already is.

        Raises `SlipwayError` (one line) when that fails."""

    @abstractmethod
    def stop_service(self, service: str) -> None:
        """Stop the service; raises `SlipwayError` when it still runs."""

    @abstractmethod
    def gate(self, service: str) -> list[HealthCheck]:
        """The service's health gate, resolved for this target."""

    def readiness(self, check: HealthCheck) -> Observation | None:
        """The readiness hook: probe a check kind only the target can (None: not one)."""
        return None

    def crashed(self, service: str) -> str | None:
        """Why waiting for the service cannot help any more (it crashed for good), else None."""
        return None

    def start_check(self, service: str) -> str | None:
        """The check a failed `start_service` is named by (None: none; ECS: its rollout,
        whose wait is part of the start)."""
        del service
        return None

    # -- the shared rollout ---------------------------------------------------------------

    def live_versions(self) -> LiveVersion:
        return LiveVersion({s: self.service_versions(s) for s in self.services})

    def current_version(self) -> str | None:
        live = self.live_versions()
        if not live.deployed:
            return None
        if live.version is None:
            raise MixedVersions(
                f"services of {self.describe()} run different versions ({live.describe()}): "
                "deploy one version to all of them first"
            )
        return live.version

    def wait_healthy(self, checks: Sequence[HealthCheck], version: str) -> HealthReport:
        return wait_healthy(checks, version, ready=self.readiness)

    def deploy(self, version: str, *, keep_going: bool = False) -> RolloutReport:
        keep_going = keep_going and self.independent_services
        self.preflight(version)
        ready: list[ServiceReady] = []
        failed: list[RolloutFailed] = []
        for i, service in enumerate(self.services):
            done = [r.service for r in ready]
            untouched = [] if keep_going else self.services[i + 1 :]
            try:
                try:
                    self.start_service(service, version)
                except SlipwayError as exc:
                    raise RolloutFailed(
                        version,
                        service,
                        str(exc),
                        check=self.start_check(service),
                        done=done,
                        untouched=untouched,
                    ) from exc
                ready.append(self._gated(service, version, done, untouched))
                logger().info("%s runs %s: %s", service, version, ready[-1].health.summary())
            except RolloutFailed as exc:
                if not keep_going:
                    raise
                failed.append(exc)
        if failed:
            first = failed[0]
            detail = "; ".join(
                f.detail if f is first else f"{f.service}: {f.detail}" for f in failed
            )
            raise RolloutFailed(
                version, first.service, detail, check=first.check, done=[r.service for r in ready]
            )
        return RolloutReport(version, ready)

    def wait_ready(self, version: str) -> RolloutReport:
        ready = []
        for i, service in enumerate(self.services):
            ready.append(self._gated(service, version, self.services[:i], self.services[i + 1 :]))
        return RolloutReport(version, ready)

    def stop_services(self) -> list[str]:
        order = list(reversed(self.services))
        for service in order:
            self.stop_service(service)
        logger().info("stopped %s", ", ".join(order))
        return order

    def _gated(
        self, service: str, version: str, done: list[str], untouched: list[str]
    ) -> ServiceReady:
        """The service runs `version` and passes its health gate, else `RolloutFailed`."""
        versions = self.service_versions(service)
        if not versions:
            raise RolloutFailed(version, service, "not deployed", done=done, untouched=untouched)
        wrong = [v for v in versions if v != version]
        if wrong:
            raise RolloutFailed(
                version,
                service,
                f"runs {', '.join(wrong)}, expected {version}",
                done=done,
                untouched=untouched,
            )
        health = self._passes(service, version, self.gate(service), done, untouched)
        return ServiceReady(service, version, health)

    def _passes(
        self,
        service: str,
        version: str,
        checks: Sequence[HealthCheck],
        done: list[str],
        untouched: list[str],
    ) -> HealthReport:
        """The service passes `checks` (polled), else `RolloutFailed` naming the check."""
        try:
            return wait_healthy(
                checks, version, ready=self.readiness, abort=lambda: self.crashed(service)
            )
        except HealthCheckFailed as exc:
            raise RolloutFailed(
                version,
                service,
                f"health check failed: {exc}",
                check=exc.check,
                done=done,
                untouched=untouched,
            ) from exc
