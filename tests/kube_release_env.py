"""An environment of the demo app on the Kubernetes simulator, pods as real containers.

The three Deployments (api, worker, web) run the demo images of tests/compose_app.py from
the harness's registry, each behind a readiness probe on 8080 (api `/health`, web `/`,
worker `/version`: its container serves its www folder instead of its shell loop, so that
every Deployment answers with its version). v5 is one more version for the crash-loop
scenario: its api exits with code 3 at once. The blocks a release needs (database, store,
Environment) are saved on the current Prefect API, each version's Prisma migrations
written under `releases/<version>/prisma/migrations`, as in tests/release_env.py.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException

from tests.compose_app import image, version_answered
from tests.harness.docker_engine import build_image
from tests.harness.postgres import PostgresInfo
from tests.harness.s3 import S3Info
from tests.k8s_sim import KubeSimulator
from tests.kube_app import SERVICES, write_kubeconfig
from tests.pg_fixtures import create_database
from tests.release_env import save_environment_blocks, write_migrations

CRASHING = "v5"  # its api exits at once with this code
CRASH_CODE = 3
# spec.progressDeadlineSeconds of every Deployment: a v2 pod's pull and start on a busy
# machine stay well within it.
DEADLINE = 8
PROBES = {"api": "/health", "worker": "/version", "web": "/"}
# The worker image's own command is a shell loop; here it serves its www folder on 8080.
WORKER_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /app/www & wait"]


def build_crashing_version(client: docker.DockerClient, registry: str) -> None:
    """Push v5 of the three images: v2's, except that the api exits with `CRASH_CODE`."""
    crash = f'CMD ["sh", "-c", "echo crashing; exit {CRASH_CODE}"]\n'
    for service in SERVICES:
        local = image(service, CRASHING)
        extra = crash if service == "api" else ""
        build_image(client, local, f"FROM {image(service, 'v2')}\n{extra}", {})
        remote = image(service, CRASHING, registry)
        client.images.get(local).tag(remote)
        repository, tag = remote.rsplit(":", 1)
        for line in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise DockerException(f"push {remote}: {line['error']}")
        client.images.remove(remote)  # untag only: the pods pull it from the registry


def manifest(service: str, registry: str, version: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": service,
        "image": image(service, version, registry),
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {
            "httpGet": {"path": PROBES[service], "port": 8080},
            "periodSeconds": 1,
        },
    }
    if service == "worker":
        container["command"] = WORKER_COMMAND
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service, "labels": {"app": service}},
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": DEADLINE,
            "selector": {"matchLabels": {"app": service}},
            "template": {
                "metadata": {"labels": {"app": service}},
                "spec": {"containers": [container]},
            },
        },
    }


@dataclass
class KubeRelease:
    """The environment `name` and how tests read the cluster from outside Slipway."""

    name: str
    sim: KubeSimulator
    namespace: str
    database: str
    api: Any  # kubernetes.client.ApiClient

    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def url(self, service: str) -> str:
        return self.sim.service_url(service, namespace=self.namespace)

    def answers(self) -> dict[str, str | None]:
        """The version each Deployment's ready pods answer through its Service-like port."""
        return {s: self.answer(s) for s in SERVICES}

    def answer(self, service: str) -> str | None:
        return version_answered(self.url(service), PROBES[service])

    def templates(self) -> dict[str, str]:
        """The image tag of each Deployment's pod template."""
        return {s: self.template(s) for s in SERVICES}

    def template(self, service: str) -> str:
        found = self.apps().read_namespaced_deployment(service, self.namespace)
        return str(found.spec.template.spec.containers[0].image.rsplit(":", 1)[1])

    def live_replica_sets(self) -> dict[str, list[str]]:
        """Per Deployment, the ReplicaSets that hold pods (scaled above zero)."""
        found = self.apps().list_namespaced_replica_set(self.namespace)
        live: dict[str, list[str]] = {s: [] for s in SERVICES}
        for rs in found.items:
            if (rs.spec.replicas or 0) > 0:
                live[rs.metadata.labels["app"]].append(rs.metadata.name)
        return {s: sorted(names) for s, names in live.items()}


def save_kube_release_environment(
    root: Path,
    sim: KubeSimulator,
    postgres: PostgresInfo,
    s3: S3Info,
    registry: str,
) -> KubeRelease:
    """A new namespace with the three Deployments at v1, and an environment releasing to it."""
    from kubernetes import client

    from blocks.health_check import HealthCheck
    from blocks.rollout_kubernetes import KubernetesTargetSettings

    releases = root / "releases"
    write_migrations(releases)
    shutil.copytree(releases / "v2", releases / CRASHING)
    namespace = f"rel-{secrets.token_hex(3)}"
    configuration = client.Configuration()
    configuration.host = sim.url
    api = client.ApiClient(configuration)
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
    )
    for service in SERVICES:
        body: Any = manifest(service, registry, "v1")  # the API takes the JSON form too
        client.AppsV1Api(api).create_namespaced_deployment(namespace, body)
    kubeconfig = write_kubeconfig(root / "kubeconfig", sim.url, namespace)

    def check(service: str) -> HealthCheck:
        return HealthCheck(
            kind="http",
            url=sim.service_url(service, namespace=namespace) + PROBES[service],
            version_field="version" if service == "api" else None,
            # Counted from the start of the gate, the Deployment's rollout included.
            deadline_seconds=60,
            interval_seconds=0.2,
        )

    name = f"k8s-{secrets.token_hex(3)}"
    database = create_database(postgres, sql="")
    target = KubernetesTargetSettings(
        kind="kubernetes",
        namespace=namespace,
        services=list(SERVICES),
        kubeconfig=str(kubeconfig),
        health_checks={s: [check(s)] for s in SERVICES},
        rollout_timeout_seconds=60,
        check_images=True,
    )
    save_environment_blocks(name, postgres, database, s3, target, releases)
    return KubeRelease(name, sim, namespace, database, api)
