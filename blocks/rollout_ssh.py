"""Settings of an ssh target: plain hosts reached over SSH, the app's services systemd units.

The Qubeless upgrade guide's way, on one to a few hosts: stop the units, switch the code to
the version (the deploy steps, `{version}` standing for it), start the units in order, each
healthy before the next, then check each host. Secrets (a private key, its passphrase, the
variables remote commands need) are not here: they are an `SshCredentials` block's.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from blocks.errors import ConfigError
from blocks.health_check import HealthCheck

VERSION = "{version}"
_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]+")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>\d+))?")


def split_host(value: str, default_port: int) -> tuple[str, int]:
    """`web-1`, `10.0.0.5:2222` or `[fd00::5]:22` as (address, port)."""
    match = _HOST.fullmatch(value.strip())
    port = int(match["port"]) if match and match["port"] else default_port
    if match is None or not 0 < port < 65536:
        raise ConfigError(
            f"host {value!r} is not an address: write web-1.example.com, 10.0.0.5:2222 "
            "or [fd00::5]:22"
        )
    return match["v6"] or match["name"], port


def _default_services() -> list[str]:
    return ["api", "worker", "web"]


class SshTargetSettings(BaseModel):
    """Hosts reached over SSH whose services are systemd units, all at one version."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ssh"] = Field(description="The kind of target.")
    hosts: list[str] = Field(
        description="The hosts, each `name`, `name:port` or `[v6]:port`; rolled in this order."
    )
    user: str = Field(default="root", description="The SSH user on every host.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port of hosts without one.")
    jump_host: str | None = Field(
        default=None,
        description="A bastion to go through, `user@host:port` (its user and port are "
        "optional); the same key and known_hosts apply to it.",
    )
    credentials_block: str | None = Field(
        default=None,
        description="Name of the SshCredentials block holding the private key and the "
        "secret variables of remote commands; empty: identity_file, else the SSH agent and "
        "~/.ssh/id_* keys.",
    )
    identity_file: str | None = Field(
        default=None, description="A private key file on the machine running Slipway."
    )
    use_agent: bool = Field(default=True, description="Also offer the SSH agent's keys.")
    known_hosts: str = Field(
        default="~/.ssh/known_hosts",
        description="known_hosts lines, or the path of a known_hosts file. A host whose key "
        "is not there, or differs, is refused (`ssh-keyscan HOST` prints the lines).",
    )
    services: list[str] = Field(
        default_factory=_default_services,
        description="The systemd units in start order (stopped in reverse order), e.g. "
        "qubeless-api, qubeless-worker, qubeless-web.",
    )
    sudo: bool | None = Field(
        default=None,
        description="Run systemctl through `sudo -n`; empty: when the user is not root.",
    )
    working_directory: str | None = Field(
        default=None,
        description="Where commands run, e.g. /srv/qubeless or app (relative to the home "
        "directory); empty: the home directory.",
    )
    prepare_steps: list[str] = Field(
        default_factory=list,
        description="Commands run before anything stops, `{version}` the version, e.g. "
        "`docker pull app:{version}` or a build into releases/{version}; they must not "
        "disturb the running version.",
    )
    deploy_steps: list[str] = Field(
        description="Commands run with the services stopped, in order, `{version}` the "
        "version, e.g. `git fetch --tags && git checkout {version}`, "
        "`pnpm install --frozen-lockfile`, `pnpm build`. After them the host must report "
        "the version."
    )
    version_file: str | None = Field(
        default=None,
        description="A file on each host holding the live version, e.g. current/VERSION.",
    )
    version_command: str | None = Field(
        default=None,
        description="Or a command printing it, e.g. `git describe --tags --exact-match`.",
    )
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="Variables for every remote command (not secret; secret ones go in the "
        "SshCredentials block).",
    )
    health_checks: dict[str, list[HealthCheck]] = Field(
        default_factory=dict,
        description="Health gate per service, `{host}` standing for each host's address; a "
        "service without one must have its unit active.",
    )
    host_health_checks: list[HealthCheck] = Field(
        default_factory=list,
        description="Checks of each host once all its services run, e.g. http://{host}/health.",
    )
    max_parallel: int | None = Field(
        default=None,
        ge=1,
        description="Hosts changed at a time (1: one after the other, never two down at "
        "once); empty: all at once.",
    )
    command_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Longest a remote command (or step) may run."
    )
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest to wait for a host to answer SSH."
    )
    lock_file: str = Field(
        default=".slipway-deploy.lock",
        description="File each host's commands lock (flock), relative to the home "
        "directory: the commands of a killed run finish before the next run's begin.",
    )
    output_lines: int = Field(
        default=20, ge=1, le=1000, description="Lines of each step's output kept in the journal."
    )

    @field_validator("hosts", "prepare_steps", "deploy_steps", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.hosts or len(set(self.hosts)) != len(self.hosts):
            raise ConfigError(f"hosts must list each host once; got {self.hosts}")
        for host in [*self.hosts, *([self.jump_host] if self.jump_host else [])]:
            split_host(host.rsplit("@", 1)[-1], self.port)
        if not self.services or len(set(self.services)) != len(self.services):
            raise ConfigError(
                f"services must list each systemd unit once, in start order; got {self.services}"
            )
        bad = [s for s in self.services if not _UNIT.fullmatch(s)]
        if bad:
            raise ConfigError(f"{bad[0]!r} is not a systemd unit name, e.g. qubeless-api")
        if not self.deploy_steps or not all(s.strip() for s in self.deploy_steps):
            raise ConfigError(
                "deploy_steps is empty: list the commands that put a host on {version}, e.g. "
                "'git checkout {version}'"
            )
        if (self.version_file is None) == (self.version_command is None):
            raise ConfigError(
                "say how a host reports its live version: version_file (e.g. current/VERSION) "
                "or version_command, one of them"
            )
        bad = [k for k in self.environment if not _VARIABLE.fullmatch(k)]
        if bad:
            raise ConfigError(f"environment: {bad[0]!r} is not a variable name")
        unknown = sorted(set(self.health_checks) - set(self.services))
        if unknown:
            raise ConfigError(
                f"health checks for unknown services {', '.join(unknown)}: "
                f"services are {', '.join(self.services)}"
            )
        checks = [c for cs in self.health_checks.values() for c in cs] + self.host_health_checks
        if any(c.kind in ("container", "rollout") for c in checks):
            raise ConfigError(
                "container and rollout health checks are for compose and kubernetes targets: "
                "use unit here"
            )
        if self.identity_file and self.credentials_block:
            raise ConfigError("give identity_file or credentials_block, not both")
        return self

    def addresses(self) -> list[tuple[str, int]]:
        """Each host as (address, port)."""
        return [split_host(h, self.port) for h in self.hosts]

    def use_sudo(self) -> bool:
        return self.sudo if self.sudo is not None else self.user != "root"
