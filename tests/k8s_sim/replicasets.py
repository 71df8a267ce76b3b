"""The replica set controller, simplified from pkg/controller/replicaset: it creates or
deletes the Pods a ReplicaSet owns until they number `spec.replicas` (deleting the least
useful first: not ready before ready, newest first), and writes the ReplicaSet's status
(`replicas`, `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` counting
`minReadySeconds`, `observedGeneration`)."""

from __future__ import annotations

import calendar
import copy
import secrets
import time
from typing import Any

from tests.k8s_sim.resources import resource
from tests.k8s_sim.selectors import selector_matches
from tests.k8s_sim.store import Store
from tests.k8s_sim.store_errors import ApiError
from tests.k8s_sim.workloads import SAFE_ALPHABET, condition, owned_by, owner_reference, pod_ready

REPLICASETS = resource("ReplicaSet")
PODS = resource("Pod")
NODE = "slipway-sim-node"


def _ready_since(pod: dict[str, Any]) -> float | None:
    cond = condition(pod.get("status") or {}, "Ready")
    if not cond or cond["status"] != "True":
        return None
    return float(calendar.timegm(time.strptime(cond["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ")))


def pod_from_template(rs: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(rs["spec"]["template"])
    meta = template.get("metadata") or {}
    suffix = "".join(secrets.choice(SAFE_ALPHABET) for _ in range(5))
    return {
        "metadata": {
            "name": f"{rs['metadata']['name']}-{suffix}",
            "namespace": rs["metadata"]["namespace"],
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
            "ownerReferences": [owner_reference(rs)],
        },
        "spec": {**template.get("spec", {}), "nodeName": NODE},
    }


class ReplicaSetController:
    def __init__(self, store: Store) -> None:
        self.store = store

    def sync_all(self) -> None:
        replica_sets, _ = self.store.list_objects(REPLICASETS, None)
        for rs in replica_sets:
            try:
                self.sync(rs)
            except ApiError as exc:
                if exc.code not in (404, 409):
                    raise

    def sync(self, rs: dict[str, Any]) -> None:
        ns = rs["metadata"]["namespace"]
        pods, _ = self.store.list_objects(PODS, ns, lambda p: owned_by(p, rs))
        wanted = int(rs["spec"].get("replicas", 1))
        if len(pods) < wanted:
            for _ in range(wanted - len(pods)):
                pods.append(self.store.create(PODS, ns, pod_from_template(rs)))
        elif len(pods) > wanted:
            # getPodsToDelete: pending, then not ready, then the youngest.
            pods.sort(
                key=lambda p: (
                    (p.get("status") or {}).get("phase") == "Running",
                    pod_ready(p),
                    [-ord(c) for c in p["metadata"]["creationTimestamp"]],
                )
            )
            for pod in pods[: len(pods) - wanted]:
                self.store.delete(PODS, ns, pod["metadata"]["name"])
            pods = pods[len(pods) - wanted :]
        min_ready = int(rs["spec"].get("minReadySeconds", 0))
        ready = [p for p in pods if pod_ready(p)]
        available = [p for p in ready if (_ready_since(p) or 0) + min_ready <= time.time()]
        labelled = [
            p
            for p in pods
            if selector_matches(rs["spec"].get("selector"), p["metadata"].get("labels") or {})
        ]
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(labelled),
            "readyReplicas": len(ready),
            "availableReplicas": len(available),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        status = {k: v for k, v in status.items() if v or k == "replicas"}
        if status != rs.get("status"):
            rs = copy.deepcopy(rs)
            rs["status"] = status
            self.store.update(REPLICASETS, ns, rs["metadata"]["name"], rs, subresource="status")
