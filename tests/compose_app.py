"""A three-service compose app (api, worker, web) for rollout tests, built from busybox.

Images `slipway-demo/{api,worker,web}:vN` for N in 1..4, built locally on the harness's
`slipway-test/busybox` base, once: a tag is rebuilt only when its content changed (the
`slipway.fixture` label holds a hash of it). Given the harness's registry, they are pushed
there as `REGISTRY/slipway-demo/SERVICE:vN` and the registry name is dropped locally, so a
compose target deploying them pulls them, as in production.

- api: `busybox httpd` on 8080 serving `/health` as `{"status": "ok", "version": "vN"}`.
  v3's api has no /health file, so httpd answers 404 there: its health gate fails while
  the container keeps running (busybox httpd cannot answer 500 without CGI under /cgi-bin).
  The api image carries its Prisma migrations under /app/prisma/migrations: v2 adds one,
  v4 adds one that fails (see `MIGRATIONS`).
- worker: a shell loop with a Docker HEALTHCHECK (`test -f /tmp/ready`); the compose file
  declares one too, with a short interval.
- web: `busybox httpd` on 8080 serving an index page naming the version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

from blocks.rollout import ComposeTargetSettings, HealthCheck
from tests.harness.docker_engine import BASE_IMAGE, build_image
from tests.harness.procs import free_port

VERSIONS = ("v1", "v2", "v3", "v4")
REPOSITORY = "slipway-demo"
SERVICES = ("api", "worker", "web")
LABEL = "slipway.fixture"

# Prisma migration folders in each api image (cumulative): v2 adds a column, v4 two.
MIGRATIONS: dict[str, dict[str, str]] = {
    "v1": {"20240101000000_init": "CREATE TABLE items (id serial PRIMARY KEY, name text);\n"},
}
MIGRATIONS["v2"] = {
    **MIGRATIONS["v1"],
    "20240201000000_add_price": "ALTER TABLE items ADD COLUMN price integer;\n",
}
MIGRATIONS["v3"] = dict(MIGRATIONS["v2"])
# v4's first migration applies, its second fails: the database is half-migrated.
MIGRATIONS["v4"] = {
    **MIGRATIONS["v3"],
    "20240301000000_add_stock": "ALTER TABLE items ADD COLUMN stock integer NOT NULL DEFAULT 0;\n",
    "20240401000000_broken": "ALTER TABLE no_such_table ADD COLUMN x integer;\n",
}

# PID 1 ignores SIGTERM unless it handles it: trap it so `stop` is quick and clean.
_SERVE = "trap 'exit 0' TERM; httpd -f -p 8080 -h /app/www & wait"
_WORKER = "trap 'exit 0' TERM; touch /tmp/ready; while true; do sleep 1 & wait $!; done"


def _image_sources(service: str, version: str) -> tuple[str, dict[str, bytes]]:
    """Dockerfile and context files of one image."""
    files: dict[str, bytes] = {}
    if service == "api":
        if version != "v3":
            body = {"status": "ok", "version": version}
            files["www/health"] = json.dumps(body).encode()
        files["www/index.html"] = f"api {version}\n".encode()
        for name, sql in MIGRATIONS[version].items():
            files[f"prisma/migrations/{name}/migration.sql"] = sql.encode()
        extra = "COPY prisma /app/prisma\n"
        cmd = _SERVE
    elif service == "web":
        files["www/index.html"] = f"<h1>demo web {version}</h1>\n".encode()
        extra, cmd = "", _SERVE
    else:
        files["www/version"] = version.encode()
        extra = "HEALTHCHECK --interval=1s --timeout=1s --retries=3 CMD test -f /tmp/ready\n"
        cmd = _WORKER
    dockerfile = (
        f"FROM {BASE_IMAGE}\nCOPY www /app/www\n{extra}"
        f'ENV APP_VERSION={version}\nCMD ["sh", "-c", {json.dumps(cmd)}]\n'
    )
    return dockerfile, files


def image(service: str, version: str, registry: str | None = None) -> str:
    prefix = f"{registry}/" if registry else ""
    return f"{prefix}{REPOSITORY}/{service}:{version}"


_pushed: set[tuple[str, str]] = set()  # (registry image, local image id)


def version_answered(url: str, path: str) -> str | None:
    """The version a demo service answers at `url` + `path` (api: /health's JSON field;
    web and worker: their page), None when it does not answer 200."""
    import httpx

    try:
        response = httpx.get(url + path, timeout=3)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    if path == "/health":
        return str(response.json()["version"])
    text = response.text.strip()
    return text.removeprefix("<h1>demo web ").removesuffix("</h1>")


def build_images(
    client: docker.DockerClient, versions: tuple[str, ...] = VERSIONS, registry: str | None = None
) -> None:
    """Build the demo images that are missing or out of date (needs the harness's base image),
    and push them to `registry` when given."""
    for version in versions:
        for service in SERVICES:
            dockerfile, files = _image_sources(service, version)
            digest = hashlib.sha256(
                dockerfile.encode() + json.dumps({k: v.hex() for k, v in files.items()}).encode()
            ).hexdigest()[:16]
            tag = image(service, version)
            with contextlib.suppress(ImageNotFound):
                if client.images.get(tag).labels.get(LABEL) == digest:
                    continue
            build_image(client, tag, f"{dockerfile}LABEL {LABEL}={digest}\n", files)
        if registry:
            for service in SERVICES:
                _push(client, image(service, version), image(service, version, registry))


def _push(client: docker.DockerClient, local: str, remote: str) -> None:
    built = client.images.get(local)
    if (remote, str(built.id)) in _pushed:
        return
    built.tag(remote)
    repository, tag = remote.rsplit(":", 1)
    for line in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in line:
            raise DockerException(f"push {remote}: {line['error']}")
    client.images.remove(remote)  # untag only: the local name keeps the image
    _pushed.add((remote, str(built.id)))


COMPOSE_FILE = """\
version: "3.7"
services:
  api:
    image: "{prefix}slipway-demo/api:${{APP_VERSION}}"
    ports: ["127.0.0.1:{api_port}:8080"]
  worker:
    image: "{prefix}slipway-demo/worker:${{APP_VERSION}}"
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 250ms
      timeout: 1s
      retries: 3
  web:
    image: "{prefix}slipway-demo/web:${{APP_VERSION}}"
    ports: ["127.0.0.1:{web_port}:8080"]
"""


@dataclass(frozen=True)
class ComposeApp:
    """One project of the demo app in its own directory, with its target settings."""

    directory: Path
    project: str
    api_port: int
    web_port: int
    settings: ComposeTargetSettings

    @property
    def api_health_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/health"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    def containers(
        self, client: docker.DockerClient
    ) -> dict[str, docker.models.containers.Container]:
        """The project's container per service (all states)."""
        found = client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        )
        return {c.labels["com.docker.compose.service"]: c for c in found}

    def running_versions(self, client: docker.DockerClient) -> dict[str, str]:
        """The image tag each running service's container runs, read from the engine."""
        return {
            service: container.image.tags[0].rsplit(":", 1)[1]
            for service, container in self.containers(client).items()
            if container.status == "running"
        }

    def remove(self, client: docker.DockerClient) -> None:
        """Remove the project's containers and network, whatever state they are in."""
        for container in self.containers(client).values():
            with contextlib.suppress(DockerException):
                container.remove(force=True, v=True)
        for network in client.networks.list(
            filters={"label": f"com.docker.compose.project={self.project}"}
        ):
            with contextlib.suppress(DockerException):
                network.remove()


