"""The deployment controller, simplified from pkg/controller/deployment (sync.go,
rolling.go, recreate.go, progress.go) with the same observable fields.

Each pass over a Deployment: find its ReplicaSets (controller ownerReference); the one whose
pod template equals the Deployment's (ignoring `pod-template-hash`) is the new one, else
one is created (`NAME-HASH`, revision = highest old revision + 1; a reused old one, as after
`rollout undo`, gets the new revision and keeps its old number in `revision-history`).
Then one rolling-update step (maxSurge/maxUnavailable) or Recreate step, the cleanup of old
ReplicaSets beyond `revisionHistoryLimit` once complete, and the status (deployment_status.py;
NewReplicaSetCreated and FoundNewReplicaSet are set here). A paused Deployment is not rolled,
only scaled; its status is kept.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.k8s_sim.deployment_status import (
    calculate_status,
    complete,
    paused_condition,
    progress,
)
from tests.k8s_sim.deployment_status import replicas as _replicas
from tests.k8s_sim.deployment_status import status_count as _status
from tests.k8s_sim.resources import resource
from tests.k8s_sim.store import Store
from tests.k8s_sim.store_errors import ApiError
from tests.k8s_sim.workloads import (
    DESIRED_REPLICAS,
    HASH_LABEL,
    MAX_REPLICAS,
    REVISION,
    REVISION_HISTORY,
    SKIPPED_ANNOTATIONS,
    condition,
    owned_by,
    owner_reference,
    revision,
    set_condition,
    surge_and_unavailable,
    template_hash,
    template_without_hash,
)

DEPLOYMENTS = resource("Deployment")
REPLICASETS = resource("ReplicaSet")


class DeploymentController:
    def __init__(self, store: Store) -> None:
        self.store = store

    def sync_all(self) -> None:
        deployments, _ = self.store.list_objects(DEPLOYMENTS, None)
        for deployment in deployments:
            try:
                self.sync(deployment)
            except ApiError as exc:
                if exc.code not in (404, 409):  # gone or raced: the next pass retries
                    raise

    def sync(self, d: dict[str, Any]) -> None:
        ns = d["metadata"]["namespace"]
        all_rs, _ = self.store.list_objects(REPLICASETS, ns, lambda rs: owned_by(rs, d))
        all_rs.sort(key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"]))
        wanted = template_without_hash(d["spec"]["template"])
        new_rs = next(
            (rs for rs in all_rs if template_without_hash(rs["spec"]["template"]) == wanted), None
        )
        old_rs = [rs for rs in all_rs if rs is not new_rs]
        status = copy.deepcopy(d.get("status") or {})
        paused_condition(d, status)
        if d["spec"].get("paused"):
            # Scaling still applies (sync.go's scale(), its single-active-set case).
            active = [rs for rs in all_rs if _replicas(rs) > 0]
            target = active[0] if len(active) == 1 else (new_rs if not active else None)
            if target is not None:
                self._scale(target, _replicas(d))
            self._write_status(d, status, new_rs, old_rs, rolling=False)
            return
        new_rs, status = self._new_replica_set(d, new_rs, old_rs, status)
        if d["spec"]["strategy"]["type"] == "Recreate":
            scaled = self._recreate(d, new_rs, old_rs)
        else:
            scaled = self._rolling(d, new_rs, old_rs)
        if not scaled and complete(d, d.get("status") or {}):
            self._cleanup(d, old_rs)
        self._write_status(d, status, new_rs, old_rs, rolling=True)

    # ReplicaSets
    def _new_replica_set(
        self,
        d: dict[str, Any],
        new_rs: dict[str, Any] | None,
        old_rs: list[dict[str, Any]],
        status: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        new_revision = max((revision(rs) for rs in old_rs), default=0) + 1
        surge, _ = surge_and_unavailable(d)
        notes = {
            k: v
            for k, v in (d["metadata"].get("annotations") or {}).items()
            if k not in SKIPPED_ANNOTATIONS
        }
        notes[DESIRED_REPLICAS] = str(_replicas(d))
        notes[MAX_REPLICAS] = str(_replicas(d) + surge)
        if new_rs is None:
            pod_hash = template_hash(d["spec"]["template"])
            template = copy.deepcopy(d["spec"]["template"])
            template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
            selector = copy.deepcopy(d["spec"]["selector"])
            selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
            first = 0 if d["spec"]["strategy"]["type"] == "Recreate" and old_rs else None
            body = {
                "metadata": {
                    "name": f"{name}-{pod_hash}",
                    "namespace": ns,
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {**notes, REVISION: str(new_revision)},
                    "ownerReferences": [owner_reference(d)],
                },
                "spec": {
                    "replicas": first if first is not None else self._scale_up_to(d, None, old_rs),
                    "minReadySeconds": d["spec"].get("minReadySeconds", 0),
                    "selector": selector,
                    "template": template,
                },
            }
            new_rs = self.store.create(REPLICASETS, ns, body)
            set_condition(
                status,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{new_rs["metadata"]["name"]}"',
            )
        else:
            current = dict(new_rs["metadata"].get("annotations") or {})
            updated = {**current, **notes}
            old_number = revision(new_rs)
            if old_number < new_revision:
                updated[REVISION] = str(new_revision)
                if REVISION in current:
                    history = [h for h in current.get(REVISION_HISTORY, "").split(",") if h]
                    updated[REVISION_HISTORY] = ",".join([*history, str(old_number)])
            if updated != current or new_rs["spec"].get("minReadySeconds", 0) != d["spec"].get(
                "minReadySeconds", 0
            ):
                new_rs["metadata"]["annotations"] = updated
                new_rs["spec"]["minReadySeconds"] = d["spec"].get("minReadySeconds", 0)
                new_rs = self.store.update(REPLICASETS, ns, new_rs["metadata"]["name"], new_rs)
            if condition(status, "Progressing") is None:
                set_condition(
                    status,
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    f'Found new replica set "{new_rs["metadata"]["name"]}"',
                )
        return new_rs, status

    def _scale_up_to(
        self, d: dict[str, Any], new_rs: dict[str, Any] | None, old_rs: list[dict[str, Any]]
    ) -> int:
        """NewRSNewReplicas: how far the new ReplicaSet may grow now."""
        current_new = _replicas(new_rs) if new_rs else 0
        if d["spec"]["strategy"]["type"] == "Recreate":
            return _replicas(d)
        surge, _ = surge_and_unavailable(d)
        total = sum(_replicas(rs) for rs in old_rs) + current_new
        max_total = _replicas(d) + surge
        if total >= max_total:
            return current_new
        return current_new + min(max_total - total, max(0, _replicas(d) - current_new))

    def _scale(self, rs: dict[str, Any], replicas: int) -> None:
        if _replicas(rs) == replicas:
            return
        ns, name = rs["metadata"]["namespace"], rs["metadata"]["name"]

        def change(obj: dict[str, Any]) -> None:
            obj["spec"]["replicas"] = replicas

        self.store.mutate(REPLICASETS, ns, name, change)
        rs["spec"]["replicas"] = replicas

    def _rolling(
        self, d: dict[str, Any], new_rs: dict[str, Any], old_rs: list[dict[str, Any]]
    ) -> bool:
        """One rolloutRolling step; whether it scaled anything."""
        wanted = _replicas(d)
        if _replicas(new_rs) != wanted:  # reconcileNewReplicaSet
            grown = wanted if _replicas(new_rs) > wanted else self._scale_up_to(d, new_rs, old_rs)
            if grown != _replicas(new_rs):
                self._scale(new_rs, grown)
                return True
        old_count = sum(_replicas(rs) for rs in old_rs)  # reconcileOldReplicaSets
        if old_count == 0:
            return False
        _, unavailable = surge_and_unavailable(d)
        min_available = wanted - unavailable
        all_count = old_count + _replicas(new_rs)
        new_unavailable = _replicas(new_rs) - _status(new_rs, "availableReplicas")
        max_down = all_count - min_available - new_unavailable
        if max_down <= 0:
            return False
        scaled = False
        # First the old pods that are not available (cleanupUnhealthyReplicas)...
        for rs in old_rs:
            if max_down <= 0:
                break
            unhealthy = _replicas(rs) - _status(rs, "availableReplicas")
            if _replicas(rs) == 0 or unhealthy <= 0:
                continue
            down = min(max_down, unhealthy)
            self._scale(rs, _replicas(rs) - down)
            max_down -= down
            scaled = True
        # ...then available ones while enough stay available (scaleDownOldReplicaSets...).
        available = sum(_status(rs, "availableReplicas") for rs in [*old_rs, new_rs])
        budget = available - min_available
        for rs in old_rs:
            if budget <= 0:
                break
            down = min(_replicas(rs), budget)
            if down:
                self._scale(rs, _replicas(rs) - down)
                budget -= down
                scaled = True
        return scaled

    def _recreate(
        self, d: dict[str, Any], new_rs: dict[str, Any], old_rs: list[dict[str, Any]]
    ) -> bool:
        """One rolloutRecreate step: old pods all gone before the new ones start."""
        if any(_replicas(rs) for rs in old_rs):
            for rs in old_rs:
                self._scale(rs, 0)
            return True
        if all(_status(rs, "replicas") == 0 for rs in old_rs) and _replicas(new_rs) != _replicas(d):
            self._scale(new_rs, _replicas(d))
            return True
        return False

    def _cleanup(self, d: dict[str, Any], old_rs: list[dict[str, Any]]) -> None:
        """cleanupDeployment: the oldest old ReplicaSets beyond revisionHistoryLimit go,
        those that still have pods excepted."""
        extra = len(old_rs) - int(d["spec"].get("revisionHistoryLimit", 10))
        for rs in sorted(old_rs, key=revision)[: max(0, extra)]:
            if _replicas(rs) == 0 and _status(rs, "replicas") == 0:
                self.store.delete(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"])

    # status
    def _write_status(
        self,
        d: dict[str, Any],
        status: dict[str, Any],
        new_rs: dict[str, Any] | None,
        old_rs: list[dict[str, Any]],
        *,
        rolling: bool,
    ) -> None:
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        every = [*old_rs, *([new_rs] if new_rs else [])]
        # The ReplicaSets as they are now (their status moves with their pods).
        fresh = [self.store.find(REPLICASETS, ns, rs["metadata"]["name"]) or rs for rs in every]
        new_fresh = fresh[-1] if new_rs else None
        old_status = d.get("status") or {}
        calculate_status(d, status, fresh, new_fresh)
        if rolling and new_fresh is not None:
            progress(d, status, old_status, new_fresh["metadata"]["name"])
        annotations = dict(d["metadata"].get("annotations") or {})
        if new_fresh is not None and annotations.get(REVISION) != str(revision(new_fresh)):
            annotations[REVISION] = str(revision(new_fresh))
        if status == old_status and annotations == (d["metadata"].get("annotations") or {}):
            return
        d = copy.deepcopy(d)
        d["status"] = status
        if annotations:
            d["metadata"]["annotations"] = annotations
        self.store.update(DEPLOYMENTS, ns, name, d, subresource="status")
