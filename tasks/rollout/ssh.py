"""Rollout to hosts over SSH whose services are systemd units (the Qubeless upgrade guide).

Each host is a `HostRollout` (stop, deploy steps, start in order, gated). Hosts move
`max_parallel` at a time (default: all at once), side by side; when a host fails, the hosts
already in flight finish, no further host starts, and `RolloutFailed` names the host and
which hosts were changed. Bringing those back is the rollback's job: it redeploys the
version before to every host, which leaves hosts already there alone.

    with SshTarget(settings) as target:
        target.deploy("v2")
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from blocks.errors import SlipwayError
from blocks.health_check import HealthCheck
from blocks.rollout_ssh import SshTargetSettings
from tasks.rollout.base import (
    ClosingTarget,
    LiveVersion,
    MixedVersions,
    PreflightReport,
    RolloutFailed,
    RolloutReport,
    ServiceReady,
)
from tasks.rollout.health import HealthReport, wait_healthy
from tasks.rollout.ssh_session import SshAuth, SshSession
from tasks.rollout.systemd_host import HOST_CHECKS, HostRollout

T = TypeVar("T")


def ssh_auth(settings: SshTargetSettings) -> SshAuth:
    """The key and secret variables (from the credentials block) and the known host keys."""
    auth = SshAuth(host_keys=SshAuth.load_known_hosts(settings.known_hosts))
    if settings.credentials_block:
        from blocks.ssh_credentials import SshCredentials  # loads Prefect: only when named

        credentials = SshCredentials.resolve(settings.credentials_block)
        auth.pkey = credentials.pkey()
        auth.secret_env = credentials.variables()
    return auth


class SshTarget(ClosingTarget):
    """A `RolloutTarget` over hosts (see `SshTargetSettings`); a context manager."""

    def __init__(self, settings: SshTargetSettings, auth: SshAuth | None = None) -> None:
        self.settings = settings
        self.services = list(settings.services)
        self._auth = auth
        self._hosts: list[HostRollout] | None = None

    @property
    def hosts(self) -> list[HostRollout]:
        if self._hosts is None:
            auth = self._auth or ssh_auth(self.settings)
            self._hosts = [
                HostRollout(self.settings, SshSession(self.settings, auth, address, port))
                for address, port in self.settings.addresses()
            ]
        return self._hosts

    def describe(self) -> str:
        return (
            f"{len(self.settings.hosts)} ssh host(s) {', '.join(self.settings.hosts)} "
            f"({', '.join(self.services)})"
        )

    def close(self) -> None:
        for host in self._hosts or []:
            host.close()

    def _each(self, hosts: Sequence[HostRollout], call: Callable[[HostRollout], T]) -> list[T]:
        """`call` on every host side by side (in copies of this context: the run's logger);
        every error, one line naming each host that failed."""
        with ThreadPoolExecutor(max_workers=len(hosts), thread_name_prefix="ssh-host") as pool:
            futures = [pool.submit(contextvars.copy_context().run, call, h) for h in hosts]
        results, errors = [], []
        for host, future in zip(hosts, futures, strict=True):
            error = future.exception()
            if error is None:
                results.append(future.result())
            elif isinstance(error, SlipwayError):
                errors.append((host, error))
            else:
                raise error
        if not errors:
            return results
        host, first = errors[0]
        listed = "; ".join(f"{h.name}: {e}" for h, e in errors)
        if isinstance(first, RolloutFailed):
            more = f" (also {', '.join(h.name for h, _ in errors[1:])})" if errors[1:] else ""
            raise RolloutFailed(
                first.version,
                first.service,
                f"on {host.name}{more}: {first.detail}",
                check=first.check,
                done=first.done,
                untouched=first.untouched,
            )
        raise SlipwayError(listed)

    # -- reading ----------------------------------------------------------------------------

    def preflight(self, version: str | None = None) -> PreflightReport:
        reports = self._each(self.hosts, lambda h: h.preflight(version))
        return PreflightReport(self.describe(), [c for r in reports for c in r.checks])

    def live_versions(self) -> LiveVersion:
        states = self._each(self.hosts, lambda h: h.state())
        return LiveVersion(
            {
                unit: sorted(
                    {s.version for s in states if s.version and s.units[unit].load == "loaded"}
                )
                for unit in self.services
            },
            {h.name: s.version for h, s in zip(self.hosts, states, strict=True)},
        )

    def host_versions(self) -> dict[str, str | None]:
        """The version each host reports (None: nothing deployed there)."""
        states = self._each(self.hosts, lambda h: h.state())
        return {h.name: s.version for h, s in zip(self.hosts, states, strict=True)}

    def current_version(self) -> str | None:
        versions = self.host_versions()
        found = set(versions.values())
        if found == {None}:
            return None
        if len(found) > 1:
            listed = ", ".join(f"{h} {v or 'nothing'}" for h, v in versions.items())
            raise MixedVersions(
                f"hosts of {self.describe()} run different versions ({listed}): deploy one "
                "version to all of them first"
            )
        return found.pop()

    # -- changing ---------------------------------------------------------------------------

    def deploy(self, version: str, *, keep_going: bool = False) -> RolloutReport:
        batch = self.settings.max_parallel or len(self.hosts)
        waves = [self.hosts[i : i + batch] for i in range(0, len(self.hosts), batch)]
        for host in self.hosts:
            host.changed, host.outputs = False, {}
        if not keep_going:
            # Every host first (reachable, key known, units there, the version prepared):
            # nothing changes anywhere unless all of them can take it.
            self.preflight(version)
        reports: list[RolloutReport] = []
        failed: list[tuple[HostRollout, BaseException]] = []
        for n, wave in enumerate(waves):
            with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="ssh-host") as pool:
                futures = [
                    pool.submit(contextvars.copy_context().run, h.deploy, version) for h in wave
                ]
            for host, future in zip(wave, futures, strict=True):
                error = future.exception()
                if error is None:
                    reports.append(future.result())
                else:
                    failed.append((host, error))
            if failed and not keep_going:
                later = [h for w in waves[n + 1 :] for h in w]
                raise self._failure(version, failed, later) from failed[0][1]
        if failed:
            raise self._failure(version, failed, []) from failed[0][1]
        return self._merged(version, reports)

    def _failure(
        self,
        version: str,
        failed: list[tuple[HostRollout, BaseException]],
        later: list[HostRollout],
    ) -> RolloutFailed:
        """One line: the first host that failed and why, then every host's outcome."""
        host, error = failed[0]
        for _, other in failed:
            if not isinstance(other, SlipwayError):
                raise other
        changed = [h.name for h in self.hosts if h.changed]
        parts = [f"hosts changed: {', '.join(changed) or 'none'}"]
        bad = {h.name for h, _ in failed} | {h.name for h in later}
        done = [h.name for h in self.hosts if h.name not in bad]
        if done:
            parts.append(f"on {version}: {', '.join(done)}")
        if failed[1:]:
            first = _reason(error).replace(host.name, "")
            parts.append(
                "also failed: "
                + ", ".join(
                    h.name
                    if _reason(e).replace(h.name, "") == first
                    else f"{h.name} ({_reason(e)})"
                    for h, e in failed[1:]
                )
            )
        if later:
            parts.append(f"not reached: {', '.join(h.name for h in later)}")
        output = {k: v for h in self.hosts for k, v in h.outputs.items()}
        if isinstance(error, RolloutFailed):
            return RolloutFailed(
                version,
                error.service,
                f"on {host.name} ({'; '.join(parts)}): {error.detail}",
                check=error.check,
                done=error.done,
                untouched=error.untouched,
                output=output,
            )
        return RolloutFailed(
            version, f"host {host.name}", f"{error} ({'; '.join(parts)})", output=output
        )

    def _merged(self, version: str, reports: list[RolloutReport]) -> RolloutReport:
        """One entry per service (the host checks last), with every host's probes."""
        names = [*self.services, *([HOST_CHECKS] if self.settings.host_health_checks else [])]
        merged = [
            ServiceReady(
                name,
                version,
                HealthReport(
                    [
                        r
                        for rep in reports
                        for s in rep.services
                        if s.service == name
                        for r in s.health.results
                    ]
                ),
            )
            for name in names
        ]
        output = {k: v for h in self.hosts for k, v in h.outputs.items()}
        return RolloutReport(version, merged, output)

    def wait_ready(self, version: str) -> RolloutReport:
        return self._merged(version, self._each(self.hosts, lambda h: h.wait_ready(version)))

    def stop_services(self) -> list[str]:
        self._each(self.hosts, lambda h: h.stop_services())
        return list(reversed(self.services))

    def wait_healthy(self, checks: Sequence[HealthCheck], version: str) -> HealthReport:
        expanded = [
            c.for_host(h.session.address) if c.per_host else c
            for c in checks
            for h in (self.hosts if c.per_host else self.hosts[:1])
        ]
        return wait_healthy(expanded, version)


def _reason(error: BaseException) -> str:
    return error.detail if isinstance(error, RolloutFailed) else str(error)
