"""The Kubernetes API server simulator (tests/k8s_sim) cross-checked with kubectl 1.32
(`create -f`, `apply`, `scale`, `set image`, `rollout status|history|undo|pause|resume|
restart`) and the official Python client, on fake pods; then pods as real containers on
the harness's Docker engine (readiness through /health, image pull and crash-loop backoff,
the Service-like port). API semantics: tests/test_k8s_simulator_api.py."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, watch

from tests.compose_app import build_images, image
from tests.harness.docker_engine import DockerInfo
from tests.k8s_sim import KubeSimulator
from tests.k8s_sim.clients import (
    KUBECTL,
    Kubectl,
    api_client,
    apps_api,
    core_api,
    create_with_kubectl,
    kubectl_for,
    wait_for,
)
from tests.k8s_sim.clients import deployment_manifest as deployment
from tests.k8s_sim.pods import LABEL

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="no kubectl: apt-get install kubectl")


@pytest.fixture
def sim() -> Iterator[KubeSimulator]:
    with KubeSimulator() as simulator:
        yield simulator
        assert simulator.errors == []


@pytest.fixture
def kubectl(sim: KubeSimulator, tmp_path: Path) -> Kubectl:
    return kubectl_for(sim, tmp_path / "kube-cache")


def replica_sets(apps: Any, name: str) -> dict[int, Any]:
    """The Deployment's ReplicaSets by revision."""
    found = apps.list_namespaced_replica_set("default", label_selector=f"app={name}").items
    return {int(rs.metadata.annotations["deployment.kubernetes.io/revision"]): rs for rs in found}


def past_the_stale_deadline(sim: KubeSimulator, name: str) -> None:
    """Wait until, after an undo of a stalled rollout, the Progressing condition no longer
    says ProgressDeadlineExceeded: the real controller keeps the stale condition until it
    sees progress (kubectl rollout status fails in that short window too)."""

    def moved_on() -> bool:
        found = apps_api(sim).read_namespaced_deployment(name, "default")
        reasons = {c.type: c.reason for c in found.status.conditions or []}
        return reasons.get("Progressing") != "ProgressDeadlineExceeded"

    wait_for(f"{name} past its stale deadline", moved_on)


def history(kubectl: Kubectl, name: str) -> list[int]:
    lines = kubectl("rollout", "history", f"deployment/{name}").stdout.splitlines()
    return [int(line.split()[0]) for line in lines if line[:1].isdigit()]


# ---------------------------------------------------------------- kubectl, fake pods


@needs_kubectl
def test_kubectl_rollout_cycle(sim: KubeSimulator, kubectl: Kubectl, tmp_path: Path) -> None:
    apps = apps_api(sim)
    create_with_kubectl(kubectl, tmp_path, deployment("api", "reg.example/demo/api:v1"))
    kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    # Client-side apply (a three-way strategic merge) and the scale subresource.
    scaled = deployment("api", "reg.example/demo/api:v1", replicas=3)
    (tmp_path / "scaled.json").write_text(json.dumps(scaled))
    kubectl("apply", "-f", str(tmp_path / "scaled.json"))
    assert apps.read_namespaced_deployment("api", "default").spec.replicas == 3
    kubectl("scale", "deployment/api", "--replicas=2")
    wait_for(
        "two pods left",
        lambda: apps.read_namespaced_deployment("api", "default").status.replicas == 2,
    )
    assert history(kubectl, "api") == [1]  # scaling is not a new revision
    kubectl("set", "image", "deployment/api", "api=reg.example/demo/api:v2")
    status = kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    assert 'deployment "api" successfully rolled out' in status.stdout
    assert history(kubectl, "api") == [1, 2]
    assert httpx.get(sim.service_url("api") + "/health", timeout=5).json()["version"] == "v2"

    kubectl("rollout", "undo", "deployment/api")
    kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    assert history(kubectl, "api") == [2, 3]
    by_revision = replica_sets(apps, "api")
    reused = by_revision[3]  # revision 1's ReplicaSet, reused with the next number
    assert reused.spec.template.spec.containers[0].image == "reg.example/demo/api:v1"
    assert reused.metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"
    assert reused.spec.replicas == 2
    assert by_revision[2].spec.replicas == 0
    read = apps.read_namespaced_deployment("api", "default")
    assert read.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert read.status.observed_generation == read.metadata.generation
    again = kubectl("rollout", "undo", "deployment/api", "--to-revision=3")
    assert "skipped rollback" in again.stdout

    kubectl("rollout", "pause", "deployment/api")
    assert apps.read_namespaced_deployment("api", "default").spec.paused is True
    refused = kubectl("rollout", "undo", "deployment/api", check=False)
    assert refused.returncode == 1
    assert "cannot rollback a paused deployment" in refused.stderr
    kubectl("set", "image", "deployment/api", "api=reg.example/demo/api:v4")

    def observed() -> Any:
        found = apps.read_namespaced_deployment("api", "default")
        return found if found.status.observed_generation == found.metadata.generation else None

    paused = wait_for("the template change observed", observed)
    reasons = {c.type: c.reason for c in paused.status.conditions}
    assert reasons["Progressing"] == "DeploymentPaused"
    assert sorted(replica_sets(apps, "api")) == [2, 3]  # paused: no new ReplicaSet
    kubectl("rollout", "resume", "deployment/api")
    kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    assert history(kubectl, "api") == [2, 3, 4]

    kubectl("rollout", "restart", "deployment/api")
    kubectl("rollout", "status", "deployment/api", "--timeout=60s")
    assert history(kubectl, "api") == [2, 3, 4, 5]
    template = replica_sets(apps, "api")[5].spec.template
    assert "kubectl.kubernetes.io/restartedAt" in template.metadata.annotations
    assert template.spec.containers[0].image == "reg.example/demo/api:v4"


