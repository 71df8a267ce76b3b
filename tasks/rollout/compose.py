"""Rollout to a docker compose project: one version tag for every service, started in order.

Changes go through the compose CLI (`docker compose`, v2, when it works, else
`docker-compose`, v1), with the version in the child's environment, never in argv:
`up -d --no-deps <service>` per service in order, `stop <service>` in reverse order.
State is read with the Docker SDK from the containers' compose labels; the ordered rollout
itself is `OrderedRollout`'s. The preflight of a version pulls its images, before anything
stops. This is the only module that imports the Docker SDK; the
`container` health-check kind is probed through its readiness hook.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import yaml
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.utils import parse_repository_tag

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout import IMAGE_TAG, ComposeTargetSettings, HealthCheck
from blocks.text import one_line
from tasks.rollout.base import OrderedRollout, PreflightReport
from tasks.rollout.compose_v1 import detect_compose_command, project_name_v1
from tasks.rollout.health import Observation

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# States from which a container without a restart policy never comes back by itself.
_TERMINAL = {"exited", "dead"}
# Stands for the version when compose renders the file (to find each service's image
# template) and for commands that deploy nothing (stop, down), which still interpolate it.
PLACEHOLDER = "slipway-version-placeholder"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _errors_only(text: str) -> str:
    """A command's error output on one line, without its warnings."""
    kept = [line for line in text.splitlines() if not line.lstrip().upper().startswith("WARN")]
    return one_line("\n".join(kept), 300) or "no output"


