"""Clients of a running simulator for tests: the official Python client configured for it,
kubectl pointed at it, a Deployment manifest of the demo app, and a polling helper."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.k8s_sim.simulator import KubeSimulator

KUBECTL = shutil.which("kubectl")
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def deployment_manifest(
    name: str,
    image: str,
    *,
    replicas: int = 2,
    deadline: int = 600,
    probe: bool = False,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """A Deployment `name` (label app=NAME) of one container `name` on port 8080; `probe`
    adds a readinessProbe on /health (what makes the demo api's v3 never Ready)."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "ports": [{"containerPort": 8080}],
        "env": [{"name": "MODE", "value": "test"}],
    }
    if probe:
        container["readinessProbe"] = {
            "httpGet": {"path": "/health", "port": 8080},
            "periodSeconds": 1,
        }
    if command:
        container["command"] = command
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def api_client(sim: KubeSimulator) -> client.ApiClient:
    """The official client's ApiClient for the simulator (with a token it ignores)."""
    config = client.Configuration()
    config.host = sim.url
    config.api_key = {"authorization": "Bearer ignored"}
    return client.ApiClient(config)


# The client's models type every field as optional: tests read them untyped.
def apps_api(sim: KubeSimulator) -> Any:
    return client.AppsV1Api(api_client(sim))


def core_api(sim: KubeSimulator) -> Any:
    return client.CoreV1Api(api_client(sim))


def kubectl_for(sim: KubeSimulator, cache_dir: Path) -> Kubectl:
    """`run(*args, check=True, timeout=60)`: kubectl against the simulator, no kubeconfig."""

    def run(
        *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        if KUBECTL is None:
            raise RuntimeError("no kubectl: apt-get install kubectl")
        done = subprocess.run(
            [KUBECTL, f"--server={sim.url}", f"--cache-dir={cache_dir}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done

    return run


def create_with_kubectl(kubectl: Kubectl, directory: Path, manifest: dict[str, Any]) -> None:
    path = directory / f"{manifest['metadata']['name']}.json"
    path.write_text(json.dumps(manifest))
    kubectl("create", "-f", str(path))


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll `check` until it returns something true; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.2)
