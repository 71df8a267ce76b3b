"""Rollout to Kubernetes Deployments through the `kubernetes` client (no kubectl needed).

Each service is a Deployment: its containers (all, or the ones named) get the version as
their image tag, the repository kept, by a strategic-merge patch of the containers by
name; then Slipway waits as `kubectl rollout status` decides (`kube_status`), each
Deployment before the next, and polls its health checks. A rollback is a deploy of the
version before, which the cluster serves from that version's ReplicaSet; `undo` is
`kubectl rollout undo` itself (the previous revision's pod template, or a given one).
The migration window scales the Deployments to zero (their replica counts kept in an
annotation) and a deploy scales them back.

    with KubernetesTarget(settings) as target:
        target.deploy("v2")
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from blocks.errors import SlipwayError
from blocks.health_check import HealthCheck
from blocks.rollout_kubernetes import KubernetesTargetSettings
from tasks.rollout.base import OrderedRollout, PreflightReport, RolloutReport
from tasks.rollout.health import Observation
from tasks.rollout.kube_api import api_call, api_client
from tasks.rollout.kube_status import image_tag, pod_problems, revision, rollout_status, with_tag

STOPPED = "slipway.dev/stopped-replicas"
HASH_LABEL = "pod-template-hash"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# What `kubectl rollout undo` keeps from the Deployment instead of taking the ReplicaSet's.
KEEP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deprecated.deployment.rollback.to",
        "deployment.kubernetes.io/revision",
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        STOPPED,
    }
)
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubernetesTarget(OrderedRollout):
    """A `RolloutTarget` for Deployments (see `KubernetesTargetSettings`)."""

    def __init__(self, settings: KubernetesTargetSettings, api: Any | None = None) -> None:
        self.settings = settings
        self.services = list(settings.services)
        self._api = api

    # -- plumbing ---------------------------------------------------------------------------

    def describe(self) -> str:
        return f"Kubernetes namespace {self.settings.namespace} ({', '.join(self.services)})"

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = api_client(self.settings)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def call(
        self, what: str, call: Any, *args: Any, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """One API call; its failure as one line naming what was asked (`missing_ok`: None
        for a 404)."""
        return api_call(self.settings.namespace, what, call, *args, missing_ok=missing_ok, **kwargs)

    def deployment(self, name: str) -> Any:
        return self.call(
            f"reading deployment {name}",
            self._apps().read_namespaced_deployment,
            name,
            self.settings.namespace,
        )

    def _containers(self, deployment: Any) -> list[Any]:
        named = self.settings.containers.get(deployment.metadata.name)
        found = deployment.spec.template.spec.containers
        return [c for c in found if named is None or c.name in named]

    # -- what the target implements ---------------------------------------------------------

    def preflight(self, version: str | None = None) -> PreflightReport:
        namespace = self.settings.namespace
        self.call(f"reading namespace {namespace}", self._core().read_namespace, namespace)
        checks = [f"namespace {namespace} answers"]
        images: list[str] = []
        denied = [
            f"{verb} {resource}"
            for verb, resource in (
                ("patch", "deployments"),
                ("list", "replicasets"),
                ("list", "pods"),
            )
            if not self._allowed(verb, resource)
        ]
        if denied:
            raise SlipwayError(
                f"Slipway's credentials may not {', '.join(denied)} in namespace {namespace}: "
                "grant them to its service account (a Role and RoleBinding)"
            )
        for name in self.services:
            deployment = self.deployment(name)
            missing = sorted(
                set(self.settings.containers.get(name, []))
                - {c.name for c in deployment.spec.template.spec.containers}
            )
            if missing:
                raise SlipwayError(
                    f"deployment {name} has no container {', '.join(missing)}: fix containers"
                )
            paused = " (paused)" if deployment.spec.paused else ""
            checks.append(f"deployment {name} revision {self._revision(deployment)}{paused}")
            if version is not None:
                images.extend(with_tag(c.image, version) for c in self._containers(deployment))
        if self.settings.check_images and images:
            from tasks.rollout.registry_check import missing_images

            missing = missing_images(images)
            if missing:
                raise SlipwayError(
                    f"image {', '.join(missing)} is in no registry: push it, or release "
                    "a version that was built"
                )
            checks.append(f"{len(set(images))} images of {version} found in their registries")
        return PreflightReport(self.describe(), checks)

    def _allowed(self, verb: str, resource: str) -> bool:
        """What `kubectl auth can-i VERB RESOURCE -n NAMESPACE` answers."""
        from kubernetes import client

        group = "" if resource == "pods" else "apps"
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=self.settings.namespace, verb=verb, group=group, resource=resource
                )
            )
        )
        answer = self.call(
            f"asking whether Slipway may {verb} {resource}",
            client.AuthorizationV1Api(self.api).create_self_subject_access_review,
            review,
        )
        return bool(answer.status and answer.status.allowed)

    def _revision(self, deployment: Any) -> str:
        return str(
            (deployment.metadata.annotations or {}).get("deployment.kubernetes.io/revision", "-")
        )

    def service_versions(self, service: str) -> list[str]:
        deployment = self.call(
            f"reading deployment {service}",
            self._apps().read_namespaced_deployment,
            service,
            self.settings.namespace,
            missing_ok=True,
        )
        if deployment is None:
            return []
        return sorted({image_tag(c.image) for c in self._containers(deployment)})

    def start_service(self, service: str, version: str) -> None:
        deployment = self.deployment(service)
        if deployment.spec.paused:
            raise SlipwayError(
                f"deployment {service} is paused: resume it first (slipway k8s resume, or "
                f"kubectl rollout resume deployment/{service})"
            )
        containers = [
            {"name": c.name, "image": with_tag(c.image, version)}
            for c in self._containers(deployment)
            if image_tag(c.image) != version
        ]
        annotations = deployment.metadata.annotations or {}
        patch: dict[str, Any] = {}
        if containers:
            patch["spec"] = {"template": {"spec": {"containers": containers}}}
        if STOPPED in annotations:
            patch.setdefault("spec", {})["replicas"] = int(annotations[STOPPED])
            patch["metadata"] = {"annotations": {STOPPED: None}}
        if patch:
            self.call(
                f"updating deployment {service}",
                self._apps().patch_namespaced_deployment,
                service,
                self.settings.namespace,
                patch,
                _content_type=STRATEGIC,
            )

    def stop_service(self, service: str) -> None:
        deployment = self.deployment(service)
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        if replicas:
            self.call(
                f"scaling deployment {service} to zero",
                self._apps().patch_namespaced_deployment,
                service,
                self.settings.namespace,
                {"metadata": {"annotations": {STOPPED: str(replicas)}}, "spec": {"replicas": 0}},
                _content_type=STRATEGIC,
            )
        deadline = time.monotonic() + self.settings.rollout_timeout_seconds
        while (self.deployment(service).status.replicas or 0) > 0:
            if time.monotonic() > deadline:
                raise SlipwayError(f"deployment {service} still has pods after scaling to zero")
            time.sleep(0.5)

    def gate(self, service: str) -> list[HealthCheck]:
        rollout = HealthCheck(
            kind="rollout",
            service=service,
            deadline_seconds=self.settings.rollout_timeout_seconds,
            interval_seconds=0.5,
            max_interval_seconds=2.0,
        )
        return [rollout, *self.settings.health_checks.get(service, [])]

    def readiness(self, check: HealthCheck) -> Observation | None:
        if check.kind != "rollout" or check.service is None:
            return None
        deployment = self.deployment(check.service)
        status = rollout_status(deployment)
        if status.failed:
            status = rollout_status(deployment, self._newest(deployment))
        if status.done:
            return Observation(True, status.detail)
        problems = pod_problems(self._pods(deployment))
        detail = status.detail + (f": {'; '.join(problems)}" if problems else "")
        return Observation(False, detail, final=status.failed)

    def _newest(self, deployment: Any) -> str | None:
        """The ReplicaSet of the Deployment's current template (the controller's
        FindNewReplicaSet: equal templates, the hash label aside), if there is one yet."""
        wanted = self._template(deployment.spec.template)
        for rs in self.replica_sets(deployment.metadata.name):
            if self._template(rs.spec.template) == wanted:
                return str(rs.metadata.name)
        return None

    def _template(self, template: Any) -> Any:
        found = self.api.sanitize_for_serialization(template)
        found.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
        return found

    def _pods(self, deployment: Any) -> list[Any]:
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        found = self.call(
            f"listing pods of {deployment.metadata.name}",
            self._core().list_namespaced_pod,
            self.settings.namespace,
            label_selector=selector,
        )
        return list(found.items)

    # -- what a release saves besides the version (kube_release_state) ----------------------

    def save_state(self, release_id: str, flags: dict[str, str]) -> dict[str, Any]:
        from tasks.rollout.kube_release_state import KubeReleaseState

        return KubeReleaseState(self).save(release_id, flags)

    def restore_state(self, record: dict[str, Any]) -> list[str]:
        from tasks.rollout.kube_release_state import KubeReleaseState

        return KubeReleaseState(self).restore(record)

    def cleanup(self, release_id: str) -> list[str]:
        from tasks.rollout.kube_release_state import KubeReleaseState

        return KubeReleaseState(self).cleanup(release_id)

    # -- revisions --------------------------------------------------------------------------

    def history(self) -> dict[str, list[str]]:
        found = {}
        for service in self.services:
            current = self._newest(self.deployment(service))
            found[service] = [
                f"revision {revision(rs)}: "
                + ", ".join(sorted({image_tag(c.image) for c in rs.spec.template.spec.containers}))
                + (" (current)" if rs.metadata.name == current else "")
                for rs in self.replica_sets(service)
            ]
        return found

    def to_revision(self, number: int, services: Sequence[str] | None = None) -> RolloutReport:
        chosen = list(services or self.services)
        unknown = [s for s in chosen if s not in self.services]
        if unknown:
            raise SlipwayError(f"{', '.join(unknown)}: not services of {self.describe()}")
        lacking = [s for s in chosen if number not in {revision(rs) for rs in self.replica_sets(s)}]
        if lacking:  # checked for all before any changes
            raise SlipwayError(
                f"no revision {number} of {', '.join(lacking)}: see `slipway status` for each "
                "Deployment's revisions"
            )
        ready = []
        for i, service in enumerate(chosen):
            self.undo(service, number)
            version = self.service_versions(service)
            ready.append(self._gated(service, "+".join(version), chosen[:i], chosen[i + 1 :]))
        return RolloutReport("+".join(sorted({r.version for r in ready})), ready)

    # -- kubectl's own verbs ----------------------------------------------------------------

    def pause(self, service: str) -> None:
        """`kubectl rollout pause`: template changes wait until it is resumed."""
        self._patch_spec(service, "pausing", {"spec": {"paused": True}})

    def resume(self, service: str) -> None:
        """`kubectl rollout resume`."""
        self._patch_spec(service, "resuming", {"spec": {"paused": False}})

    def restart(self, service: str) -> None:
        """`kubectl rollout restart`: new pods of the same template (an annotation changes)."""
        from datetime import UTC, datetime

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        self._patch_spec(service, "restarting", patch)

    def _patch_spec(self, service: str, what: str, patch: dict[str, Any]) -> None:
        self.call(
            f"{what} deployment {service}",
            self._apps().patch_namespaced_deployment,
            service,
            self.settings.namespace,
            patch,
            _content_type=STRATEGIC,
        )

    def replica_sets(self, service: str) -> list[Any]:
        """The ReplicaSets the Deployment controls, by revision (oldest first)."""
        deployment = self.deployment(service)
        found = self.call(
            f"listing replica sets of {service}",
            self._apps().list_namespaced_replica_set,
            self.settings.namespace,
        )
        owned = [
            rs
            for rs in found.items
            if any(
                ref.uid == deployment.metadata.uid and ref.controller
                for ref in rs.metadata.owner_references or []
            )
        ]
        return sorted(owned, key=revision)

    def undo(self, service: str, to_revision: int | None = None) -> int:
        """`kubectl rollout undo`: the pod template of the previous revision (or of
        `to_revision`) back on the Deployment; returns the revision taken."""
        deployment = self.deployment(service)
        if deployment.spec.paused:
            raise SlipwayError(
                f"you cannot roll back the paused deployment {service}: resume it first "
                f"(slipway k8s resume, or kubectl rollout resume deployment/{service})"
            )
        history = self.replica_sets(service)
        if to_revision is None:
            if len(history) < 2:
                raise SlipwayError(f"no rollout history found for deployment {service}")
            source = history[-2]
        else:
            chosen = [rs for rs in history if revision(rs) == to_revision]
            if not chosen:
                known = ", ".join(str(revision(rs)) for rs in history)
                raise SlipwayError(
                    f"deployment {service} has no revision {to_revision} (it has {known})"
                )
            source = chosen[0]
        template = self._template(source.spec.template)
        if template == self._template(deployment.spec.template):
            return revision(source)  # kubectl: "skipped rollback", already that template
        # kubectl's annotations: the Deployment's own bookkeeping kept, the rest from the
        # ReplicaSet (a change-cause, say).
        kept = deployment.metadata.annotations or {}
        annotations = {k: v for k, v in kept.items() if k in KEEP_ANNOTATIONS}
        annotations |= {
            k: v
            for k, v in (source.metadata.annotations or {}).items()
            if k not in KEEP_ANNOTATIONS
        }
        self.call(
            f"rolling back deployment {service}",
            self._apps().patch_namespaced_deployment,
            service,
            self.settings.namespace,
            [
                {"op": "replace", "path": "/spec/template", "value": template},
                {"op": "replace", "path": "/metadata/annotations", "value": annotations},
            ],
            _content_type=JSON_PATCH,
        )
        return revision(source)
