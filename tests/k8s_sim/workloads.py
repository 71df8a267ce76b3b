"""Helpers shared by the simulated controllers: ownership, revisions, template hashes,
conditions and the rolling-update arithmetic of the deployment controller
(pkg/controller/deployment/util in kubernetes/kubernetes)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

from tests.k8s_sim.store import now

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
HASH_LABEL = "pod-template-hash"
# Deployment annotations never copied to its ReplicaSets (util.annotationsToSkip).
SKIPPED_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


def safe_encode(data: bytes, length: int) -> str:
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in data[:length])


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    """Whether `owner` is the controller of `obj` (an ownerReference with controller: true)."""
    uid = owner["metadata"]["uid"]
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def revision(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(template)
    labels = (copied.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return copied


def template_hash(template: dict[str, Any], collisions: int = 0) -> str:
    """A stable hash of a pod template, in the API's safe alphabet (as ComputeHash)."""
    text = json.dumps(template_without_hash(template), sort_keys=True) + str(collisions)
    return safe_encode(hashlib.sha256(text.encode()).digest(), 10)


def resolve_int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def surge_and_unavailable(deployment: dict[str, Any]) -> tuple[int, int]:
    """maxSurge and maxUnavailable as numbers (ResolveFenceposts)."""
    spec = deployment["spec"]
    replicas = int(spec.get("replicas", 1))
    if spec["strategy"]["type"] != "RollingUpdate":
        return 0, 0
    rolling = spec["strategy"].get("rollingUpdate") or {}
    surge = resolve_int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = resolve_int_or_percent(
        rolling.get("maxUnavailable", "25%"), replicas, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def set_condition(status: dict[str, Any], kind: str, value: str, reason: str, message: str) -> None:
    """SetDeploymentCondition: unchanged when status and reason are; keeps the transition
    time while the status stays."""
    current = condition(status, kind)
    if current and current["status"] == value and current["reason"] == reason:
        return
    stamp = now()
    new = {
        "type": kind,
        "status": value,
        "lastUpdateTime": stamp,
        "lastTransitionTime": current["lastTransitionTime"]
        if current and current["status"] == value
        else stamp,
        "reason": reason,
        "message": message,
    }
    others = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    status["conditions"] = [*others, new]


def remove_condition(status: dict[str, Any], kind: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != kind]


def pod_ready(pod: dict[str, Any]) -> bool:
    cond = condition(pod.get("status") or {}, "Ready")
    return bool(cond and cond["status"] == "True")
