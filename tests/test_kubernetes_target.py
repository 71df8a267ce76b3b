"""The kubernetes target against the API simulator (tests/k8s_sim), checked with kubectl.

Slipway's reading of a rollout must agree with `kubectl rollout status`, its history with
`kubectl rollout history`, its undo with `kubectl rollout undo`, and pause, resume and
restart with kubectl's. Pods run in-process here (the release tests run them as containers).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.errors import ConfigError, SlipwayError
from blocks.health_check import HealthCheck
from blocks.rollout_kubernetes import KubernetesTargetSettings
from tasks.rollout import RolloutFailed, open_target
from tasks.rollout.kube_status import image_tag, with_tag
from tasks.rollout.kubernetes import KubernetesTarget
from tests.k8s_sim import KubeSimulator
from tests.kube_app import SERVICES, KubeApp, create_kube_app

KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def sim() -> Iterator[KubeSimulator]:
    with KubeSimulator() as simulator:
        simulator.never_ready.add(":v3")
        yield simulator
        assert simulator.errors == []


@pytest.fixture
def app(sim: KubeSimulator, tmp_path: Path) -> KubeApp:
    return create_kube_app(sim, tmp_path)


def target(app: KubeApp, **overrides: object) -> KubernetesTarget:
    opened = open_target(app.settings(**overrides))
    assert isinstance(opened, KubernetesTarget)
    return opened


def kubectl(app: KubeApp, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if KUBECTL is None:
        pytest.fail("kubectl not found: apt-get install kubectl")
    return subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            str(app.kubeconfig),
            "--cache-dir",
            str(tmp / "kube-cache"),
            "-n",
            app.namespace,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def history(app: KubeApp, tmp: Path, service: str) -> list[int]:
    """The revisions `kubectl rollout history` lists."""
    out = kubectl(app, tmp, "rollout", "history", f"deployment/{service}")
    assert out.returncode == 0, out.stderr
    return [int(line.split()[0]) for line in out.stdout.splitlines() if line[:1].isdigit()]


def test_images_keep_their_repository() -> None:
    assert image_tag("registry:5000/team/api:v1") == "v1"
    assert image_tag("registry:5000/team/api") == "latest"
    assert with_tag("registry:5000/team/api:v1", "v2") == "registry:5000/team/api:v2"
    assert with_tag("api@sha256:abc", "v2") == "api:v2"
    assert with_tag("localhost:5000/api", "v3") == "localhost:5000/api:v3"


def test_v1_then_v2_in_order_as_kubectl_sees_it(app: KubeApp, tmp_path: Path) -> None:
    with target(app) as t:
        t.wait_ready("v1")
        report = t.deploy("v2")
        assert [s.service for s in report.services] == list(SERVICES)
        assert report.services[0].health.results[0].check == "rollout api"
        assert t.current_version() == "v2"
        revisions = {
            s: [int(rs.metadata.annotations[REV]) for rs in t.replica_sets(s)] for s in SERVICES
        }
    for service in SERVICES:
        assert app.answering(service) == "v2"
        done = kubectl(app, tmp_path, "rollout", "status", f"deployment/{service}", "--timeout=20s")
        assert done.returncode == 0, done.stderr
        assert "successfully rolled out" in done.stdout
        assert history(app, tmp_path, service) == revisions[service] == [1, 2]


REV = "deployment.kubernetes.io/revision"


def test_a_stalled_rollout_fails_at_its_deadline_and_v2_comes_back(
    app: KubeApp, tmp_path: Path
) -> None:
    with target(app) as t:
        t.deploy("v2")
        v2 = {s: app.replica_set_of(s, "v2") for s in SERVICES}
        with pytest.raises(RolloutFailed) as failed:
            t.deploy("v3")
        message = str(failed.value)
        assert "rollout of v3 failed at api" in message
        assert "exceeded its progress deadline" in message
        assert message.endswith("; not touched: worker, web")
        # kubectl reads the same.
        stalled = kubectl(app, tmp_path, "rollout", "status", "deployment/api", "--timeout=10s")
        assert stalled.returncode != 0
        assert "exceeded its progress deadline" in stalled.stderr
        # The rollback: v2 again, served by v2's own ReplicaSet, not a new one.
        t.deploy("v2")
    for service in SERVICES:
        assert app.answering(service) == "v2"
        assert app.live_replica_sets(service) == v2[service]


def test_undo_does_what_kubectl_undo_does(app: KubeApp, sim: KubeSimulator, tmp_path: Path) -> None:
    twin = create_kube_app(sim, tmp_path)
    for each in (app, twin):
        with target(each) as t:
            t.deploy("v2")
            t.deploy("v4")
    rolled = [HealthCheck(kind="rollout", service="api", deadline_seconds=30)]
    with target(app) as t:
        taken = t.undo("api")
        assert taken == 2
        t.wait_healthy(rolled, "v2")
    done = kubectl(twin, tmp_path, "rollout", "undo", "deployment/api")
    assert done.returncode == 0, done.stderr
    with target(twin) as t:
        t.wait_healthy(rolled, "v2")
    for each in (app, twin):
        assert each.template_version("api") == "v2"
        assert history(each, tmp_path, "api") == [1, 3, 4]  # revision 2 came back as 4
    with (
        target(app) as t,
        pytest.raises(SlipwayError, match="has no revision 9 \\(it has 1, 3, 4\\)"),
    ):
        t.undo("api", to_revision=9)
    with target(app) as t:
        assert t.undo("api", to_revision=3) == 3
    assert app.template_version("api") == "v4"
    assert history(app, tmp_path, "api") == [1, 4, 5]


def test_pause_resume_restart_as_kubectl(app: KubeApp, tmp_path: Path) -> None:
    with target(app) as t:
        t.wait_ready("v1")
        t.pause("web")
        shown = kubectl(app, tmp_path, "get", "deployment/web", "-o", "jsonpath={.spec.paused}")
        assert shown.stdout == "true"
        with pytest.raises(RolloutFailed, match="deployment web is paused: resume it first"):
            t.deploy("v2")
        with pytest.raises(SlipwayError, match="cannot roll back the paused deployment web"):
            t.undo("web")
        t.resume("web")
        t.deploy("v2")
        before = history(app, tmp_path, "api")
        t.restart("api")
        t.wait_ready("v2")
    after = history(app, tmp_path, "api")
    assert after == [*before, before[-1] + 1]  # a new revision of the same version
    restarted = kubectl(
        app,
        tmp_path,
        "get",
        "deployment/api",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    )
    assert restarted.stdout.endswith("Z")
    assert app.answering("api") == "v2"


def test_the_migration_window_scales_to_zero_and_back(app: KubeApp) -> None:
    with target(app) as t:
        t.deploy("v1")
        assert t.stop_services() == ["web", "worker", "api"]
        for service in SERVICES:
            d = app.apps().read_namespaced_deployment(service, app.namespace)
            assert (d.spec.replicas, d.status.replicas or 0) == (0, 0)
        assert t.current_version() == "v1"
        t.deploy("v2")
    for service in SERVICES:
        d = app.apps().read_namespaced_deployment(service, app.namespace)
        assert d.spec.replicas == 1
        assert "slipway.dev/stopped-replicas" not in (d.metadata.annotations or {})
        assert app.answering(service) == "v2"


def test_preflight_names_what_is_missing_or_forbidden(app: KubeApp, sim: KubeSimulator) -> None:
    with (
        target(app, services=["api", "worker", "web", "mailer"]) as t,
        pytest.raises(SlipwayError, match="reading deployment mailer: 404"),
    ):
        t.preflight("v2")
    with (
        target(app, namespace="nowhere") as t,
        pytest.raises(SlipwayError, match="reading namespace nowhere: 404"),
    ):
        t.preflight("v2")
    sim.forbid("patch", "deployments")
    try:
        with (
            target(app) as t,
            pytest.raises(
                SlipwayError, match=f"may not patch deployments in namespace {app.namespace}"
            ),
        ):
            t.preflight("v2")
    finally:
        sim.access.forbidden.clear()
    with pytest.raises(ConfigError, match="one way to reach the cluster"):
        app.settings(in_cluster=True)
    with pytest.raises(ConfigError, match="not a Deployment name"):
        KubernetesTargetSettings.model_validate({"kind": "kubernetes", "services": ["Api"]})
