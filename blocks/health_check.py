"""A health check: one probe of a rollout's gate (http, tcp, or a kind only a target can probe).

Plain pydantic models, part of the `Environment` block (their field descriptions are its UI
form). Semantic mistakes raise `ConfigError` (one line), not a validation report.
"""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from blocks.errors import ConfigError

HOST = "{host}"  # in a URL or host: each host's address (ssh targets)


class HealthCheck(BaseModel):
    """One health probe, polled until it passes `successes` times in a row or its deadline ends."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["http", "tcp", "container", "unit", "rollout"] = Field(
        description="http: GET a URL; tcp: open a connection; container (compose targets): "
        "the container's Docker healthcheck when it has one, else that it runs; unit (ssh "
        "targets): the service's systemd unit is active; rollout (kubernetes targets, "
        "always waited for): the Deployment's rollout completed. On ssh targets `{host}` "
        "in a URL or host stands for each host's address."
    )
    url: str | None = Field(default=None, description="URL to GET (http checks).")
    host: str | None = Field(default=None, description="Host to connect to (tcp checks).")
    port: int | None = Field(default=None, ge=1, le=65535, description="Port (tcp checks).")
    container: str | None = Field(
        default=None,
        description="Container name or id (container checks). Under a compose target, a "
        "compose service name; empty means the service being checked.",
    )
    service: str | None = Field(
        default=None,
        description="The systemd unit (unit checks) or Deployment (rollout checks); empty "
        "means the service being checked.",
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
        if self.kind in ("unit", "rollout"):
            return f"{self.kind} {self.service or '?'}"
        return f"container {self.container or '?'}"

    def for_host(self, address: str) -> HealthCheck:
        """This check with `{host}` in its URL or host replaced by `address`."""
        update: dict[str, str] = {}
        if self.url and HOST in self.url:
            name = f"[{address}]" if ":" in address else address
            update["url"] = self.url.replace(HOST, name)
        if self.host and HOST in self.host:
            update["host"] = self.host.replace(HOST, address)
        return self.model_copy(update=update) if update else self

    @property
    def per_host(self) -> bool:
        """Whether it names `{host}`: probed once per host of an ssh target."""
        return HOST in (self.url or "") or HOST in (self.host or "")
