"""The simulator's API semantics through the official Python client and plain HTTP:
discovery, `Status` errors, the three patch kinds on a Deployment's containers,
`generation`, 409 on a stale resourceVersion, selectors, watch, garbage collection,
authorisation (403 and SelfSubjectAccessReview) and deletes as the cleanup uses them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, watch

from tests.k8s_sim import KubeSimulator
from tests.k8s_sim.clients import KUBECTL, api_client, apps_api, core_api, kubectl_for, wait_for
from tests.k8s_sim.clients import deployment_manifest as deployment


@pytest.fixture
def sim() -> Iterator[KubeSimulator]:
    with KubeSimulator() as simulator:
        yield simulator
        assert simulator.errors == []


def reason(error: pytest.ExceptionInfo[client.ApiException]) -> tuple[int, str]:
    """The HTTP status and the Status object's reason of a client error."""
    return int(error.value.status or 0), str(json.loads(error.value.body or "{}")["reason"])


def test_discovery_and_error_statuses(sim: KubeSimulator) -> None:
    listed = httpx.get(sim.url + "/apis/apps/v1", timeout=5).json()["resources"]
    names = {r["name"] for r in listed}
    assert {"deployments", "deployments/status", "deployments/scale", "replicasets"} <= names
    core = core_api(sim)
    apps = apps_api(sim)
    with pytest.raises(client.ApiException) as missing:
        apps.read_namespaced_deployment("nope", "default")
    body = json.loads(missing.value.body or "")
    assert (missing.value.status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert body["message"] == 'deployments.apps "nope" not found'
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "flags"}, "data": {"a": "1"}}
    )
    with pytest.raises(client.ApiException) as twice:
        core.create_namespaced_config_map("default", {"metadata": {"name": "flags"}})
    assert reason(twice) == (409, "AlreadyExists")
    bad = deployment("x", "img:v1")
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(client.ApiException) as invalid:
        apps.create_namespaced_deployment("default", bad)
    assert reason(invalid) == (422, "Invalid")
    with pytest.raises(client.ApiException) as no_ns:
        core.create_namespaced_secret("elsewhere", {"metadata": {"name": "s"}})
    assert json.loads(no_ns.value.body or "")["message"] == 'namespaces "elsewhere" not found'
    secret = core.create_namespaced_secret(
        "default", {"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}}
    )
    assert secret.data == {"password": "aHVudGVyMg=="}


def test_patch_kinds_generation_and_conflicts(sim: KubeSimulator) -> None:
    apps = apps_api(sim)
    manifest = deployment("api", "demo/api:v1", replicas=1)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    manifest["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "side:1"})
    created = apps.create_namespaced_deployment("default", manifest)
    assert created.metadata.generation == 1

    # Strategic merge: containers and env merged by name, $patch: delete, null deletes.
    strategic = {
        "metadata": {"labels": {"tier": "backend"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "image": "demo/api:v2",
                            "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}],
                            "ports": None,
                        }
                    ]
                }
            }
        },
    }
    patched = apps.patch_namespaced_deployment("api", "default", strategic)
    api, side = patched.spec.template.spec.containers
    assert (api.image, side.image) == ("demo/api:v2", "side:1")
    assert [(e.name, e.value) for e in api.env] == [("A", "1"), ("C", "3")]
    assert api.ports is None
    assert patched.metadata.generation == 2

    # A label change is metadata only: no new generation.
    labelled = apps.patch_namespaced_deployment(
        "api", "default", {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled.metadata.generation == 2
    # Status writes do not bump it either.
    status = apps.patch_namespaced_deployment_status("api", "default", {"status": {"replicas": 7}})
    assert status.metadata.generation == 2

    # Merge patch (RFC 7386): a list replaces the whole list.
    merge = {
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "demo/api:v3"}]}}}
    }
    answer = httpx.patch(
        sim.url + "/apis/apps/v1/namespaces/default/deployments/api",
        content=json.dumps(merge),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    merged = answer.raise_for_status().json()
    containers = merged["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("api", "demo/api:v3")]
    assert "env" not in containers[0]
    assert merged["metadata"]["generation"] == 3

    # JSON patch (RFC 6902): test, replace, add, remove; a failed test is 422.
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "api"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "demo/api:v4"},
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env",
            "value": [{"name": "D", "value": "4"}],
        },
        {"op": "remove", "path": "/metadata/labels/x"},
    ]
    jsoned = apps.patch_namespaced_deployment("api", "default", ops)
    assert jsoned.spec.template.spec.containers[0].image == "demo/api:v4"
    assert jsoned.metadata.labels == {"app": "api", "tier": "backend"}
    with pytest.raises(client.ApiException) as failed:
        apps.patch_namespaced_deployment(
            "api", "default", [{"op": "test", "path": "/spec/replicas", "value": 5}]
        )
    assert failed.value.status == 422

    # A PUT with a stale resourceVersion is a conflict; with the current one it is fine.
    with pytest.raises(client.ApiException) as conflict:
        apps.replace_namespaced_deployment("api", "default", created)
    assert reason(conflict) == (409, "Conflict")
    current = apps.read_namespaced_deployment("api", "default")
    current.spec.replicas = 3
    replaced = apps.replace_namespaced_deployment("api", "default", current)
    assert replaced.metadata.generation == jsoned.metadata.generation + 1
    assert int(replaced.metadata.resource_version) > int(current.metadata.resource_version)


