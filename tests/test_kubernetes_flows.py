"""The 224Solutions Kubernetes checklist as one release and one rollback: flags, Secrets and
temporary objects, on the API simulator (pods in-process), with PostgreSQL, S3 and Prefect
real. The rollout itself with pods as containers is in tests/test_kubernetes_release.py.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.commands import slipway
from tests.harness.postgres import PostgresInfo
from tests.harness.prefect_server import PrefectInfo
from tests.harness.procs import wait_until
from tests.harness.s3 import S3Info
from tests.journals import release_record
from tests.k8s_sim import KubeSimulator
from tests.kube_app import SERVICES, KubeApp, create_kube_app
from tests.pg_fixtures import create_database

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.prefect]
REPO = Path(__file__).resolve().parent.parent


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Stage:
    name: str
    app: KubeApp

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.app.api)

    def flags(self) -> dict[str, str]:
        return dict(self.core().read_namespaced_config_map("flags", self.app.namespace).data)

    def secret(self) -> dict[str, str]:
        return dict(self.core().read_namespaced_secret("app-secrets", self.app.namespace).data)

    def journal(self) -> Any:
        return release_record(self.name)


@pytest.fixture(scope="module")
def stage(
    postgres: PostgresInfo,
    s3: S3Info,
    prefect_server: PrefectInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stage]:
    from kubernetes import client

    from blocks.environment import Environment, MigrationSettings, ReleasePolicy
    from blocks.object_storage import ObjectStorage
    from blocks.postgres import PostgresDatabase

    del prefect_server
    with KubeSimulator() as sim:
        sim.never_ready.add(":v3")
        # v3 stalls 8 s: time for the test to act as the release's own jobs meanwhile.
        app = create_kube_app(sim, tmp_path_factory.mktemp("kube"), deadline=8)
        core, ns = client.CoreV1Api(app.api), app.namespace
        core.create_namespaced_config_map(
            ns,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="flags"), data={"checkout": "off"}
            ),
        )
        core.create_namespaced_secret(
            ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="app-secrets"), data={"token": b64("t1")}
            ),
        )
        name = f"k8s-{secrets.token_hex(3)}"
        database = create_database(postgres, sql="")
        bucket = f"k8s-{secrets.token_hex(4)}"
        s3.client().create_bucket(Bucket=bucket)
        PostgresDatabase.from_url(postgres.url(database)).save(f"{name}-database", overwrite=True)
        ObjectStorage(**s3.storage(bucket, "backups").model_dump()).save(
            f"{name}-store", overwrite=True
        )
        target = app.settings(
            flags_configmap="flags",
            secrets=["app-secrets"],
            cleanup={"pvcs": ["migration-cache"]},
        )
        Environment(
            database_block=f"{name}-database",
            store_block=f"{name}-store",
            target=target,
            migrations=MigrationSettings(mode="none"),
            policy=ReleasePolicy(min_free_disk_mb=1),
        ).save(name, overwrite=True)
        yield Stage(name, app)
        assert sim.errors == []


def release(stage: Stage, version: str, **kwargs: Any) -> dict[str, Any]:
    from flows.release import release as release_flow

    result: dict[str, Any] = release_flow(version, stage.name, **kwargs)
    return result


def test_1_a_release_sets_flags_and_keeps_what_it_replaced(stage: Stage) -> None:
    done = release(stage, "v2", flags={"checkout": "on"})
    assert done["status"] == "succeeded"
    assert stage.flags() == {"checkout": "on"}
    record = stage.journal()
    assert record.flags == {"checkout": "on"}
    assert record.target_state["flags_before"] == {"checkout": "off"}
    copy = record.target_state["secret_copies"]["app-secrets"]
    assert copy.startswith("app-secrets-slipway-")
    assert b64("t1") not in record.model_dump_json()  # the value stayed in the cluster
    assert {s: stage.app.answering(s) for s in SERVICES} == dict.fromkeys(SERVICES, "v2")


def test_2_a_failed_release_puts_flags_secrets_back_and_cleans_up(stage: Stage) -> None:
    from kubernetes import client

    from blocks.object_storage import ObjectStorage
    from flows.release import ReleaseFailed
    from tasks.release.journal import list_releases

    store = ObjectStorage.resolve(f"{stage.name}-store")
    v2 = {s: stage.app.replica_set_of(s, "v2") for s in SERVICES}
    core, batch, ns = stage.core(), client.BatchV1Api(stage.app.api), stage.app.namespace
    made: list[str] = []

    def meanwhile() -> None:
        # While v3 stalls, what a release's own jobs would do: change the Secret, leave a
        # labelled Job, Pod and PVC behind.
        wait_until(lambda: stage.app.template_version("api") == "v3", timeout=60, what="v3")
        # S3 directly: Prefect's client is busy with the flow in the main thread.
        release_id = list_releases(store.client(), store, stage.name)[0].record.id
        core.patch_namespaced_secret("app-secrets", ns, {"data": {"token": b64("t2")}})
        labels = {"slipway.dev/release": release_id}
        pod = client.V1PodSpec(
            containers=[client.V1Container(name="m", image="busybox")], restart_policy="Never"
        )
        batch.create_namespaced_job(
            ns,
            client.V1Job(
                metadata=client.V1ObjectMeta(name="migrate-once", labels=labels),
                spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=pod)),
            ),
        )
        core.create_namespaced_pod(
            ns, client.V1Pod(metadata=client.V1ObjectMeta(name="debug", labels=labels), spec=pod)
        )
        core.create_namespaced_persistent_volume_claim(
            ns,
            client.V1PersistentVolumeClaim(
                metadata=client.V1ObjectMeta(name="migration-cache"),
                spec=client.V1PersistentVolumeClaimSpec(
                    access_modes=["ReadWriteOnce"],
                    resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
                ),
            ),
        )
        made.append(release_id)

    helper = threading.Thread(target=meanwhile)
    helper.start()
    with pytest.raises(
        ReleaseFailed,
        match=r"exceeded its progress deadline; not touched: worker, web; rolled back to v2$",
    ):
        release(stage, "v3", flags={"checkout": "beta"})
    helper.join()
    assert made, "the release's objects were made while it ran"
    assert stage.flags() == {"checkout": "on"}  # as before v3's release
    assert stage.secret() == {"token": b64("t1")}
    assert batch.list_namespaced_job(ns).items == []
    assert [p.metadata.name for p in core.list_namespaced_pod(ns).items if p.metadata].count(
        "debug"
    ) == 0
    assert core.list_namespaced_persistent_volume_claim(ns).items == []
    for service in SERVICES:
        assert stage.app.live_replica_sets(service) == v2[service]
        assert stage.app.answering(service) == "v2"
    record = stage.journal()
    assert record.status == "rolled_back"
    assert record.rollback is not None
    steps = {s.name: s for s in record.rollback.steps}
    assert steps["restore-state"].detail == "secret app-secrets, flags flags"
    assert steps["cleanup"].detail == "job migrate-once, pod debug, pvc migration-cache"


def test_3_flags_need_a_flags_configmap(stage: Stage) -> None:
    from blocks.environment import Environment
    from flows.release import release as release_flow
    from tasks.release.preflight import PreflightFailed

    plain = Environment.resolve(stage.name)
    plain.target = plain.target.model_copy(update={"flags_configmap": None})
    plain.save(f"{stage.name}-noflags", overwrite=True)
    flags = stage.flags()
    with pytest.raises(PreflightFailed, match="no flags ConfigMap: set flags_configmap"):
        release_flow("v2", f"{stage.name}-noflags", flags={"checkout": "x"})
    assert stage.flags() == flags


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_", "PG"))}
    return slipway(*args, env=env)


def test_4_the_commands_of_the_checklist(stage: Stage) -> None:
    status = cli("status", "--env", stage.name)
    assert status.returncode == 0, status.stderr
    # v2, v3 stalled, v2 again from its own ReplicaSet (revision 2 became 4).
    assert "api: revision 1: v1; revision 3: v3; revision 4: v2 (current)" in status.stdout
    paused = cli("k8s", "pause", "--env", stage.name, "web")
    assert (paused.returncode, paused.stdout.strip()) == (0, "web paused"), paused.stderr
    assert stage.app.apps().read_namespaced_deployment("web", stage.app.namespace).spec.paused
    resumed = cli("k8s", "resume", "--env", stage.name)
    assert resumed.stdout.strip() == "api, worker, web resumed", resumed.stderr
    flags = cli("flags", "set", "--env", stage.name, "checkout=later")
    assert flags.stdout.strip() == "checkout: on -> later", flags.stderr
    assert stage.flags() == {"checkout": "later"}
    back = cli("rollback", "--env", stage.name, "--to-revision", "1", "--service", "api")
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == f"{stage.name} back on v1 (revision 1); database kept"
    assert stage.app.answering("api") == "v1"
    assert stage.app.answering("worker") == "v2"
    missing = cli("rollback", "--env", stage.name, "--to-revision", "9")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: no revision 9 of api, worker, web: see `slipway status` for each "
        "Deployment's revisions"
    ]


def test_5_a_credentials_block_instead_of_a_kubeconfig(stage: Stage) -> None:
    from pydantic import SecretStr

    from blocks.kubernetes_credentials import KubernetesCredentials
    from tasks.rollout import open_target

    KubernetesCredentials(server=stage.app.sim.url, token=SecretStr("sa-token")).save(
        f"{stage.name}-kube", overwrite=True
    )
    settings = stage.app.settings(kubeconfig=None, credentials_block=f"{stage.name}-kube")
    with open_target(settings) as target:
        assert target.live_versions().services["api"] == ["v1"]
        report = target.preflight("v2")
    assert report.checks[0] == f"namespace {stage.app.namespace} answers"