class ComposeTarget(OrderedRollout):
    """A `RolloutTarget` for a docker compose project (see `ComposeTargetSettings`)."""

    def __init__(self, settings: ComposeTargetSettings) -> None:
        self.settings = settings
        self.services = list(settings.services)
        self._client: docker.DockerClient | None = None
        self._command: list[str] | None = None
        self._config: dict[str, Any] | None = None
        self._config_state: tuple[tuple[str, int, int], ...] = ()

    # -- plumbing -------------------------------------------------------------------------

    def describe(self) -> str:
        name = self.settings.project_name or self._config_name() or "default name"
        return (
            f"docker compose project {name} in {self.settings.project_directory} "
            f"({', '.join(self.settings.services)})"
        )

    def _engine_location(self) -> str:
        return self.settings.docker_host or os.environ.get("DOCKER_HOST") or "the local socket"

    def docker_client(self) -> docker.DockerClient:
        """A Docker SDK client for the target's engine, checked to answer."""
        if self._client is None:
            try:
                if self.settings.docker_host:
                    client = docker.DockerClient(
                        base_url=self.settings.docker_host, version="auto", timeout=60
                    )
                else:
                    client = docker.from_env(version="auto", timeout=60)
                client.ping()
            except DockerException as exc:
                raise ConfigError(
                    f"cannot reach the Docker engine at {self._engine_location()} "
                    f"({_last_line(str(exc))[:120]}): start it, or fix DOCKER_HOST / docker_host"
                ) from exc
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def usage(self) -> dict[str, int]:
        try:
            client = self.docker_client()
            return {
                "docker_containers_running": len(client.containers.list()),
                "docker_images_count": len(client.images.list()),
            }
        except Exception:  # best effort: the engine may be what failed
            return {}

    def command(self) -> list[str]:
        """The compose command: the override when set, else detected."""
        if self._command is None:
            override = self.settings.compose_command
            if override:
                if not shutil.which(override[0]):
                    raise ConfigError(
                        f"compose command {override[0]!r} not found: install it or fix "
                        "compose_command"
                    )
                self._command = list(override)
            else:
                self._command = detect_compose_command()
        return self._command

    def _env(self, version: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env[self.settings.version_variable] = version or PLACEHOLDER
        if self.settings.docker_host:
            env["DOCKER_HOST"] = self.settings.docker_host
        return env

    def _argv(self, args: tuple[str, ...], *, with_project: bool = True) -> list[str]:
        argv = [*self.command()]
        if with_project:
            argv += ["-p", self.project()]
        argv += [
            "--project-directory",
            str(self.settings.project_directory.expanduser().absolute()),
        ]
        for path in self.settings.compose_paths():
            argv += ["-f", str(path)]
        if self.settings.env_file:
            argv += ["--env-file", str(self._env_file())]
        return argv + list(args)

    def compose(
        self, *args: str, version: str | None = None, with_project: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a compose subcommand for this project; `version` goes into the environment."""
        argv = self._argv(args, with_project=with_project)
        shown = " ".join([*self.command(), *args])
        cwd = self.settings.project_directory.expanduser()
        env, timeout = self._env(version), self.settings.command_timeout_seconds
        try:
            done = subprocess.run(
                argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SlipwayError(
                f"`{shown}` did not finish within {self.settings.command_timeout_seconds:.0f} s: "
                "check the engine (docker ps) and retry"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot run `{shown}`: {exc.strerror}: fix compose_command") from exc
        if done.returncode != 0:
            raise SlipwayError(f"`{shown}` failed: {_errors_only(done.stderr or done.stdout)}")
        return done

    # -- the compose file -----------------------------------------------------------------

    def _check_files(self) -> None:
        for path in self.settings.compose_paths():
            if not path.is_file():
                raise ConfigError(
                    f"compose file {path} not found: fix project_directory or compose_files"
                )

    def _env_file(self) -> Path:
        """The env file compose reads: the configured one, else .env in the project."""
        root = self.settings.project_directory.expanduser().absolute()
        return root / (self.settings.env_file or ".env")

    def _files_state(self) -> tuple[tuple[str, int, int], ...]:
        paths = [*self.settings.compose_paths(), self._env_file()]
        return tuple(
            (str(p), st.st_mtime_ns, st.st_size) for p in paths if p.is_file() and (st := p.stat())
        )

    def _load_config(self) -> dict[str, Any]:
        """The rendered compose configuration, the version standing as PLACEHOLDER.

        Rendered again only when a compose or env file changed (each render is a compose
        process: about a second with Compose v1).
        """
        self._check_files()
        state = self._files_state()
        if self._config is not None and state == self._config_state:
            return self._config
        files = ", ".join(self.settings.compose_files)
        try:
            done = self.compose("config", with_project=bool(self.settings.project_name))
        except SlipwayError as exc:
            raise ConfigError(
                f"compose file {files} is invalid ({exc}): fix it; `config` shows the problem"
            ) from exc
        try:
            config = yaml.safe_load(done.stdout)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse the output of compose config for {files}") from exc
        if not isinstance(config, dict) or not isinstance(config.get("services"), dict):
            raise ConfigError(f"compose file {files} defines no services: fix it")
        self._config, self._config_state = config, state
        return config

    def _config_name(self) -> str | None:
        name = (self._config or {}).get("name")
        return str(name) if name else None

    def project(self) -> str:
        """The compose project name, as compose itself would choose it."""
        if self.settings.project_name:
            return self.settings.project_name
        # Compose v2 prints the name it resolved; v1 does not.
        if name := self._load_config().get("name"):
            return str(name)
        return project_name_v1(
            self.settings.project_directory.expanduser().absolute(), self._env_file()
        )

    def image_templates(self) -> dict[str, str]:
        """Each service's image with the version as PLACEHOLDER; checks they use the variable."""
        services: dict[str, Any] = self._load_config()["services"]
        templates = {}
        for service in self.settings.services:
            if service not in services:
                raise ConfigError(
                    f"service {service!r} is not in the compose file (it has "
                    f"{', '.join(sorted(services))}): fix services"
                )
            image = str((services[service] or {}).get("image") or "")
            if PLACEHOLDER not in image:
                var = self.settings.version_variable
                raise ConfigError(
                    f"service {service}'s image {image or '(none)'} does not use ${{{var}}}: "
                    f"tag it like myapp-{service}:${{{var}}}, or fix version_variable"
                )
            templates[service] = image
        return templates

    def images(self, version: str) -> dict[str, str]:
        """Each service's image at `version`."""
        return {s: t.replace(PLACEHOLDER, version) for s, t in self.image_templates().items()}

    # -- live state -----------------------------------------------------------------------

    def containers(self, service: str) -> list[Container]:
        """The service's containers, in any state (one-off `run` containers excluded)."""
        labels = [
            f"{PROJECT_LABEL}={self.project()}",
            f"{SERVICE_LABEL}={service}",
            f"{ONEOFF_LABEL}=False",
        ]
        found: list[Container] = self.docker_client().containers.list(
            all=True, filters={"label": labels}
        )
        return found

    def version_of(self, container: Container, service: str) -> str:
        """The version a container runs, read from its image reference."""
        image = str(container.attrs.get("Config", {}).get("Image", ""))
        template = self.image_templates().get(service)
        if template:
            pattern = re.escape(template).replace(re.escape(PLACEHOLDER), f"({IMAGE_TAG})")
            if match := re.fullmatch(pattern, image):
                return match.group(1)
        _, tag = parse_repository_tag(image)
        return tag or "latest"

    def service_versions(self, service: str) -> list[str]:
        containers = self.containers(service)
        running = [c for c in containers if c.status == "running"]
        chosen = running or containers  # stopped (migration window) still counts
        return sorted({self.version_of(c, service) for c in chosen})

    # -- preflight ------------------------------------------------------------------------

    def preflight(self, version: str | None = None) -> PreflightReport:
        checks = []
        self._check_files()
        engine = self.docker_client().version().get("Version", "?")
        checks.append(f"Docker engine {engine} at {self._engine_location()}")
        checks.append(f"compose command: {' '.join(self.command())}")
        self._load_config()
        templates = self.image_templates()
        checks.append(f"compose file valid, services {', '.join(templates)}")
        if version is not None:
            missing = [
                f"{image} ({why})"
                for image in dict.fromkeys(self.images(version).values())
                if (why := self._unavailable(image))
            ]
            if missing:
                raise ConfigError(
                    f"images of version {version} are missing: {', '.join(missing)}: "
                    "build and push them, or fix the version"
                )
            checks.append(f"images of {version} pulled")
        return PreflightReport(self.describe(), checks)

    def _unavailable(self, image: str) -> str | None:
        """Why the image cannot be had, else None, pulling it first unless it is a local build.

        Pulled here, before anything stops, so the deploy runs what the registry holds now.
        An image built on the engine (no registry digest) is used as it is, and so is a
        pulled one when the registry does not answer (a rollback need not wait for it).
        """
        client = self.docker_client()
        local = True
        try:
            if not client.images.get(image).attrs.get("RepoDigests"):
                return None
        except ImageNotFound:
            local = False
        repository, tag = parse_repository_tag(image)
        try:
            client.images.pull(repository, tag=tag or "latest")
            return None
        except DockerException as exc:
            reason = str(getattr(exc, "explanation", None) or exc)
            return None if local else f"not local, pull failed: {_last_line(reason)[:100]}"

    # -- the per-service steps of the ordered rollout ------------------------------------

    def start_service(self, service: str, version: str) -> None:
        # compose leaves a container whose configuration did not change as it is.
        timeout = str(self.settings.stop_timeout_seconds)
        self.compose("up", "-d", "--no-deps", "--no-build", "-t", timeout, service, version=version)

    def stop_service(self, service: str) -> None:
        self.compose("stop", "-t", str(self.settings.stop_timeout_seconds), service)
        still = [c.name for c in self.containers(service) if c.status == "running"]
        if still:
            raise SlipwayError(
                f"still running after stop: {', '.join(still)}: stop them (docker stop) "
                "before going on"
            )

    def crashed(self, service: str) -> str | None:
        for container in self.containers(service):
            seen = container_state(container.attrs)
            if seen.final:
                return f"container {container.name} {seen.detail}"
        return None

    def readiness(self, check: HealthCheck) -> Observation | None:
        if check.kind != "container":
            return None
        return probe_container(check, self.docker_client())

    def gate(self, service: str) -> list[HealthCheck]:
        """The service's health gate, container checks resolved to its container names."""
        checks = self.settings.health_checks.get(service) or [HealthCheck(kind="container")]
        known = set(self._load_config()["services"])
        resolved = []
        for check in checks:
            if check.kind != "container" or (check.container and check.container not in known):
                resolved.append(check)
                continue
            owners = self.containers(check.container or service)
            resolved += [check.model_copy(update={"container": c.name}) for c in owners]
        return resolved


def container_probe(client: docker.DockerClient) -> Callable[[HealthCheck], Observation | None]:
    """A readiness hook probing `container` checks on `client`'s engine."""
    return lambda check: probe_container(check, client) if check.kind == "container" else None


def probe_container(check: HealthCheck, client: docker.DockerClient) -> Observation:
    """Healthy per the container's Docker healthcheck when it has one, else running."""
    if not check.container:
        return Observation(False, "no container named in the check", final=True)
    try:
        container = client.containers.get(check.container)
    except NotFound:
        return Observation(False, "no such container")
    except DockerException as exc:
        return Observation(False, f"Docker engine: {exc}")
    return container_state(container.attrs)


def container_state(attrs: dict[str, Any]) -> Observation:
    """Judge a container from `docker inspect` data."""
    state = attrs.get("State") or {}
    status = str(state.get("Status", "unknown"))
    if status in _TERMINAL:
        policy = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
        return Observation(False, f"exited with code {state.get('ExitCode')}", final=policy == "no")
    if status != "running" or state.get("Restarting"):
        return Observation(False, "restarting" if state.get("Restarting") else status)
    health = state.get("Health")
    if not health:
        return Observation(True, "running")
    if health.get("Status") == "healthy":
        return Observation(True, "healthy")
    log = health.get("Log") or []
    last = f" (last healthcheck exit code {log[-1].get('ExitCode')})" if log else ""
    return Observation(False, f"{health.get('Status')}{last}")