def test_selectors_watch_and_garbage_collection(sim: KubeSimulator) -> None:
    apps = apps_api(sim)
    core = core_api(sim)
    for name, tier in (("a", "front"), ("b", "back"), ("c", "back")):
        core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": {"tier": tier}}}
        )

    def names(**query: str) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map("default", **query).items]

    assert names(label_selector="tier=back") == ["b", "c"]
    assert names(label_selector="tier in (front),tier!=back") == ["a"]
    assert names(label_selector="!tier") == []
    assert names(field_selector="metadata.name=c") == ["c"]

    listed = core.list_namespaced_config_map("default")
    core.patch_namespaced_config_map("b", "default", {"data": {"k": "v"}})
    core.delete_namespaced_config_map("c", "default")
    watch_class: Any = watch.Watch  # untyped in the client
    watcher = watch_class()
    events = []
    for event in watcher.stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="tier=back",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=2,
    ):
        events.append((event["type"], event["object"].metadata.name))
    assert events == [("MODIFIED", "b"), ("DELETED", "c")]

    apps.create_namespaced_deployment("default", deployment("gc", "demo/gc:v1"))
    wait_for(
        "two pods",
        lambda: len(core.list_namespaced_pod("default", label_selector="app=gc").items) == 2,
    )
    apps.delete_namespaced_deployment("gc", "default")
    assert apps.list_namespaced_replica_set("default", label_selector="app=gc").items == []
    assert core.list_namespaced_pod("default", label_selector="app=gc").items == []
    with pytest.raises(client.ApiException) as again:
        apps.delete_namespaced_deployment("gc", "default")
    assert again.value.status == 404


def test_access_reviews_and_forbidden_verbs(sim: KubeSimulator, tmp_path: Path) -> None:
    apps = apps_api(sim)
    reviews: Any = client.AuthorizationV1Api(api_client(sim))
    apps.create_namespaced_deployment("default", deployment("api", "demo/api:v1", replicas=1))

    def may(verb: str) -> bool:
        attributes = {"verb": verb, "group": "apps", "resource": "deployments"}
        body = {"spec": {"resourceAttributes": {**attributes, "namespace": "default"}}}
        return bool(reviews.create_self_subject_access_review(body).status.allowed)

    assert may("patch")
    sim.forbid("patch", "deployments")
    assert not may("patch")
    assert may("get")
    if KUBECTL:  # kubectl asks the same question (in protobuf)
        kubectl = kubectl_for(sim, tmp_path / "kube-cache")
        assert kubectl("auth", "can-i", "get", "deployments").stdout.strip() == "yes"
        refused_too = kubectl("auth", "can-i", "patch", "deployments", check=False)
        assert (refused_too.returncode, refused_too.stdout.strip()) == (1, "no")
    with pytest.raises(client.ApiException) as refused:
        apps.patch_namespaced_deployment("api", "default", {"spec": {"replicas": 2}})
    assert reason(refused) == (403, "Forbidden")
    assert "cannot patch resource" in json.loads(refused.value.body or "")["message"]
    assert apps.read_namespaced_deployment("api", "default").spec.replicas == 1