@needs_kubectl
def test_stalled_rollout_exceeds_its_progress_deadline(
    sim: KubeSimulator, kubectl: Kubectl, tmp_path: Path
) -> None:
    sim.never_ready.add(":v3")
    create_with_kubectl(kubectl, tmp_path, deployment("web", "reg.example/demo/web:v2", deadline=3))
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    kubectl("set", "image", "deployment/web", "web=reg.example/demo/web:v3")
    stalled = kubectl("rollout", "status", "deployment/web", "--timeout=60s", check=False)
    assert stalled.returncode == 1
    assert 'deployment "web" exceeded its progress deadline' in stalled.stderr
    read = apps_api(sim).read_namespaced_deployment("web", "default")
    progressing = next(c for c in read.status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert read.status.available_replicas == 2  # maxUnavailable kept the old pods
    assert httpx.get(sim.service_url("web") + "/", timeout=5).json()["version"] == "v2"
    kubectl("rollout", "undo", "deployment/web")
    past_the_stale_deadline(sim, "web")
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    # An undo long after the last rollout completed (it reuses a ReplicaSet, so no new
    # condition) has its own deadline: a finished rollout's condition is no base for a
    # timeout (DeploymentTimedOut).
    kubectl("set", "image", "deployment/web", "web=reg.example/demo/web:v4")
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    time.sleep(4)
    before = apps_api(sim).list_namespaced_deployment("default").metadata.resource_version
    kubectl("rollout", "undo", "deployment/web")
    kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    watch_class: Any = watch.Watch
    seen = {
        condition.reason
        for event in watch_class().stream(
            apps_api(sim).list_namespaced_deployment,
            "default",
            resource_version=before,
            timeout_seconds=1,
        )
        for condition in event["object"].status.conditions or []
        if condition.type == "Progressing"
    }
    assert "ProgressDeadlineExceeded" not in seen
    assert "NewReplicaSetAvailable" in seen


# ---------------------------------------------------------------- real containers


@pytest.fixture(scope="module")
def demo_images(docker_engine: DockerInfo) -> str:
    """The demo images v1..v3 pushed to the harness registry; returns the registry."""
    build_images(docker_engine.client(), ("v1", "v2", "v3"), registry=docker_engine.registry)
    return docker_engine.registry


def _health(url: str) -> str | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        return str(httpx.get(url + "/health", timeout=2).raise_for_status().json()["version"])
    return None


def _waiting_reason(sim: KubeSimulator, name: str) -> set[str]:
    reasons = set()
    for pod in sim.pods(name):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            reasons.add((status["state"].get("waiting") or {}).get("reason", ""))
    return reasons


@pytest.mark.docker
@needs_kubectl
def test_pods_run_as_real_containers(
    docker_engine: DockerInfo, demo_images: str, tmp_path: Path
) -> None:
    registry = demo_images
    with KubeSimulator(docker_engine.host) as sim:
        run = kubectl_for(sim, tmp_path / "kube-cache")
        manifest = deployment(
            "api", image("api", "v1", registry), replicas=2, deadline=8, probe=True
        )
        create_with_kubectl(run, tmp_path, manifest)
        crash = deployment(
            "crash",
            image("api", "v1", registry),
            replicas=1,
            deadline=6,
            command=["sh", "-c", "echo boom; exit 3"],
        )
        missing = deployment("missing", image("api", "v9", registry), replicas=1, deadline=6)
        apps = apps_api(sim)
        apps.create_namespaced_deployment("default", crash)
        apps.create_namespaced_deployment("default", missing)

        run("rollout", "status", "deployment/api", "--timeout=90s", timeout=120)
        service = sim.service_url("api")
        assert _health(service) == "v1"
        run("set", "image", "deployment/api", f"api={image('api', 'v2', registry)}")
        run("rollout", "status", "deployment/api", "--timeout=90s", timeout=120)
        assert wait_for("v2 answers", lambda: _health(service) == "v2")

        # v3 has no /health: its readiness probe fails, the rollout stalls, v2 keeps serving.
        run("set", "image", "deployment/api", f"api={image('api', 'v3', registry)}")
        stalled = run(
            "rollout", "status", "deployment/api", "--timeout=90s", check=False, timeout=120
        )
        assert "exceeded its progress deadline" in stalled.stderr
        assert {_health(service) for _ in range(4)} == {"v2"}

        assert wait_for(
            "ImagePullBackOff", lambda: "ImagePullBackOff" in _waiting_reason(sim, "missing")
        )
        assert all(p["status"]["phase"] == "Pending" for p in sim.pods("missing"))
        assert wait_for(
            "CrashLoopBackOff", lambda: "CrashLoopBackOff" in _waiting_reason(sim, "crash")
        )
        (crashed,) = sim.pods("crash")
        (status,) = crashed["status"]["containerStatuses"]
        assert status["lastState"]["terminated"]["exitCode"] == 3
        assert status["restartCount"] >= 1
        # The Python client reads the same, and kubectl shows the crashed container's log.
        (typed,) = core_api(sim).list_namespaced_pod("default", label_selector="app=crash").items
        assert typed.status.container_statuses[0].last_state.terminated.exit_code == 3
        assert "boom" in run("logs", "deployment/crash").stdout
        # A Job's pod runs to completion once (restartPolicy Never).
        job_spec = {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "m",
                    "image": image("api", "v1", registry),
                    "command": ["echo", "migrated"],
                }
            ],
        }
        job = {"metadata": {"name": "migrate"}, "spec": {"template": {"spec": job_spec}}}
        jobs: Any = client.BatchV1Api(api_client(sim))
        jobs.create_namespaced_job("default", job)
        wait_for(
            "the job complete",
            lambda: jobs.read_namespaced_job("migrate", "default").status.succeeded == 1,
        )
        assert run("logs", "job/migrate").stdout.strip() == "migrated"
        # Both stall their rollout until the progress deadline.
        for name in ("crash", "missing"):
            done = run("rollout", "status", f"deployment/{name}", "--timeout=60s", check=False)
            assert f'deployment "{name}" exceeded its progress deadline' in done.stderr

        run("rollout", "undo", "deployment/api")
        past_the_stale_deadline(sim, "api")
        run("rollout", "status", "deployment/api", "--timeout=90s", timeout=120)
        assert _health(service) == "v2"
        engine = docker_engine.client()

        def pod_containers() -> list[str]:
            found = engine.api.containers(all=True, filters={"label": f"{LABEL}={sim.id}"})
            return [str(c["Labels"][f"{LABEL}.pod"]) for c in found]

        def running_pods() -> set[str]:
            missing = {p["metadata"]["name"] for p in sim.pods("missing")}
            pods = core_api(sim).list_namespaced_pod("default").items
            return {f"default/{p.metadata.name}" for p in pods if p.metadata.name not in missing}

        # One container per pod that could pull its image (the finished Job's too), none for
        # the deleted ones.
        wait_for("containers match pods", lambda: set(pod_containers()) == running_pods())
        # Deleting the Deployment removes its pods' containers.
        apps.delete_namespaced_deployment("crash", "default")
        wait_for(
            "the crash pod's container removed",
            lambda: not [c for c in pod_containers() if c.startswith("default/crash-")],
        )
        assert sim.errors == []
    assert pod_containers() == []
