"""One host of an ssh target: its systemd units, moved to a version the runbook's way.

A host runs one version, read from the host itself (`version_file` or `version_command`).
Moving it: the prepare steps while the old version still runs (at preflight), then the
units stop in reverse order, the deploy steps run, the host must report the new version,
and the units start in order, each gated by its health checks (`OrderedRollout`), then the
host's own checks. A host already on the version with its units active is left alone.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass

from blocks.errors import SlipwayError
from blocks.health_check import HealthCheck
from blocks.rollout_ssh import VERSION, SshTargetSettings
from tasks.rollout.base import (
    OrderedRollout,
    PreflightReport,
    RolloutFailed,
    RolloutReport,
    ServiceReady,
)
from tasks.rollout.health import HealthCheckFailed, Observation, logger, wait_healthy
from tasks.rollout.ssh_session import CommandResult, SshSession

_UNITS = "--slipway-units--"
# How old a reading of the host may be for what only waits or decides what to change: the
# object's own changes make it stale at once; the health gate reads again after this.
FRESH = 1.0
HOST_CHECKS = "host checks"


@dataclass(frozen=True)
class UnitState:
    load: str  # loaded, not-found...
    active: str  # active, inactive, failed, activating...


@dataclass(frozen=True)
class HostState:
    version: str | None
    units: dict[str, UnitState]


class HostRollout(OrderedRollout):
    """The units of one host, over its `SshSession`."""

    def __init__(self, settings: SshTargetSettings, session: SshSession) -> None:
        self.settings = settings
        self.session = session
        self.services = list(settings.services)
        self.changed = False  # whether this object stopped, changed or started anything
        self.outputs: dict[str, str] = {}  # "<host> <step>": the step's output tail
        self._prepared: set[str] = set()
        self._tools_checked = False
        self._preflights: dict[str, PreflightReport] = {}
        self._read: tuple[float, HostState] | None = None  # the last reading, and when

    @property
    def name(self) -> str:
        return self.session.name

    def describe(self) -> str:
        return f"{self.settings.user}@{self.name}"

    def close(self) -> None:
        self.session.close()

    # -- reading the host -----------------------------------------------------------------

    def state(self, max_age: float = 0.0) -> HostState:
        """The version the host reports and its units' states, in one command; a reading
        at most `max_age` seconds old does, unless this object changed the host since."""
        if self._read is not None and time.monotonic() - self._read[0] <= max_age:
            return self._read[1]
        s = self.settings
        if s.version_file:
            version = f"cat -- {shlex.quote(s.version_file)} 2>/dev/null"
        else:
            version = f"( {s.version_command} ) 2>/dev/null"
        units = " ".join(shlex.quote(u) for u in self.services)
        result = self.session.run(
            f"{version}; echo; echo {_UNITS}; "
            f"systemctl show --property=Id,LoadState,ActiveState {units}",
            label="reading the version and units",
            check=False,
            lines=10 + 4 * len(self.services),
        )
        head, marker, tail = result.output.partition(_UNITS)
        blocks = [b for b in tail.strip().split("\n\n") if b.strip()]
        if not marker or len(blocks) != len(self.services):
            raise SlipwayError(
                f"cannot read the units of {self.name} (systemctl says: "
                f"{result.last_line()}): is it a systemd host?"
            )
        states = {}
        for unit, block in zip(self.services, blocks, strict=True):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            states[unit] = UnitState(fields.get("LoadState", "?"), fields.get("ActiveState", "?"))
        found = [line.strip() for line in head.splitlines() if line.strip()]
        state = HostState(found[0] if found else None, states)
        self._read = (time.monotonic(), state)
        return state

    def service_versions(self, service: str) -> list[str]:
        state = self.state(max_age=FRESH)
        if state.version is None or state.units[service].load != "loaded":
            return []
        return [state.version]

    # -- preflight --------------------------------------------------------------------------

    def preflight(self, version: str | None = None) -> PreflightReport:
        if version is not None and version in self._preflights:
            return self._preflights[version]  # this target checked the host for it already
        state = self.state()  # connects: reachable, host key known, login accepted
        missing = [u for u, st in state.units.items() if st.load != "loaded"]
        if missing:
            raise SlipwayError(
                f"{self.name} has no systemd unit {', '.join(missing)}: install the unit "
                "files there, or fix services"
            )
        if not self._tools_checked:
            self._check_tools()
        checks = [f"{self.name} answers, runs {state.version or 'nothing'}, units loaded"]
        if version is not None and version not in self._prepared and self.settings.prepare_steps:
            for i, step in enumerate(self.settings.prepare_steps, 1):
                self._step(f"prepare step {i}", step, version)
            checks.append(f"{self.name} prepared {version}")
            self._prepared.add(version)
        report = PreflightReport(self.describe(), checks)
        if version is not None:
            self._preflights[version] = report
        return report

    def _check_tools(self) -> None:
        tools = ["timeout", "flock", *(["sudo"] if self.settings.use_sudo() else [])]
        probe = " && ".join(f"command -v {t} >/dev/null" for t in tools)
        if self.settings.use_sudo():
            probe += " && sudo -n -l systemctl >/dev/null"  # allowed without a password
        result = self.session.run(probe, label="checking tools", check=False)
        if result.status != 0:
            sudo = (
                ", and `sudo -n systemctl` allowed without a password"
                if self.settings.use_sudo()
                else ""
            )
            raise SlipwayError(
                f"{self.name} lacks what Slipway runs there ({result.last_line()}): it needs "
                f"{', '.join(tools)}{sudo}"
            )
        self._tools_checked = True

    # -- changing the host ------------------------------------------------------------------

    def _systemctl(self, verb: str, *units: str) -> CommandResult:
        """`systemctl VERB` of each unit in turn, in one command (stops at a failure)."""
        sudo = "sudo -n " if self.settings.use_sudo() else ""
        self._read = None
        names = " ".join(units)
        return self.session.run(
            " && ".join(f"{sudo}systemctl {verb} {shlex.quote(u)}" for u in units),
            label=f"systemctl {verb} {names}",
        )

    def _step(self, label: str, step: str, version: str) -> None:
        command = step.replace(VERSION, version)
        self.changed = self.changed or label.startswith("deploy")
        self._read = None
        result = self.session.run(command, label=f"{label} `{command}`")
        self.outputs[f"{self.name} {label}"] = result.output
        logger().info("%s: %s done in %.1f s", self.name, label, result.seconds)

    def _switch(self, version: str, state: HostState) -> HostState:
        """Stop every active unit (reverse order), run the deploy steps, check the version;
        the host's state after."""
        self.changed = True
        running = [
            unit
            for unit in reversed(self.services)
            if state.units[unit].active in ("active", "activating", "reloading")
        ]
        if running:
            self._systemctl("stop", *running)
        for i, step in enumerate(self.settings.deploy_steps, 1):
            self._step(f"deploy step {i}", step, version)
        now = self.state()
        if now.version != version:
            raise SlipwayError(
                f"the deploy steps ran but {self.name} reports {now.version or 'no version'}, "
                f"not {version}: they must make {self._source()} say {version}"
            )
        return now

    def _source(self) -> str:
        return self.settings.version_file or f"`{self.settings.version_command}`"

    def start_service(self, service: str, version: str) -> None:
        state = self.state(max_age=FRESH)
        if state.version != version:
            state = self._switch(version, state)
        if state.units[service].active != "active":
            self.changed = True
            self._systemctl("start", service)

    def stop_service(self, service: str) -> None:
        self._systemctl("stop", service)
        if self.state().units[service].active == "active":
            raise SlipwayError(f"{service} on {self.name} still runs after systemctl stop")

    # -- gates ------------------------------------------------------------------------------

    def gate(self, service: str) -> list[HealthCheck]:
        checks = self.settings.health_checks.get(service)
        if not checks:
            return [HealthCheck(kind="unit", service=service)]
        return [c.for_host(self.session.address) for c in checks]

    def readiness(self, check: HealthCheck) -> Observation | None:
        if check.kind != "unit" or check.service is None:
            return None
        unit = self.state().units.get(check.service)
        if unit is None:
            return Observation(False, f"{check.service} is not one of the services", final=True)
        if unit.active == "failed":
            return Observation(False, f"unit {check.service} failed on {self.name}", final=True)
        return Observation(unit.active == "active", f"{unit.active} on {self.name}")

    def crashed(self, service: str) -> str | None:
        if self.state(max_age=FRESH).units[service].active == "failed":
            return f"unit {service} failed on {self.name} (journalctl -u {service})"
        return None

    def deploy(self, version: str, *, keep_going: bool = False) -> RolloutReport:
        try:
            report = super().deploy(version, keep_going=keep_going)
        except RolloutFailed as exc:
            if not self.changed:
                raise
            # The units were stopped together for the switch: later ones are stopped, not
            # untouched.
            later = f"; {', '.join(exc.untouched)} stopped, not started" if exc.untouched else ""
            raise RolloutFailed(
                version, exc.service, exc.detail + later, check=exc.check, done=exc.done
            ) from exc
        return self._host_checked(report, version)

    def wait_ready(self, version: str) -> RolloutReport:
        return self._host_checked(super().wait_ready(version), version)

    def _host_checked(self, report: RolloutReport, version: str) -> RolloutReport:
        checks = [c.for_host(self.session.address) for c in self.settings.host_health_checks]
        if not checks:
            return report
        try:
            health = wait_healthy(checks, version, ready=self.readiness)
        except HealthCheckFailed as exc:
            raise RolloutFailed(
                version,
                HOST_CHECKS,
                f"health check failed: {exc}",
                check=exc.check,
                done=list(self.services),
            ) from exc
        return RolloutReport(
            version, [*report.services, ServiceReady(HOST_CHECKS, version, health)]
        )