def test_cleanup_deletes_by_label(sim: KubeSimulator) -> None:
    """What a rollback's cleanup does: delete labelled Jobs (and their Pods), Pods and
    PVCs, ignoring the ones already gone."""
    core = core_api(sim)
    batch: Any = client.BatchV1Api(api_client(sim))
    label = {"slipway.dev/release": "r1"}
    pod_spec = {"restartPolicy": "Never", "containers": [{"name": "m", "image": "demo/m:1"}]}
    for name in ("migrate", "seed"):
        job = {
            "metadata": {"name": name, "labels": label},
            "spec": {"template": {"spec": pod_spec}},
        }
        batch.create_namespaced_job("default", job)
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "debug", "labels": label}, "spec": pod_spec}
    )
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    core.create_namespaced_persistent_volume_claim(
        "default", {"metadata": {"name": "scratch", "labels": label}, "spec": claim}
    )
    core.create_namespaced_config_map("default", {"metadata": {"name": "keep", "labels": label}})

    def completed() -> bool:  # fake pods of a Job succeed at once
        jobs = batch.list_namespaced_job("default").items
        return all(job.status.succeeded == 1 for job in jobs)

    wait_for("both jobs complete", completed)

    def job_pods(job: str) -> list[Any]:
        selector = f"batch.kubernetes.io/job-name={job}"
        return list(core.list_namespaced_pod("default", label_selector=selector).items)

    # A batch/v1 Job deleted without a propagation policy leaves its pods, with a warning.
    answer = httpx.delete(f"{sim.url}/apis/batch/v1/namespaces/default/jobs/seed")
    assert "child pods are preserved by default" in answer.headers["Warning"]
    (orphan,) = job_pods("seed")
    assert orphan.metadata.owner_references is None
    assert orphan.status.phase == "Succeeded"
    core.delete_namespaced_pod(orphan.metadata.name, "default")
    # With propagationPolicy=Background its pods go with it.
    batch.delete_collection_namespaced_job(
        "default", label_selector="slipway.dev/release=r1", propagation_policy="Background"
    )
    assert batch.list_namespaced_job("default").items == []
    assert job_pods("migrate") == []

    deleted_claim = core.delete_namespaced_persistent_volume_claim(
        "scratch", "default", body=client.V1DeleteOptions(propagation_policy="Background")
    )
    assert deleted_claim.metadata.name == "scratch"  # the object, as the real server answers
    assert core.delete_namespaced_pod("debug", "default").metadata.name == "debug"
    assert core.list_namespaced_pod("default").items == []
    with pytest.raises(client.ApiException) as gone:
        core.delete_namespaced_persistent_volume_claim("scratch", "default")
    assert reason(gone) == (404, "NotFound")
    assert [c.metadata.name for c in core.list_namespaced_config_map("default").items] == ["keep"]


def test_recreate_strategy_and_scaling_while_paused(sim: KubeSimulator) -> None:
    apps, core = apps_api(sim), core_api(sim)
    manifest = deployment("job", "demo/job:v1", replicas=2)
    manifest["spec"]["strategy"] = {"type": "Recreate"}
    apps.create_namespaced_deployment("default", manifest)

    def rolled_out(replicas: int) -> bool:
        found = apps.read_namespaced_deployment("job", "default")
        return bool(
            found.status.observed_generation == found.metadata.generation
            and found.status.updated_replicas == replicas
            and found.status.available_replicas == replicas
            and found.status.replicas == replicas
        )

    wait_for("v1 rolled out", lambda: rolled_out(2))
    before = core.list_namespaced_pod("default").metadata.resource_version
    image = {
        "spec": {"template": {"spec": {"containers": [{"name": "job", "image": "demo/job:v2"}]}}}
    }
    apps.patch_namespaced_deployment("job", "default", image)
    wait_for("v2 rolled out", lambda: rolled_out(2))
    watch_class: Any = watch.Watch
    events = [
        (e["type"], e["object"].spec.containers[0].image)
        for e in watch_class().stream(
            core.list_namespaced_pod, "default", resource_version=before, timeout_seconds=1
        )
        if e["type"] in ("ADDED", "DELETED")
    ]
    # Recreate: both v1 pods are gone before the first v2 pod exists.
    assert events[:2] == [("DELETED", "demo/job:v1")] * 2
    assert [e for e in events[2:] if e[0] == "ADDED"] == [("ADDED", "demo/job:v2")] * 2

    apps.patch_namespaced_deployment("job", "default", {"spec": {"paused": True}})
    apps.patch_namespaced_deployment("job", "default", {"spec": {"replicas": 3}})
    wait_for("scaled while paused", lambda: rolled_out(3))