def create_app(
    directory: Path,
    *,
    deadline_seconds: float = 20.0,
    project: str | None = None,
    registry: str | None = None,
    compose_command: list[str] | None = None,
) -> ComposeApp:
    """Write the compose file into `directory` and return settings for it.

    With `registry`, the images are that registry's (see `build_images`); `compose_command`
    forces a Compose (v2 or v1) instead of the target's choice.

    Health gates: api must answer /health with the deployed version, web must answer its
    index page, worker has no entry (its container's Docker healthcheck applies).
    """
    directory.mkdir(parents=True, exist_ok=True)
    api_port, web_port = free_port(), free_port()
    while web_port == api_port:
        web_port = free_port()
    (directory / "docker-compose.yml").write_text(
        COMPOSE_FILE.format(
            api_port=api_port, web_port=web_port, prefix=f"{registry}/" if registry else ""
        )
    )
    project = project or f"slipwaydemo{secrets.token_hex(4)}"

    def http(url: str, version_field: str | None = None) -> HealthCheck:
        return HealthCheck(
            kind="http",
            url=url,
            version_field=version_field,
            deadline_seconds=deadline_seconds,
            interval_seconds=0.1,
            max_interval_seconds=0.5,
        )

    settings = ComposeTargetSettings(
        project_directory=directory,
        project_name=project,
        stop_timeout_seconds=5,
        compose_command=compose_command,
        health_checks={
            "api": [http(f"http://127.0.0.1:{api_port}/health", "version")],
            "web": [http(f"http://127.0.0.1:{web_port}/")],
        },
    )
    return ComposeApp(directory, project, api_port, web_port, settings)


def migrations_for(version: str) -> dict[str, str]:
    """The Prisma migrations (folder name -> migration.sql) the api image of `version` ships."""
    return dict(MIGRATIONS[version])
