"""The demo app as three Deployments on the Kubernetes simulator (tests/k8s_sim), for tests.

`create_kube_app(sim, tmp)` makes a fresh namespace holding Deployments api, worker and web
at v1's template (nothing else deployed through Slipway yet), writes a kubeconfig for the
simulator and returns the ssh-free, kubectl-free view tests need: the target's settings,
each Deployment's template version and ReplicaSet, and what its pods answer through the
simulator's Service-like port.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from blocks.rollout_kubernetes import KubernetesTargetSettings
from tests.k8s_sim import KubeSimulator

SERVICES = ("api", "worker", "web")
REPOSITORY = "registry.example/slipway-demo"


def write_kubeconfig(
    path: Path, url: str, namespace: str, *, ca_pem: str | None = None, token: str | None = None
) -> Path:
    cluster: dict[str, str] = {"server": url}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "sim", "cluster": cluster}],
                "users": [{"name": "slipway", "user": {"token": token or "not-checked"}}],
                "contexts": [
                    {
                        "name": "sim",
                        "context": {"cluster": "sim", "user": "slipway", "namespace": namespace},
                    }
                ],
                "current-context": "sim",
            }
        )
    )
    return path


def deployment(name: str, image: str, *, deadline: int, probe: bool) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image, "ports": [{"containerPort": 8080}]}
    if probe:
        container["readinessProbe"] = {
            "httpGet": {"path": "/health", "port": 8080},
            "periodSeconds": 1,
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


@dataclass
class KubeApp:
    sim: KubeSimulator
    namespace: str
    kubeconfig: Path
    api: Any  # kubernetes.client.ApiClient, outside the target
    services: tuple[str, ...] = SERVICES
    health: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> KubernetesTargetSettings:
        checks = {
            s: [
                {
                    "kind": "http",
                    "url": f"{self.sim.service_url(s, namespace=self.namespace)}/health",
                    "version_field": "version",
                    "deadline_seconds": 5,
                    "interval_seconds": 0.2,
                }
            ]
            for s in self.services
        }
        values: dict[str, Any] = {
            "kind": "kubernetes",
            "namespace": self.namespace,
            "services": list(self.services),
            "kubeconfig": str(self.kubeconfig),
            "health_checks": checks if self.health else {},
            "rollout_timeout_seconds": 30,
        }
        return KubernetesTargetSettings.model_validate(values | overrides)

    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def template_version(self, service: str) -> str:
        found = self.apps().read_namespaced_deployment(service, self.namespace)
        return str(found.spec.template.spec.containers[0].image.rsplit(":", 1)[1])

    def answering(self, service: str) -> str | None:
        url = self.sim.service_url(service, namespace=self.namespace)
        try:
            response = httpx.get(f"{url}/health", timeout=2)
            return str(response.json()["version"]) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def replica_set_of(self, service: str, version: str) -> str:
        """The name of the ReplicaSet whose template runs `version`."""
        found = self.apps().list_namespaced_replica_set(
            self.namespace, label_selector=f"app={service}"
        )
        names = [
            rs.metadata.name
            for rs in found.items
            if rs.spec.template.spec.containers[0].image.endswith(f":{version}")
        ]
        assert len(names) == 1, names
        return str(names[0])

    def live_replica_sets(self, service: str) -> str:
        """The ReplicaSets holding the Deployment's pods now (two while it rolls)."""
        found = self.apps().list_namespaced_replica_set(
            self.namespace, label_selector=f"app={service}"
        )
        return " ".join(
            sorted(rs.metadata.name for rs in found.items if (rs.spec.replicas or 0) > 0)
        )


def create_kube_app(
    sim: KubeSimulator,
    tmp: Path,
    *,
    deadline: int = 3,
    probe: bool = False,
    repository: str = REPOSITORY,
    health: bool = True,
    initial: str = "v1",
) -> KubeApp:
    """A fresh namespace with the three Deployments at `initial` (rolling out)."""
    from kubernetes import client

    namespace = f"demo-{secrets.token_hex(3)}"
    configuration = client.Configuration()
    configuration.host = sim.url
    if sim.token:
        configuration.api_key = {"authorization": f"Bearer {sim.token}"}
    if sim.ca_pem:
        ca = tmp / "sim-ca.crt"
        ca.write_text(sim.ca_pem)
        configuration.ssl_ca_cert = str(ca)
    api = client.ApiClient(configuration)
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
    )
    for name in SERVICES:
        body: Any = deployment(
            name, f"{repository}-{name}:{initial}", deadline=deadline, probe=probe
        )  # the API takes the JSON form as well as its models
        client.AppsV1Api(api).create_namespaced_deployment(namespace, body)
    kubeconfig = write_kubeconfig(
        tmp / f"kubeconfig-{namespace}", sim.url, namespace, ca_pem=sim.ca_pem, token=sim.token
    )
    return KubeApp(sim, namespace, kubeconfig, api, health=health)
