"""Rollout to a docker compose project: one version tag for every service, started in order.

Changes go through the compose CLI (`docker compose`, v2, when it works, else
`docker-compose`, v1), with the version in the child's environment, never in argv:
`up -d --no-deps <service>` per service in order, `stop <service>` in reverse order.
State is read with the Docker SDK from the containers' compose labels. With v1, commands
are forked from one warm Compose process (`tasks/compose_v1.py`): about 0.8 s less each.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import docker
import yaml
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.utils import parse_repository_tag
from dotenv import dotenv_values

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout import IMAGE_TAG, ComposeTargetSettings, HealthCheck
from tasks.compose_v1 import WarmComposeV1
from tasks.health import HealthCheckFailed, container_state, logger, wait_healthy
from tasks.rollout import (
    LiveVersion,
    MixedVersions,
    PreflightReport,
    RolloutFailed,
    RolloutReport,
    ServiceReady,
)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# Stands for the version when compose renders the file (to find each service's image
# template) and for commands that deploy nothing (stop, down), which still interpolate it.
PLACEHOLDER = "slipway-version-placeholder"


def _works(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@functools.cache
def _detect(path: str | None) -> tuple[str, ...] | None:
    if shutil.which("docker", path=path) and _works(["docker", "compose", "version"]):
        return ("docker", "compose")
    # Presence is enough for v1: running it costs a second (a Python start), and a broken
    # install fails the first real command with its own message.
    if shutil.which("docker-compose", path=path):
        return ("docker-compose",)
    return None


def detect_compose_command() -> list[str]:
    """`docker compose` (v2) when it works, else `docker-compose` (v1)."""
    found = _detect(os.environ.get("PATH"))
    if found is None:
        raise ConfigError(
            "no docker compose found: install the Compose v2 plugin (docker compose) or "
            "docker-compose, or set compose_command"
        )
    return list(found)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _one_line(text: str, limit: int = 300) -> str:
    """A command's error output on one line, without its warnings."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().upper().startswith("WARN")
    ]
    joined = " ".join(lines) or "no output"
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def _normalize_project(name: str) -> str:
    # What compose does to a directory name to make a project name.
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


