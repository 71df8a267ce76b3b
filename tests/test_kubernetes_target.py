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


def test_history_and_to_revision_for_every_deployment(app: KubeApp, tmp_path: Path) -> None:
    with target(app) as t:
        t.deploy("v2")
        t.deploy("v4")
        kept = t.history()
        assert kept == {
            s: ["revision 1: v1", "revision 2: v2", "revision 3: v4 (current)"] for s in SERVICES
        }
        with pytest.raises(SlipwayError, match="no revision 7 of api, worker, web"):
            t.to_revision(7)
        assert {s: app.template_version(s) for s in SERVICES} == dict.fromkeys(SERVICES, "v4")
        report = t.to_revision(1, ["api", "web"])
        assert report.version == "v1"
        assert [s.service for s in report.services] == ["api", "web"]
    assert {s: app.answering(s) for s in SERVICES} == {"api": "v1", "worker": "v4", "web": "v1"}
    assert history(app, tmp_path, "api") == [2, 3, 4]  # kubectl agrees: 1 came back as 4


def test_flags_secrets_and_cleanup_are_saved_and_put_back(app: KubeApp) -> None:
    import base64
    import json

    from kubernetes import client

    from tasks.rollout.kube_release_state import KubeReleaseState

    core, batch = client.CoreV1Api(app.api), client.BatchV1Api(app.api)
    ns = app.namespace
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="flags"), data={"checkout": "off"})
    )
    token = base64.b64encode(b"first-token").decode()
    core.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="app-secrets"), data={"token": token})
    )
    # web reads the flags (envFrom); api and worker do not.
    reads = {"configMapRef": {"name": "flags"}}
    app.apps().patch_namespaced_deployment(
        "web",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "envFrom": [reads]}]}}}},
        _content_type="application/strategic-merge-patch+json",
    )
    release = "20261202-101500-ab12"
    for name in ("left-job", "scratch"):
        meta = client.V1ObjectMeta(name=name, labels={"slipway.dev/release": release})
        if name == "left-job":
            batch.create_namespaced_job(
                ns,
                client.V1Job(
                    metadata=meta,
                    spec=client.V1JobSpec(
                        template=client.V1PodTemplateSpec(
                            spec=client.V1PodSpec(
                                containers=[client.V1Container(name="x", image="busybox")],
                                restart_policy="Never",
                            )
                        )
                    ),
                ),
            )
        else:
            core.create_namespaced_pod(
                ns,
                client.V1Pod(
                    metadata=meta,
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="x", image="busybox")]
                    ),
                ),
            )
    for name in ("migration-cache", "keep-me"):
        core.create_namespaced_persistent_volume_claim(
            ns,
            client.V1PersistentVolumeClaim(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
                ),
            ),
        )
    settings = {
        "flags_configmap": "flags",
        "secrets": ["app-secrets"],
        "cleanup": {"pvcs": ["migration-cache", "never-made"]},
    }
    with target(app, **settings) as t:
        state = KubeReleaseState(t)
        assert state.readers() == ["web"]
        rolled = [HealthCheck(kind="rollout", service=s, deadline_seconds=30) for s in SERVICES]
        t.wait_healthy(rolled, "v1")
        revisions = {s: len(t.replica_sets(s)) for s in SERVICES}
        record = state.save(release, flags={"checkout": "on"})
        assert record["flags_before"] == {"checkout": "off"}
        assert core.read_namespaced_config_map("flags", ns).data == {"checkout": "on"}
        # Only the reader was restarted: a new revision of web alone.
        t.wait_healthy(rolled, "v1")
        assert {s: len(t.replica_sets(s)) for s in SERVICES} == revisions | {
            "web": revisions["web"] + 1
        }
        # The Secret's copy is in the cluster; its value is nowhere in the record.
        copy = core.read_namespaced_secret(record["secret_copies"]["app-secrets"], ns)
        assert copy.data == {"token": token}
        assert token not in json.dumps(record)
        assert "first-token" not in json.dumps(record)
        # The release changes the Secret; the rollback puts both back.
        core.patch_namespaced_secret(
            "app-secrets", ns, {"data": {"token": base64.b64encode(b"second").decode()}}
        )
        assert state.restore(record) == ["secret app-secrets", "flags flags"]
        assert core.read_namespaced_secret("app-secrets", ns).data == {"token": token}
        assert core.read_namespaced_config_map("flags", ns).data == {"checkout": "off"}
        deleted = state.cleanup(release)
        assert deleted == ["job left-job", "pod scratch", "pvc migration-cache"]
        assert state.cleanup(release) == []  # already gone: fine
        left = core.list_namespaced_persistent_volume_claim(ns).items
        assert [p.metadata.name for p in left if p.metadata] == ["keep-me"]
        # Copies of the newest releases are kept: a second release's save prunes down to
        # keep_secret_copies.
        later = state.save("20261202-111500-cd34")
        assert state.prune_copies(keep=1) == [record["secret_copies"]["app-secrets"]]
        left_copies = core.list_namespaced_secret(ns, label_selector="slipway.dev/copy-of").items
        assert [c.metadata.name for c in left_copies if c.metadata] == [
            later["secret_copies"]["app-secrets"]
        ]


def test_only_the_named_containers_take_the_version(app: KubeApp) -> None:
    sidecar = {"name": "proxy", "image": "registry.example/envoy:1.31"}
    app.apps().patch_namespaced_deployment(
        "api",
        app.namespace,
        {"spec": {"template": {"spec": {"containers": [sidecar]}}}},
        _content_type="application/strategic-merge-patch+json",
    )
    with target(app, containers={"api": ["api"]}) as t:
        t.deploy("v2")
        assert t.live_versions().services["api"] == ["v2"]
    found = app.apps().read_namespaced_deployment("api", app.namespace)
    images = {c.name: c.image for c in found.spec.template.spec.containers}
    assert images == {"api": "registry.example/slipway-demo-api:v2", "proxy": sidecar["image"]}
    with (
        target(app, containers={"api": ["api", "cache"]}) as t,
        pytest.raises(SlipwayError, match="deployment api has no container cache"),
    ):
        t.preflight("v2")