class ComposeTarget:
    """A `RolloutTarget` for a docker compose project (see `ComposeTargetSettings`)."""

    def __init__(self, settings: ComposeTargetSettings) -> None:
        self.settings = settings
        self._client: docker.DockerClient | None = None
        self._command: list[str] | None = None
        self._config: dict[str, Any] | None = None
        self._config_state: tuple[tuple[str, int, int], ...] = ()
        self._warm: WarmComposeV1 | None = None
        self._warm_tried = False

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
        if self._warm is not None:
            self._warm.close()
            self._warm = None

    def _warm_v1(self) -> WarmComposeV1 | None:
        """One warm Compose v1 process for this target's commands, when the command is v1."""
        if not self._warm_tried:
            self._warm_tried = True
            command = self.command()
            if len(command) == 1:
                self._warm = WarmComposeV1.start(command[0])
        return self._warm

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
            done = None
            if warm := self._warm_v1():
                try:
                    done = warm.run(argv[1:], cwd=cwd, env=env, timeout=timeout)
                except OSError:
                    # The warm process is gone: run the command as its own process (every
                    # compose command Slipway runs can safely run again).
                    self._warm = None
                    warm.close()
            if done is None:
                done = subprocess.run(
                    argv,
                    cwd=cwd,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
        except subprocess.TimeoutExpired as exc:
            raise SlipwayError(
                f"`{shown}` did not finish within {self.settings.command_timeout_seconds:.0f} s: "
                "check the engine (docker ps) and retry"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot run `{shown}`: {exc.strerror}: fix compose_command") from exc
        if done.returncode != 0:
            raise SlipwayError(f"`{shown}` failed: {_one_line(done.stderr or done.stdout)}")
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
        if name := os.environ.get("COMPOSE_PROJECT_NAME", ""):
            return name
        env_file = self._env_file()
        if env_file.is_file() and (name := dotenv_values(env_file).get("COMPOSE_PROJECT_NAME")):
            return name
        return _normalize_project(self.settings.project_directory.expanduser().absolute().name)

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

    def live_versions(self) -> LiveVersion:
        services = {}
        for service in self.settings.services:
            containers = self.containers(service)
            running = [c for c in containers if c.status == "running"]
            chosen = running or containers  # stopped (migration window) still counts
            services[service] = sorted({self.version_of(c, service) for c in chosen})
        return LiveVersion(services)

    def current_version(self) -> str | None:
        live = self.live_versions()
        if not live.deployed:
            return None
        if live.version is None:
            raise MixedVersions(
                f"services of {self.project()} run different versions ({live.describe()}): "
                "deploy one version to all of them first"
            )
        return live.version

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
            checks.append(f"images of {version} present")
        return PreflightReport(self.describe(), checks)

    def _unavailable(self, image: str) -> str | None:
        """Why the image is neither local nor pullable, else None (pulling it if needed)."""
        client = self.docker_client()
        try:
            client.images.get(image)
            return None
        except ImageNotFound:
            pass
        repository, tag = parse_repository_tag(image)
        try:
            client.images.pull(repository, tag=tag or "latest")
            return None
        except DockerException as exc:
            reason = str(getattr(exc, "explanation", None) or exc)
            return f"not local, pull failed: {_last_line(reason)[:100]}"

    # -- rollout --------------------------------------------------------------------------

    def deploy(self, version: str) -> RolloutReport:
        self.preflight(version)
        return self._bring_up(version)

    def start_services(self, version: str) -> RolloutReport:
        self.preflight(version)
        return self._bring_up(version)

    def wait_ready(self, version: str) -> RolloutReport:
        services = self.settings.services
        ready = []
        for i, service in enumerate(services):
            ready.append(self._gate(service, version, services[:i], services[i + 1 :]))
        return RolloutReport(version, ready)

    def stop_services(self) -> list[str]:
        order = list(reversed(self.settings.services))
        for service in order:
            self.compose("stop", "-t", str(self.settings.stop_timeout_seconds), service)
        still = [c.name for s in order for c in self.containers(s) if c.status == "running"]
        if still:
            raise SlipwayError(
                f"still running after stop: {', '.join(still)}: stop them (docker stop) "
                "before going on"
            )
        logger().info("stopped %s", ", ".join(order))
        return order

    def _bring_up(self, version: str) -> RolloutReport:
        services = self.settings.services
        ready = []
        for i, service in enumerate(services):
            done, untouched = services[:i], services[i + 1 :]
            try:
                self.compose(
                    "up",
                    "-d",
                    "--no-deps",
                    "--no-build",
                    "-t",
                    str(self.settings.stop_timeout_seconds),
                    service,
                    version=version,
                )
            except SlipwayError as exc:
                raise RolloutFailed(
                    version, service, str(exc), done=done, untouched=untouched
                ) from exc
            ready.append(self._gate(service, version, done, untouched))
            logger().info("%s runs %s: %s", service, version, ready[-1].health.summary())
        return RolloutReport(version, ready)

    def _gate(
        self, service: str, version: str, done: list[str], untouched: list[str]
    ) -> ServiceReady:
        """The service runs `version` and passes its health checks, else `RolloutFailed`."""
        containers = self.containers(service)
        if not containers:
            raise RolloutFailed(version, service, "no container", done=done, untouched=untouched)
        wrong = sorted({v for c in containers if (v := self.version_of(c, service)) != version})
        if wrong:
            raise RolloutFailed(
                version,
                service,
                f"runs {', '.join(wrong)}, expected {version}",
                done=done,
                untouched=untouched,
            )

        def crashed() -> str | None:
            for container in containers:
                try:
                    container.reload()
                except NotFound:
                    return f"container {container.name} was removed"
                seen = container_state(container.attrs)
                if seen.final:
                    return f"container {container.name} {seen.detail}"
            return None

        try:
            health = wait_healthy(
                self._checks(service, containers),
                version,
                docker_client=self.docker_client(),
                abort=crashed,
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
        return ServiceReady(service, version, health)

    def _checks(self, service: str, containers: list[Container]) -> list[HealthCheck]:
        """The service's health gate, container checks resolved to its container names."""
        checks = self.settings.health_checks.get(service) or [HealthCheck(kind="container")]
        known = set(self._load_config()["services"])
        resolved = []
        for check in checks:
            if check.kind != "container" or (check.container and check.container not in known):
                resolved.append(check)
                continue
            owners = (
                containers
                if check.container in (None, service)
                else self.containers(str(check.container))
            )
            resolved += [check.model_copy(update={"container": c.name}) for c in owners]
        return resolved
